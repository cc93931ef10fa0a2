"""DINO pretraining (hf_vit.dino, hf_vit.pretrain, hf-vit-pretrain): the loss and its schedules against an independent
NumPy re-implementation of DINO's reference rules on fixed tensors; kill-safe bitwise resume; the teacher's folder
(it loads as a feature extractor and fine-tunes as a classifier); the refusals of the command; DDP on CPU; and a
short pretrain whose features beat the random initialisation's by k-NN."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from helpers import REPO, error_line, free_port, run_main, run_python
from safetensors.torch import load_file

from hf_vit import data as hdata
from hf_vit import dino, model_setup
from hf_vit.pretrain import PretrainSettings, knn_accuracy, pretrain

PRETRAIN = "scripts/pretrain.py"
# a tiny backbone on the 8x8 digits: 4x4 patches of 2 px, local views of 4 px
TINY_BACKBONE = dict(
    image_size=8, patch_size=2, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
)


# ---------------------------------------------------------------------------------------------------------------
# the reference rules, in NumPy (DINO's main_dino.py: DINOLoss, cosine_scheduler, the EMA; DINOv2's KoLeo)
# ---------------------------------------------------------------------------------------------------------------
def np_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_log_softmax(x, axis=-1):
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def reference_dino_loss(student, teacher, center, ncrops, teacher_temp, student_temp=0.1, momentum=0.9):
    """(loss, new center): every (teacher global view iq, student view v) pair with v != iq."""
    student_views = np.split(student / student_temp, ncrops)
    teacher_views = np.split(np_softmax((teacher - center) / teacher_temp), 2)
    losses = [
        np.mean(np.sum(-q * np_log_softmax(student_views[v]), axis=-1))
        for iq, q in enumerate(teacher_views)
        for v in range(ncrops)
        if v != iq
    ]
    new_center = center * momentum + teacher.mean(axis=0, keepdims=True) * (1 - momentum)
    return float(np.mean(losses)), new_center


def reference_cosine_scheduler(base, final, epochs, niter_per_ep, warmup_epochs=0, start_warmup_value=0.0):
    warmup = np.linspace(start_warmup_value, base, warmup_epochs * niter_per_ep, endpoint=False)
    iters = np.arange(epochs * niter_per_ep - len(warmup))
    schedule = final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / len(iters)))
    return np.concatenate((warmup, schedule))


def test_dino_loss_and_centre_match_the_reference_rules():
    rng = np.random.default_rng(0)
    batch, out_dim, ncrops = 5, 16, 6  # 2 global + 4 local views
    student = rng.normal(size=(ncrops * batch, out_dim)).astype(np.float32)
    teacher = rng.normal(size=(2 * batch, out_dim)).astype(np.float32)
    center = rng.normal(scale=0.3, size=(1, out_dim)).astype(np.float32)
    loss_fn = dino.DINOLoss(out_dim, student_temp=0.1, center_momentum=0.9)
    loss_fn.center.copy_(torch.from_numpy(center))
    for step, temp in enumerate((0.04, 0.055, 0.07)):
        expected, center = reference_dino_loss(student, teacher, center, ncrops, temp)
        got = loss_fn(torch.from_numpy(student), torch.from_numpy(teacher), temp)
        assert got.item() == pytest.approx(expected, rel=1e-5), step
        np.testing.assert_allclose(loss_fn.center.numpy(), center, rtol=1e-5, atol=1e-7)
        teacher = teacher + 0.1  # another batch: the centre moves again


def test_a_view_is_never_compared_with_itself():
    """Student outputs equal to the teacher's targets for the same view but uniform elsewhere: a loss that compared
    a view with itself would be lower than log(out_dim)."""
    out_dim, batch = 8, 3
    teacher = torch.randn(2 * batch, out_dim) * 5
    student = torch.zeros(4 * batch, out_dim)  # uniform predictions for every view ...
    student[: 2 * batch] = teacher * 0.1 / 0.04  # ... but the global views predict their own teacher output exactly
    loss = dino.DINOLoss(out_dim)(student, teacher, 0.04)
    pairs = 2 * 3  # each global teacher view with the other global view and the two local ones
    cross = (
        torch.sum(
            -torch.softmax(teacher[:batch] / 0.04, -1) * torch.log_softmax(student[batch : 2 * batch] / 0.1, -1), -1
        ).mean()
        + torch.sum(
            -torch.softmax(teacher[batch:] / 0.04, -1) * torch.log_softmax(student[:batch] / 0.1, -1), -1
        ).mean()
    )
    expected = (cross + 4 * math.log(out_dim)) / pairs
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_teacher_temperature_warm_up_and_cosine_schedules_match_the_reference():
    warmup_epochs, epochs = 30, 100
    reference = np.concatenate((np.linspace(0.04, 0.07, warmup_epochs), np.ones(epochs - warmup_epochs) * 0.07))
    ours = [dino.teacher_temperature(e, 0.04, 0.07, warmup_epochs) for e in range(epochs)]
    np.testing.assert_allclose(ours, reference, rtol=1e-12)
    steps_per_epoch = 7
    for base, final, warmup in ((5e-4, 1e-6, 3), (0.04, 0.4, 0), (0.996, 1.0, 0)):
        reference = reference_cosine_scheduler(base, final, 20, steps_per_epoch, warmup)
        schedule = dino.cosine_schedule(base, final, 20 * steps_per_epoch, warmup * steps_per_epoch)
        np.testing.assert_allclose([schedule(i) for i in range(20 * steps_per_epoch)], reference, rtol=1e-9, atol=1e-12)


def test_the_teacher_is_an_ema_of_the_student():
    torch.manual_seed(0)
    student = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    teacher = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    expected = {
        name: 0.99 * t.detach().numpy() + 0.01 * s.detach().numpy()
        for (name, t), (_, s) in zip(teacher.named_parameters(), student.named_parameters(), strict=True)
    }
    dino.update_teacher(student, teacher, 0.99)
    for name, param in teacher.named_parameters():
        np.testing.assert_allclose(param.detach().numpy(), expected[name], rtol=1e-6)


def test_koleo_matches_the_reference_and_the_head_has_a_fixed_norm_last_layer():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(9, 5))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -1)
    nearest = similarity.argmax(1)
    expected = -np.mean(np.log(np.linalg.norm(unit - unit[nearest] + 1e-8, axis=1) + 1e-8))
    assert dino.koleo_loss(torch.from_numpy(x)).item() == pytest.approx(expected, rel=1e-6)

    head = dino.DINOHead(8, 12, hidden_dim=16, bottleneck_dim=4)
    rows = head.last_layer.weight.norm(dim=1)
    torch.testing.assert_close(rows, torch.ones(12))
    assert not head.last_layer.parametrizations.weight.original0.requires_grad
    head(torch.randn(3, 8)).sum().backward()
    assert head.last_layer.parametrizations.weight.original1.grad is not None
    dino.cancel_last_layer_gradients(head)
    assert all(p.grad is None for p in head.last_layer.parameters())


def test_views_depend_on_the_generator_seed_alone_and_have_the_recipe_sizes():
    views = dino.MultiCropViews(dino.ViewSettings(global_size=8, local_size=4, num_local=3, flip=False))
    images = torch.randn(5, 3, 8, 8)
    first = views(images, torch.Generator().manual_seed(3))
    torch.randn(10)  # the global RNG moves: the views do not
    again = views(images, torch.Generator().manual_seed(3))
    assert [tuple(v.shape) for v in first] == [(5, 3, 8, 8)] * 2 + [(5, 3, 4, 4)] * 3
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    other = views(images, torch.Generator().manual_seed(4))
    assert not torch.equal(first[0], other[0])


def test_knn_accuracy_is_dinos_weighted_vote():
    train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    test = torch.tensor([[0.2, 1.0], [1.0, 0.05]])
    # k=3 votes from every training point; the nearest's weight exp(sim / 0.07) dominates
    assert knn_accuracy(train, labels, test, torch.tensor([1, 0]), k=3) == 1.0
    assert knn_accuracy(train, labels, test, torch.tensor([0, 0]), k=3) == 0.5


# ---------------------------------------------------------------------------------------------------------------
# runs: bitwise resume, the folder written
# ---------------------------------------------------------------------------------------------------------------
class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def digits():
    return hdata.load_image_data(max_train_samples=48, max_eval_samples=40)


def tiny_backbone():
    from hf_vit import HfViTConfig, HfViTModel

    torch.manual_seed(0)
    return HfViTModel(HfViTConfig(**TINY_BACKBONE, hidden_dropout_prob=0.1))


def tiny_settings(**changes) -> PretrainSettings:
    base = dict(
        num_train_epochs=2,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=64,
        out_dim=32,
        head_hidden_dim=32,
        head_bottleneck_dim=16,
        local_crops_number=2,
        local_crops_size=4,
        view_flip=False,
        mixed_precision="no",
        progress=False,
        seed=5,
    )
    return PretrainSettings(**{**base, **changes})


@pytest.fixture(scope="module")
def resumed(digits, tmp_path_factory):
    """An uninterrupted run (6 steps, 3 per epoch; iBOT and KoLeo on), one killed after step 5 with checkpoints every
    2 steps, and its resumption from checkpoint-4 (one batch into epoch 2) in a fresh process's state."""
    from accelerate.state import AcceleratorState, GradientState

    base = tmp_path_factory.mktemp("pretrain")
    run = tiny_settings(checkpointing_steps=2, ibot=True, koleo_loss_weight=0.1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    results = {}
    with pytest.MonkeyPatch.context() as mp:
        for name in ("full", "killed", "resumed"):
            AcceleratorState._reset_state(reset_partial_state=True)
            GradientState._reset_state()
            if name == "killed":
                updates = []
                original = dino.update_teacher

                def dying(*args, _updates=updates, _original=original):
                    if len(_updates) == 5:
                        raise Killed
                    _updates.append(1)
                    return _original(*args)

                mp.setattr(dino, "update_teacher", dying)
                with pytest.raises(Killed):
                    pretrain(digits, base / "killed", run, model=tiny_backbone())
                mp.undo()
                continue
            torch.manual_seed(123 if name == "resumed" else 0)  # another global RNG state on resume
            settings = dataclasses.replace(run, resume_from_checkpoint="latest") if name == "resumed" else run
            results[name] = pretrain(
                digits, base / ("full" if name == "full" else "killed"), settings, model=tiny_backbone()
            )
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    torch.set_num_threads(threads)
    return base, results


def test_resumed_pretraining_ends_with_the_teacher_and_history_of_an_uninterrupted_run(resumed):
    base, results = resumed
    assert results["resumed"].resumed_from.name == "checkpoint-4"
    full, again = (
        load_file(str(base / "full" / "model.safetensors")),
        load_file(str(base / "killed" / "model.safetensors")),
    )
    assert full.keys() == again.keys()
    for key in full:
        assert torch.equal(full[key], again[key]), key

    def without_time(history):
        return [{k: v for k, v in row.items() if k != "elapsed_s"} for row in history]

    assert without_time(results["full"].history) == without_time(results["resumed"].history)
    assert [row["step"] for row in results["full"].history] == [3, 6]
    assert "eval_knn_accuracy" in results["full"].history[-1]


def test_the_folder_is_the_teacher_backbone_that_loads_as_a_feature_extractor_and_fine_tunes(resumed):
    from transformers import AutoModel, AutoModelForImageClassification

    import hf_vit

    base, results = resumed
    folder = base / "full"
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["HfViTModel"]
    card = (folder / "README.md").read_text()
    assert "pipeline_tag: image-feature-extraction" in card and "DINO" in card and "knn_accuracy" in card
    backbone = AutoModel.from_pretrained(folder)
    assert type(backbone).__name__ == "HfViTModel"
    classifier = AutoModelForImageClassification.from_pretrained(folder, num_labels=10)
    torch.testing.assert_close(classifier.vit.embeddings.cls_token, backbone.embeddings.cls_token)
    # what hf-vit-train --model_name_or_path builds: the backbone's weights under a new head for the data's labels
    fine_tune, _ = model_setup.build_model({i: str(i) for i in range(10)}, model_name_or_path=str(folder))
    torch.testing.assert_close(
        fine_tune.vit.encoder.layers[0].mlp.fc1.weight, backbone.encoder.layers[0].mlp.fc1.weight
    )
    assert fine_tune.config.num_labels == 10
    features = hf_vit.from_pretrained(folder, task="feature-extraction")
    torch.testing.assert_close(features.embeddings.cls_token, backbone.embeddings.cls_token)
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and (folder / "training_curves.png").is_file()
    assert not list((folder / "checkpoints").glob(".tmp-*"))


# ---------------------------------------------------------------------------------------------------------------
# the command: refusals, a folder of unlabelled images
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--teacher_temp", "0"], ["--teacher_temp", "positive"]),
        (["--global_crops_scale", "0.8", "0.3"], ["--global_crops_scale", "low <= high"]),
        (["--momentum_teacher", "1.5"], ["--momentum_teacher"]),
        (["--preset", "vit-tiny-patch16-224", "--model_name_or_path", "x"], ["give one of"]),
        (["--train_dir", "{tmp}/missing"], ["--train_dir", "does not exist"]),
        (["--model_name_or_path", "{tmp}/missing"], ["cannot load a model"]),
    ],
)
def test_the_command_refuses_bad_input_with_one_line(tmp_path, args, fragments):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = run_main([PRETRAIN, *args, "--output_dir", str(tmp_path / "out")])
    error_line(result, *fragments, alone=False)
    assert not (tmp_path / "out").exists()


def test_the_command_pretrains_on_a_folder_of_unlabelled_images(tmp_path):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(images / f"{i}.png")
    out = tmp_path / "out"
    result = run_main(
        [
            PRETRAIN,
            "--train_dir",
            images,
            "--output_dir",
            out,
            "--max_train_steps",
            "1",
            "--no_progress",
            "--per_device_train_batch_size",
            "8",
            "--out_dim",
            "16",
            "--head_hidden_dim",
            "16",
            "--config_overrides",
            "hidden_size=16,num_hidden_layers=1,num_attention_heads=2,intermediate_size=32",
        ]
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "k-NN" not in result.stdout  # no labels: nothing to evaluate
    assert "width 16, depth 1" in result.stdout  # the recipe as trained: with the flags given
    assert (out / "model.safetensors").is_file()
    assert json.loads((out / "all_results.json").read_text())["train_steps"] == 1


# ---------------------------------------------------------------------------------------------------------------
# real processes and a real (short) pretraining
# ---------------------------------------------------------------------------------------------------------------
QUICK = [
    "--max_train_samples",
    "64",
    "--max_eval_samples",
    "32",
    "--per_device_train_batch_size",
    "16",
    "--out_dim",
    "32",
    "--head_hidden_dim",
    "32",
    "--head_bottleneck_dim",
    "16",
    "--local_crops_number",
    "2",
    "--config_overrides",
    "hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64",
    "--no_progress",
]


@pytest.mark.slow
def test_ddp_two_processes_on_cpu_write_one_folder(tmp_path):
    out = tmp_path / "ddp"
    result = run_python(
        [
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            REPO / "scripts" / "accelerate_configs" / "cpu_ddp.yaml",
            "--main_process_port",
            free_port(),
            PRETRAIN,
            *QUICK,
            "--output_dir",
            out,
            "--max_train_steps",
            "2",
        ],
        env_extra={"OMP_NUM_THREADS": "1"},
        timeout=400,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stdout + result.stderr
    assert result.stdout.count("saved the teacher backbone") == 1  # only the main process writes
    assert json.loads((out / "all_results.json").read_text())["num_processes"] == 2
    assert (out / "model.safetensors").is_file()


@pytest.mark.slow
def test_a_short_pretraining_beats_the_random_initialisation_by_knn(tmp_path):
    """The small-image recipe on the digits' training split (labels unused) for 8 epochs, on a tiny backbone: the
    teacher's k-NN accuracy on the held-out digits rises above that of the same backbone at initialisation
    (measured the same way, with the test's own k-NN)."""
    from accelerate.state import AcceleratorState, GradientState

    from hf_vit import HfViTConfig, HfViTModel
    from hf_vit.pretrain import pretrain_recipe

    data = hdata.load_image_data()
    torch.set_num_threads(1)
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    recipe = pretrain_recipe([(8, 8)])
    torch.manual_seed(0)
    backbone = HfViTModel(HfViTConfig(**{**recipe.model, "hidden_size": 32, "num_hidden_layers": 2}))
    at_init = _knn_of(backbone, data)
    settings = dataclasses.replace(recipe.apply(PretrainSettings()), num_train_epochs=8, progress=False)
    result = pretrain(data, tmp_path / "out", settings, model=backbone)
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    teacher = HfViTModel.from_pretrained(tmp_path / "out")
    after = _knn_of(teacher, data)
    assert after == pytest.approx(result.knn_accuracy, abs=1 / 360)  # the run's own figure agrees
    assert after >= at_init + KNN_GAIN, (at_init, result.history)


KNN_GAIN = 0.02


def _knn_of(backbone, data) -> float:
    """scikit-learn's k-NN with DINO's vote (k=20, cosine, weights exp(similarity / 0.07)) on the [CLS] features."""
    from sklearn.neighbors import KNeighborsClassifier

    processor = hdata.image_processor_for(8)
    train, test = hdata.build_datasets(data, processor, augment=False)
    with torch.no_grad():
        backbone.eval()
        f_train = backbone(pixel_values=train.normalize(train.pixel_values)).pooler_output.numpy()
        f_test = backbone(pixel_values=test.pixel_values).pooler_output.numpy()
        backbone.train()
    knn = KNeighborsClassifier(n_neighbors=20, metric="cosine", weights=lambda d: np.exp((1 - d) / 0.07))
    return float((knn.fit(f_train, train.labels.numpy()).predict(f_test) == test.labels.numpy()).mean())
