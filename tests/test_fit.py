"""hf_vit.fit.fit in-process: mid-epoch resume, batch skipping, gradient accumulation, end-of-epoch
evaluation, and settings refused before anything is written.

A tiny model on 100 training / 40 test digits: with batch 16 an epoch has 7 batches, the last one of 4 samples, so
that step counts, accumulation and the evaluation batches (16 + 16 + 8) all meet a partial batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from hf_vit import data as hdata
from hf_vit import model_setup
from hf_vit.fit import FitSettings, SettingError, fit

TRAIN_SAMPLES, EVAL_SAMPLES, BATCH = 100, 40, 16
BATCHES_PER_EPOCH = 7  # ceil(100 / 16), written out: the expectation does not come from the code under test
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


class Killed(Exception):
    """Stands for a kill in the middle of a run."""

    @classmethod
    def raise_(cls, *args, **kwargs):
        raise cls("killed")


@pytest.fixture(scope="module")
def digits():
    return hdata.load_image_data(max_train_samples=TRAIN_SAMPLES, max_eval_samples=EVAL_SAMPLES)


@contextlib.contextmanager
def quiet_cpu():
    """One thread (tiny matmuls on a shared 2-core machine) and fresh Accelerate singletons before and after, so that
    nothing of these runs leaks into other tests."""
    from accelerate.state import AcceleratorState, GradientState

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    try:
        yield
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _cpu():
    with quiet_cpu():
        yield


def make_model(digits, **overrides):
    """The same initial weights every time."""
    torch.manual_seed(0)
    return model_setup.build_model(digits.id2label, digits=True, config_overrides={**TINY, **overrides})


def settings(**changes) -> FitSettings:
    base = {
        "num_train_epochs": 2,
        "per_device_train_batch_size": BATCH,
        "per_device_eval_batch_size": BATCH,
        "mixed_precision": "no",
        "progress": False,
        "seed": 7,
    }
    return FitSettings(**{**base, **changes})


class Recorder:
    """What a run trains on: the `pixel_values` of every training forward, in order, and the dataset rows each came
    from (every batch the digits datasets produce is noted with its indices). `kill_at`: raise `Killed` at the first
    forward, training or evaluation, after that many training forwards."""

    def __init__(self, model, monkeypatch, kill_at: int | None = None):
        self.trained: list[torch.Tensor] = []
        self.fetched: list[tuple[list[int], torch.Tensor]] = []
        original = hdata.TensorImageDataset.__getitems__
        fetched = self.fetched

        def getitems(dataset, indices):
            out = original(dataset, indices)
            fetched.append(([int(i) for i in indices], out[0]["pixel_values"].detach().clone()))
            return out

        monkeypatch.setattr(hdata.TensorImageDataset, "__getitems__", getitems)
        forward = model.forward

        def recording_forward(*args, **kwargs):
            if kill_at is not None and len(self.trained) >= kill_at:
                raise Killed(f"killed after {kill_at} training batches")
            if model.training:
                self.trained.append(kwargs["pixel_values"].detach().clone())
            return forward(*args, **kwargs)

        model.forward = recording_forward

    def trained_indices(self) -> list[list[int]]:
        """The dataset indices of each trained batch: the fetched batch with exactly its pixels, taken in order."""
        result, start = [], 0
        for pixels in self.trained:
            for position in range(start, len(self.fetched)):
                indices, candidate = self.fetched[position]
                if candidate.shape == pixels.shape and torch.equal(candidate, pixels):
                    result.append(indices)
                    start = position + 1
                    break
            else:
                raise AssertionError("a trained batch matches no batch the dataset produced")
        return result


def without_time(history):
    return [{k: v for k, v in row.items() if k != "elapsed_s"} for row in history]


def weights(folder):
    return load_file(str(folder / "model.safetensors"))


# ---------------------------------------------------------------------------------------------------------------
# resume mid-epoch and batch skipping: one uninterrupted run, one killed run, its resumption
# ---------------------------------------------------------------------------------------------------------------
# (settings, kill after this many training batches, checkpoint resumed, batches trained before that checkpoint),
# counted by hand with 7 batches per epoch. The run is killed at the first forward, training or evaluation, after
# that many training batches; FINAL: while it writes its final folder, after everything else.
FINAL = "final folder"
RESUME_CASES = {
    # 7 steps per epoch, a checkpoint every 5: killed in epoch 1's evaluation -> checkpoint-5, 5 batches into epoch 1
    "mid-epoch-1": ({"checkpointing_steps": 5}, 7, "checkpoint-5", 5),
    # accumulation 2: 4 steps per epoch (the 4th of a single batch), a checkpoint every 3 -> checkpoint-6 is
    # 7 + 2 * 2 = 11 batches in, 4 batches into epoch 2, with epoch 1's row in its history
    "mid-epoch-2-accumulation": ({"gradient_accumulation_steps": 2, "checkpointing_steps": 3}, 13, "checkpoint-6", 11),
    # a checkpoint at the last step of epoch 1 is saved after that epoch's evaluation and holds its row: the resumed
    # run goes on with epoch 2
    "end-of-epoch-1": ({"checkpointing_steps": 7}, 9, "checkpoint-7", 7),
    # killed while writing the final folder, after the checkpoint of the last step: nothing is left to train
    "after-the-last-step": ({"checkpointing_steps": 7}, FINAL, "checkpoint-14", 14),
    # the same when max_train_steps ends the run in the middle of epoch 2 (step 10)
    "after-the-last-step-mid-epoch": ({"checkpointing_steps": 5, "max_train_steps": 10}, FINAL, "checkpoint-10", 10),
}
# dropout, stochastic depth and augmentation: the global RNG and the per-sample augmentation RNG must resume too
NOISY = {"hidden_dropout_prob": 0.1, "drop_path_rate": 0.1}


@pytest.fixture(scope="module", params=list(RESUME_CASES))
def resumed(request, digits, tmp_path_factory):
    changes, kill_at, _, _ = RESUME_CASES[request.param]
    base = tmp_path_factory.mktemp(request.param)
    run = settings(augment=True, checkpoints_total_limit=2, **changes)
    with quiet_cpu(), pytest.MonkeyPatch.context() as mp:
        model, processor = make_model(digits, **NOISY)
        full = Recorder(model, mp)
        uninterrupted = fit(model, processor, digits, base / "full", run)

        model, processor = make_model(digits, **NOISY)
        killed = Recorder(model, mp, kill_at=None if kill_at == FINAL else kill_at)
        with pytest.MonkeyPatch.context() as final, pytest.raises(Killed):
            if kill_at == FINAL:
                final.setattr("hf_vit.fit.write_trained_model", Killed.raise_)
            fit(model, processor, digits, base / "killed", run)

        model, processor = make_model(digits, **NOISY)  # as a new process would: fresh weights, then the checkpoint
        torch.manual_seed(12345)  # and another global RNG state than the first run had
        again = Recorder(model, mp)
        resumed = fit(
            model, processor, digits, base / "killed", dataclasses.replace(run, resume_from_checkpoint="latest")
        )
    return {
        "case": RESUME_CASES[request.param],
        "digits": digits,
        "base": base,
        "uninterrupted": uninterrupted,
        "full": full,
        "killed": killed,
        "again": again,
        "resumed": resumed,
    }


def test_resumed_run_ends_with_the_weights_and_history_of_an_uninterrupted_run(resumed):
    changes, _, checkpoint, _ = resumed["case"]
    uninterrupted, result = resumed["uninterrupted"], resumed["resumed"]
    assert result.resumed_from is not None and result.resumed_from.name == checkpoint
    accumulation = changes.get("gradient_accumulation_steps", 1)
    total_steps = changes.get("max_train_steps") or 2 * math.ceil(BATCHES_PER_EPOCH / accumulation)
    assert uninterrupted.completed_steps == result.completed_steps == total_steps

    expected, got = weights(resumed["base"] / "full"), weights(resumed["base"] / "killed")
    assert expected.keys() == got.keys()
    different = [name for name in expected if not torch.equal(expected[name], got[name])]
    assert not different, f"not bitwise equal after resuming: {different}"
    # and training moved the weights at all (equal because both did nothing would prove nothing)
    initial = make_model(resumed["digits"], **NOISY)[0].state_dict()
    assert any(not torch.equal(initial[name], expected[name]) for name in expected)

    assert without_time(result.history) == without_time(uninterrupted.history)
    assert [row["epoch"] for row in uninterrupted.history] == [1, 2]
    assert result.eval_accuracy == uninterrupted.eval_accuracy and result.eval_loss == uninterrupted.eval_loss
    # what the final folder records agrees too
    saved = [json.loads(line) for line in (resumed["base"] / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert without_time(saved) == without_time(uninterrupted.history)


def test_resumed_run_trains_exactly_the_batches_the_uninterrupted_run_trained_after_the_checkpoint(resumed):
    changes, kill_at, _, before = resumed["case"]
    total_batches = 10 if changes.get("max_train_steps") else 2 * BATCHES_PER_EPOCH
    full, killed, again = resumed["full"], resumed["killed"], resumed["again"]
    assert len(full.trained) == total_batches
    # the uninterrupted run: each epoch trains every sample exactly once, in a new order
    order = full.trained_indices()
    epochs = [
        [i for batch in order[e * BATCHES_PER_EPOCH : (e + 1) * BATCHES_PER_EPOCH] for i in batch] for e in range(2)
    ]
    assert sorted(epochs[0]) == list(range(TRAIN_SAMPLES))
    assert len(set(epochs[1])) == len(epochs[1]) and epochs[1] != epochs[0][: len(epochs[1])]
    if total_batches == 2 * BATCHES_PER_EPOCH:
        assert sorted(epochs[1]) == list(range(TRAIN_SAMPLES))
    assert [len(batch) for batch in order[:BATCHES_PER_EPOCH]] == [16] * 6 + [4]
    # the killed run trained the same batches as the uninterrupted one until it was killed
    assert len(killed.trained) == (total_batches if kill_at == FINAL else kill_at)
    assert all(torch.equal(a, b) for a, b in zip(killed.trained, full.trained, strict=False))
    # the resumed run: the batches after the checkpoint, no more and no fewer, bitwise (augmentation included)
    assert len(again.trained) == total_batches - before
    assert again.trained_indices() == order[before:]
    assert all(torch.equal(a, b) for a, b in zip(again.trained, full.trained[before:], strict=True))


# ---------------------------------------------------------------------------------------------------------------
# gradient accumulation
# ---------------------------------------------------------------------------------------------------------------
def test_gradient_accumulation_steps_once_per_two_batches_like_one_batch_of_twice_the_size(
    digits, tmp_path, monkeypatch
):
    out = tmp_path / "accumulate"
    model, processor = make_model(digits)  # dropout 0 by default
    start = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    reference = make_model(digits)[0]
    recorder = Recorder(model, monkeypatch)
    result = fit(
        model,
        processor,
        digits,
        out,
        settings(
            gradient_accumulation_steps=2,
            learning_rate=1e-3,
            weight_decay=0.0,
            lr_scheduler_type="constant",
            num_warmup_steps=0,
            label_smoothing=0.0,
            max_grad_norm=0,
            augment=False,
            checkpointing_steps=1,
            checkpoints_total_limit=0,
        ),
    )

    # 7 batches per epoch -> 4 optimizer steps (the last of a single batch), 2 epochs -> 8
    assert result.completed_steps == 8 == 2 * hdata.steps_per_epoch(TRAIN_SAMPLES, BATCH, 1, 2)
    assert [row["step"] for row in result.history] == [4, 8]
    assert len(recorder.trained) == 14
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == sorted(f"checkpoint-{i}" for i in range(1, 9))

    # the first two optimizer steps by hand: plain AdamW on the mean loss over batches 1+2, then 3+4
    labels = torch.tensor(digits.train["label"])
    batches = recorder.trained_indices()
    assert [len(b) for b in batches[:4]] == [BATCH] * 4
    assert all(torch.equal(a, b) for a, b in zip(start.values(), reference.state_dict().values(), strict=True))
    reference.train()
    optimizer = torch.optim.AdamW(reference.parameters(), lr=1e-3, weight_decay=0.0)
    for step in (1, 2):
        pixels = torch.cat(recorder.trained[2 * step - 2 : 2 * step])
        targets = labels[batches[2 * step - 2] + batches[2 * step - 1]]
        optimizer.zero_grad()
        F.cross_entropy(reference(pixel_values=pixels).logits, targets).backward()
        optimizer.step()
        got = load_file(str(out / "checkpoints" / f"checkpoint-{step}" / "model.safetensors"))
        expected = reference.state_dict()
        worst = max((got[name] - expected[name]).abs().max().item() for name in got)
        moved = max((got[name] - start[name]).abs().max().item() for name in got)
        # fp32 sums in another order differ by ~1e-7 here; the step itself moves weights by ~1e-3 (the lr)
        assert worst <= 1e-5, f"step {step}: max |fit - hand-computed AdamW| = {worst}"
        assert moved > 50 * 1e-5


# ---------------------------------------------------------------------------------------------------------------
# end-of-epoch evaluation
# ---------------------------------------------------------------------------------------------------------------
def independent_evaluation(model, folder, digits) -> tuple[float, float]:
    """Accuracy and mean loss on the test subset, preprocessed by the saved image processor itself."""
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(folder)
    images = [image.convert("RGB") for image in digits.eval["image"]]
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    labels = torch.tensor(digits.eval["label"])
    model.eval()
    with torch.no_grad():
        logits = model(pixel_values=pixels).logits
    accuracy = (logits.argmax(-1) == labels).sum().item() / len(labels)
    return accuracy, F.cross_entropy(logits, labels).item()


def test_each_epoch_ends_with_an_evaluation_of_the_whole_test_set(digits, tmp_path):
    from transformers import AutoModelForImageClassification

    import hf_vit  # noqa: F401  (registers the Auto classes)

    out = tmp_path / "eval"
    model, processor = make_model(digits)
    result = fit(
        model,
        processor,
        digits,
        out,
        settings(learning_rate=3e-3, checkpointing_steps="epoch", checkpoints_total_limit=0),
    )
    history = result.history
    assert [row["epoch"] for row in history] == [1, 2]
    assert [row["step"] for row in history] == [BATCHES_PER_EPOCH, 2 * BATCHES_PER_EPOCH]
    assert all(row["eval_samples"] == EVAL_SAMPLES for row in history)  # 16 + 16 + 8, each counted once

    # the final row is the saved model's evaluation
    final = AutoModelForImageClassification.from_pretrained(out)
    accuracy, loss = independent_evaluation(final, out, digits)
    assert history[-1]["eval_accuracy"] == accuracy
    assert history[-1]["eval_loss"] == pytest.approx(loss, abs=1e-5)
    assert result.eval_accuracy == history[-1]["eval_accuracy"] and result.eval_loss == history[-1]["eval_loss"]
    # the checkpoint of an epoch's end is saved after its evaluation: it holds that epoch's row
    state = json.loads((out / "checkpoints" / f"checkpoint-{BATCHES_PER_EPOCH}" / "trainer_state.json").read_text())
    assert state["history"] == history[:1] and state["position"] == [1, 0]
    # the first row is that of the weights at the end of epoch 1 (the "epoch" checkpoint, saved after evaluating)
    first = AutoModelForImageClassification.from_pretrained(out)
    first.load_state_dict(load_file(str(out / "checkpoints" / f"checkpoint-{BATCHES_PER_EPOCH}" / "model.safetensors")))
    accuracy, loss = independent_evaluation(first, out, digits)
    assert history[0]["eval_accuracy"] == accuracy
    assert history[0]["eval_loss"] == pytest.approx(loss, abs=1e-5)
    assert history[0]["eval_loss"] != history[1]["eval_loss"]  # two different models were evaluated
    assert history[-1]["eval_accuracy"] > 0.2  # it learned something (chance: 0.1)

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows == history
    results = json.loads((out / "all_results.json").read_text())
    assert results["test_accuracy"] == history[-1]["eval_accuracy"] and results["train_steps"] == 14


# ---------------------------------------------------------------------------------------------------------------
# settings refused up front
# ---------------------------------------------------------------------------------------------------------------
BAD_SETTINGS = [
    ("num_train_epochs", 0),
    ("max_train_steps", 0),
    ("per_device_train_batch_size", 0),
    ("per_device_eval_batch_size", -1),
    ("gradient_accumulation_steps", 0),
    ("learning_rate", 0.0),
    ("learning_rate", float("nan")),
    ("weight_decay", -0.1),
    ("warmup_ratio", 1.5),
    ("label_smoothing", 1.0),
    ("max_grad_norm", float("inf")),
    ("layer_decay", 0.0),
    ("checkpointing_steps", 0),
    ("checkpointing_steps", "sometimes"),
    ("mixed_precision", "fp8"),
    ("checkpoints_total_limit", -1),
    ("lr_scheduler_type", "no-such-schedule"),  # found out only when the optimizer is built, after the lock
]


@pytest.mark.parametrize(("name", "value"), BAD_SETTINGS, ids=[f"{n}={v}" for n, v in BAD_SETTINGS])
def test_bad_setting_raises_setting_error_naming_it_and_writes_nothing(digits, tmp_path, name, value):
    out = tmp_path / "never"
    model, processor = make_model(digits)
    with pytest.raises(SettingError) as raised:
        fit(model, processor, digits, out, settings(**{name: value}))
    assert raised.value.name == name
    assert str(raised.value).startswith(name)
    assert not out.exists()


def test_late_setting_error_leaves_an_existing_folder_as_it_was(digits, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    model, processor = make_model(digits)
    with pytest.raises(SettingError, match="lr_scheduler_type"):
        fit(model, processor, digits, out, settings(lr_scheduler_type="no-such-schedule", overwrite_output_dir=True))
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "keep me"


# ---------------------------------------------------------------------------------------------------------------
# the library never prints (docs/architecture.md, Conventions; fit's docstring: "nothing is printed but the progress
# bar")
# ---------------------------------------------------------------------------------------------------------------
def test_without_progress_bar_fit_prints_nothing(digits, tmp_path, capsys):
    model, processor = make_model(digits)
    fit(model, processor, digits, tmp_path / "silent", settings(num_train_epochs=1, checkpointing_steps=4))
    assert (tmp_path / "silent" / "checkpoints" / "checkpoint-4").is_dir()
    assert capsys.readouterr().out == ""


def test_resuming_keeps_the_runs_own_checkpoints_and_never_adopts_another_folder(digits, tmp_path, monkeypatch):
    """Resuming from an older checkpoint of the folder: the newer ones (a future this run replaces) go when it saves,
    not the checkpoints it saves itself. Resuming from a checkpoint elsewhere: the folder is not the run's own."""
    from hf_vit.output_dir import OutputDirNotEmpty

    run = settings(num_train_epochs=1, checkpointing_steps=2, checkpoints_total_limit=0, max_train_steps=4)
    fit(*make_model(digits), digits, tmp_path / "a", run)
    checkpoint_dir = tmp_path / "a" / "checkpoints"
    assert sorted(p.name for p in checkpoint_dir.iterdir()) == ["checkpoint-2", "checkpoint-4"]

    other = tmp_path / "b"
    fit(*make_model(digits), digits, other, run)
    with pytest.raises(OutputDirNotEmpty):  # a checkpoint of another folder: "a" holds another run's files
        fit(
            *make_model(digits),
            digits,
            tmp_path / "a",
            dataclasses.replace(run, resume_from_checkpoint=str(other / "checkpoints" / "checkpoint-2")),
        )
    assert sorted(p.name for p in checkpoint_dir.iterdir()) == ["checkpoint-2", "checkpoint-4"]

    # from checkpoint-2, a checkpoint every step, a limit of 1, killed after saving checkpoint-3: checkpoint-3 is kept
    # (rotation used to keep the newer checkpoint-4 of the earlier attempt and remove the one just saved)
    model, processor = make_model(digits)
    Recorder(model, monkeypatch, kill_at=1)
    again = dataclasses.replace(
        run,
        checkpointing_steps=1,
        checkpoints_total_limit=1,
        resume_from_checkpoint=str(checkpoint_dir / "checkpoint-2"),
    )
    with pytest.raises(Killed):
        fit(model, processor, digits, tmp_path / "a", again)
    assert sorted(p.name for p in checkpoint_dir.iterdir()) == ["checkpoint-3"]


# ---------------------------------------------------------------------------------------------------------------
# the run's three small objects: the plan, the resume point, the batches
# ---------------------------------------------------------------------------------------------------------------
def test_the_plan_counts_steps_epochs_and_warm_up_and_knows_when_an_epoch_ends():
    from hf_vit.fit import _Plan

    # 100 examples, batch 16 on 2 processes: 4 batches per process, 2 per step with accumulation 2 -> 2 steps/epoch
    plan = _Plan.make(settings(num_train_epochs=3, gradient_accumulation_steps=2, checkpointing_steps=4), "d", 100, 2)
    assert (plan.steps_per_epoch, plan.total_steps, plan.num_epochs, plan.warmup_steps) == (2, 6, 3, 0)
    assert [plan.ends_epoch(step) for step in range(1, 7)] == [False, True, False, True, False, True]
    assert [plan.checkpoint_due(step) for step in range(1, 7)] == [False, False, False, True, False, False]
    assert plan.position(3) == (1, 2)  # one epoch and one step of 2 batches
    assert plan.run_settings()["train_examples"] == 100 and plan.run_settings()["max_train_steps"] == 6
    # max_train_steps ends the run mid-epoch; warm-up is warmup_ratio of the steps unless given
    plan = _Plan.make(settings(max_train_steps=11, warmup_ratio=0.2), "d", 100, 1)
    assert (plan.steps_per_epoch, plan.total_steps, plan.num_epochs, plan.warmup_steps) == (7, 11, 2, 2)
    assert plan.ends_epoch(7) and plan.ends_epoch(11) and not plan.ends_epoch(10)
    epochs = _Plan.make(settings(checkpointing_steps="epoch", num_warmup_steps=3), "d", 100, 1)
    assert epochs.warmup_steps == 3 and epochs.checkpoint_due(7, epoch_ended=True) and not epochs.checkpoint_due(7)
    # a stream has no length: max_train_steps says how long, and only the run's last step is known to end a pass
    stream = _Plan.make(settings(max_train_steps=5), "d", None, 1)
    assert (stream.steps_per_epoch, stream.total_steps) == (None, 5)
    assert not stream.ends_epoch(4) and stream.ends_epoch(5) and stream.position(3) == (0, 3)
    with pytest.raises(SettingError, match="max_train_steps"):
        _Plan.make(settings(), "d", None, 1)


def fake_checkpoint(folder, step, **state):
    from hf_vit.checkpoints import STATE_FILE

    (folder / f"checkpoint-{step}").mkdir(parents=True)
    (folder / f"checkpoint-{step}" / STATE_FILE).write_text(json.dumps({"completed_steps": step, **state}))
    return folder / f"checkpoint-{step}"


def test_the_resume_point_finds_the_checkpoint_and_the_stale_ones(digits, tmp_path):
    from hf_vit.fit import _Plan, _ResumePoint

    config = make_model(digits)[0].config
    fresh = _ResumePoint.find(settings(resume_from_checkpoint="latest"), tmp_path / "none", config)
    assert (fresh.path, fresh.step, fresh.stale, fresh.history) == (None, 0, [], [])

    folder = tmp_path / "checkpoints"
    rows = [{"epoch": 1, "step": 7}]
    two = fake_checkpoint(folder, 2, position=[0, 2], epoch_sums={"loss": 1.5, "count": 2})
    seven = fake_checkpoint(folder, 7, position=[1, 0], history=rows)
    nine = fake_checkpoint(folder, 9)  # saved without its position: the plan's count
    latest = _ResumePoint.find(settings(resume_from_checkpoint="latest"), folder, config)
    assert (latest.path, latest.stale) == (nine, [])
    assert latest.position(_Plan.make(settings(), "d", 100, 1)) == (1, 2)
    older = _ResumePoint.find(settings(resume_from_checkpoint=str(two)), folder, config)
    assert older.stale == [seven, nine]  # replaced when the run saves its first checkpoint
    assert older.position(None) == (0, 2) and older.epoch_loss == {"loss": 1.5, "count": 2}
    at_epoch_end = _ResumePoint.find(settings(resume_from_checkpoint=str(seven)), folder, config)
    assert at_epoch_end.position(None) == (1, 0) and at_epoch_end.history == rows
    # an earlier run's checkpoints: refused, or (overwriting) all of them stale
    with pytest.raises(ValueError, match="checkpoints of an earlier run"):
        _ResumePoint.find(settings(), folder, config)
    assert _ResumePoint.find(settings(overwrite_output_dir=True), folder, config).stale == [two, seven, nine]


def batch_pixels(batches):
    return [batch["pixel_values"] for batch in batches]


def test_the_batches_of_an_epoch_depend_on_the_seed_and_the_epoch_and_skip_on_resume(digits):
    from accelerate import Accelerator

    from hf_vit.fit import _Batches

    processor = make_model(digits)[1]
    run = settings(augment=True)

    def batches():
        accelerator = Accelerator(cpu=True)
        made = _Batches(digits, processor, run, accelerator)
        made.prepare(accelerator)
        return made

    first, second = batches(), batches()
    epoch_1 = batch_pixels(first.epoch(1))
    assert first.taken == BATCHES_PER_EPOCH and (first.train_examples, first.eval_examples) == (100, 40)
    assert all(torch.equal(a, b) for a, b in zip(epoch_1, batch_pixels(second.epoch(1)), strict=True))
    assert not torch.equal(batch_pixels(first.epoch(0))[0], epoch_1[0])  # another epoch, another order
    resumed = batch_pixels(second.epoch(1, skip=3))
    assert second.taken == BATCHES_PER_EPOCH
    assert all(torch.equal(a, b) for a, b in zip(resumed, epoch_1[3:], strict=True))


@pytest.fixture(scope="module")
def stream(digits):
    """The digits subset as a stream (an IterableDataset with ClassLabel labels)."""
    return dataclasses.replace(
        digits,
        train=digits.train.to_iterable_dataset(),
        eval=digits.eval.to_iterable_dataset(),
        name="digits stream",
        streaming=True,
        is_digits=False,
    )


def test_a_stream_is_shuffled_into_a_copy_and_skipped_by_reading_past(stream, digits):
    from accelerate import Accelerator

    from hf_vit.fit import _Batches

    processor = make_model(digits)[1]
    train, evaluation = stream.train, stream.eval
    accelerator = Accelerator(cpu=True)
    made = _Batches(stream, processor, settings(shuffle_buffer_size=50), accelerator)
    assert stream.train is train and stream.eval is evaluation
    assert (made.train_examples, made.eval_examples) == (None, None)
    made.prepare(accelerator)
    everything = batch_pixels(made.epoch(0))
    assert made.taken == BATCHES_PER_EPOCH and sum(len(p) for p in everything) == TRAIN_SAMPLES
    skipped = batch_pixels(made.epoch(0, skip=5))
    assert all(torch.equal(a, b) for a, b in zip(skipped, everything[5:], strict=True))


@pytest.mark.parametrize(
    "checkpointing, kill_at, checkpoint",
    [("epoch", 9, "checkpoint-4"), (3, 9, "checkpoint-3")],
    ids=["end-of-pass", "mid-pass"],
)
def test_a_stream_with_accumulation_resumes_bitwise(stream, tmp_path, checkpointing, kill_at, checkpoint):
    """A pass over a stream (7 batches here) ends with its partial accumulation group as an optimizer step, as with
    map-style data: 4 steps per pass at accumulation 2, so no gradient is pending at a pass's checkpoint, and a run
    resumed from it (at the pass's end, or 6 batches into it) ends with the uninterrupted run's weights and history."""
    run = settings(
        max_train_steps=6, gradient_accumulation_steps=2, checkpointing_steps=checkpointing, shuffle_buffer_size=20
    )
    uninterrupted = fit(*make_model(stream), stream, tmp_path / "full", run)
    assert [(row["epoch"], row["step"]) for row in uninterrupted.history] == [(1, 4), (2, 6)]
    with pytest.MonkeyPatch.context() as mp, pytest.raises(Killed):
        model, processor = make_model(stream)
        Recorder(model, mp, kill_at=kill_at)
        fit(model, processor, stream, tmp_path / "killed", run)
    model, processor = make_model(stream)
    torch.manual_seed(12345)
    resumed = fit(
        model, processor, stream, tmp_path / "killed", dataclasses.replace(run, resume_from_checkpoint="latest")
    )
    assert resumed.resumed_from.name == checkpoint
    assert without_time(resumed.history) == without_time(uninterrupted.history)
    expected, got = weights(tmp_path / "full"), weights(tmp_path / "killed")
    assert all(torch.equal(expected[name], got[name]) for name in expected)


def test_fit_leaves_the_data_as_it_was_so_a_second_fit_trains_the_same(stream, tmp_path):
    run = settings(max_train_steps=3, per_device_train_batch_size=8, shuffle_buffer_size=20)
    train, evaluation = stream.train, stream.eval
    first = fit(*make_model(stream), stream, tmp_path / "first", run)
    assert stream.train is train and stream.eval is evaluation  # not shuffled or split in place
    second = fit(*make_model(stream), stream, tmp_path / "second", run)
    assert first.history[-1]["train_loss"] == second.history[-1]["train_loss"]  # the same batches, in the same order
    expected, got = weights(tmp_path / "first"), weights(tmp_path / "second")
    assert all(torch.equal(expected[name], got[name]) for name in expected)
