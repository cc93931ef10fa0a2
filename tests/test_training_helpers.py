"""hf_vit.training: AdamW parameter groups and layer-wise LR decay."""

import pytest

from hf_vit import HfViTForImageClassification
from hf_vit.training import param_groups


def test_no_weight_decay_on_norms_biases_positions_cls_registers(tiny_config):
    model = HfViTForImageClassification(tiny_config(num_register_tokens=2, num_labels=3))
    names = {id(p): n for n, p in model.named_parameters()}
    groups = param_groups(model, weight_decay=0.05, learning_rate=1e-3)
    decayed = {names[id(p)] for g in groups if g["weight_decay"] for p in g["params"]}
    undecayed = {names[id(p)] for g in groups if not g["weight_decay"] for p in g["params"]}
    assert decayed | undecayed == set(names.values()) and not decayed & undecayed
    for name in (
        "vit.embeddings.cls_token",
        "vit.embeddings.register_tokens",
        "vit.embeddings.position_embeddings",
        "vit.layernorm.weight",
        "vit.encoder.layers.0.norm1.weight",
        "classifier.bias",
        "vit.encoder.layers.1.attention.qkv.bias",
    ):
        assert name in undecayed, name
    for name in (
        "vit.encoder.layers.0.attention.qkv.weight",
        "vit.embeddings.patch_embeddings.projection.weight",
        "classifier.weight",
        "vit.encoder.layers.1.mlp.fc1.weight",
    ):
        assert name in decayed, name


def test_layer_decay_scales_learning_rate_with_depth(tiny_config):
    model = HfViTForImageClassification(tiny_config(num_labels=3))  # 2 layers
    names = {id(p): n for n, p in model.named_parameters()}
    lr = {names[id(p)]: g["lr"] for g in param_groups(model, 0.05, 1.0, layer_decay=0.5) for p in g["params"]}
    assert lr["classifier.weight"] == 1.0 and lr["vit.layernorm.weight"] == 1.0
    assert lr["vit.encoder.layers.1.mlp.fc1.weight"] == 0.5
    assert lr["vit.encoder.layers.0.mlp.fc1.weight"] == 0.25
    assert lr["vit.embeddings.cls_token"] == pytest.approx(0.125)


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints: rotation after a kill, damaged checkpoints
# ---------------------------------------------------------------------------------------------------------------
def _checkpoint(folder, step, state=True, payload=b"weights"):
    import json

    from hf_vit.checkpoints import STATE_FILE

    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "optimizer.bin").write_bytes(payload)
    if state:
        (path / STATE_FILE).write_text(json.dumps({"completed_steps": step, "files": {"optimizer.bin": len(payload)}}))
    return path


def test_rotation_removes_everything_a_killed_save_or_removal_left(tmp_path):
    from hf_vit.checkpoints import list_checkpoints, rotate

    folder = tmp_path / "checkpoints"
    _checkpoint(folder, 3, state=False)  # a kill in the middle of an earlier removal took its state file
    for step in (6, 9, 12):
        _checkpoint(folder, step)
    (folder / ".del-checkpoint-2-123").mkdir()  # a kill after the rename, during the delete
    (folder / ".tmp-checkpoint-15").mkdir()  # a kill while saving
    (folder / "notes.txt").write_text("mine")  # not a checkpoint: never touched
    rotate(folder, 2)
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint-12", "checkpoint-9", "notes.txt"]
    assert [p.name for p in list_checkpoints(folder)] == ["checkpoint-9", "checkpoint-12"]
    rotate(folder, 0)  # 0 keeps all
    assert len(list_checkpoints(folder)) == 2


def test_latest_passes_over_damaged_checkpoints_and_names_the_intact_one(tmp_path):
    import pytest

    from hf_vit.checkpoints import STATE_FILE, checkpoint_problem, resolve_checkpoint

    folder = tmp_path / "checkpoints"
    good = _checkpoint(folder, 4)
    truncated = _checkpoint(folder, 8)
    (truncated / "optimizer.bin").write_bytes(b"wei")
    empty_state = _checkpoint(folder, 12)
    (empty_state / STATE_FILE).write_text("")
    bad_weights = _checkpoint(folder, 16)
    (bad_weights / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    assert checkpoint_problem(good) is None
    assert "optimizer.bin has 3 bytes, 7 when saved" in checkpoint_problem(truncated)
    assert "trainer_state.json is unreadable" in checkpoint_problem(empty_state)
    assert "model.safetensors is damaged" in checkpoint_problem(bad_weights)
    assert resolve_checkpoint("latest", folder) == good
    with pytest.raises(
        ValueError,
        match=r"checkpoint .*checkpoint-8 is damaged \(optimizer.bin has 3 bytes.*\); "
        r"resume from checkpoint .*checkpoint-4 \(the newest intact one\) or start over",
    ):
        resolve_checkpoint(str(truncated), folder)


def test_same_run_check_names_the_setting_that_differs():
    import pytest

    from hf_vit.checkpoints import check_same_run

    state = {"run": {"per_device_train_batch_size": 32, "seed": 1}}
    check_same_run(state, {"per_device_train_batch_size": 32, "seed": 1}, "ck")
    check_same_run({}, {"seed": 2}, "ck")  # a checkpoint from before the settings were recorded
    with pytest.raises(ValueError, match="per_device_train_batch_size 32 then, 16 now"):
        check_same_run(state, {"per_device_train_batch_size": 16, "seed": 1}, "ck")


# ---------------------------------------------------------------------------------------------------------------
# The output folder: refusals, the lock, publishing the final files
# ---------------------------------------------------------------------------------------------------------------
def test_output_folder_that_is_holds_or_lies_inside_the_input_is_refused(tmp_path):
    import pytest

    from hf_vit.output_dir import OutputDirNotEmpty, check_output_dir

    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    for output, word in ((data, "is"), (data / "out", "lies inside"), (tmp_path, "contains")):
        with pytest.raises(ValueError, match=f"{word} the input --train_dir"):
            check_output_dir(output, inputs={"--train_dir": data}, overwrite=True, resuming=False)
    check_output_dir(
        tmp_path / "new",
        inputs={"--train_dir": data, "--dataset_name": "user/hub-name"},
        overwrite=False,
        resuming=False,
    )
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / ".hidden").write_text("x")
    with pytest.raises(OutputDirNotEmpty, match=r"\.hidden"):
        check_output_dir(tmp_path / "full", inputs={}, overwrite=False, resuming=False)
    check_output_dir(tmp_path / "full", inputs={}, overwrite=True, resuming=False)
    # a tool that writes files of its own names only minds those (the picture tools)
    (tmp_path / "full" / "cat_head0.png").write_text("x")
    with pytest.raises(OutputDirNotEmpty, match=r"already holds files \(cat_head0\.png\);"):
        check_output_dir(tmp_path / "full", inputs={}, overwrite=False, ours=lambda name: name.endswith(".png"))
    check_output_dir(tmp_path / "full", inputs={}, overwrite=False, ours=lambda name: name.startswith("dog_"))


def test_every_commands_output_folder_refusal_is_one_line_and_exit_2(tmp_path, capsys):
    from hf_vit.cli import run_command
    from hf_vit.output_dir import check_output_dir

    (tmp_path / "notes.txt").write_text("mine")
    code = run_command(
        lambda: check_output_dir(
            tmp_path, inputs={"`train_dir`": tmp_path / "data"}, overwrite=False, overwrite_name="overwrite_output_dir"
        )
    )
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: --output_dir {tmp_path} already holds files (notes.txt); choose another folder, or pass "
        "--overwrite_output_dir to replace the files this command writes (nothing else is touched)"
    ]
    (tmp_path / "data").mkdir()
    inputs = {"`train_dir`": tmp_path / "data"}
    assert run_command(lambda: check_output_dir(tmp_path, inputs=inputs, overwrite=True)) == 2
    assert capsys.readouterr().err.startswith(f"error: --output_dir {tmp_path} contains the input --train_dir ")


@pytest.mark.slow
def test_the_lock_refuses_a_second_run_and_dies_with_its_holder(tmp_path):
    import signal
    import subprocess
    import sys

    import pytest

    from hf_vit.output_dir import LOCK_NAME, OutputDirBusy, RunLock

    out = tmp_path / "out"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from hf_vit.output_dir import RunLock; lock = RunLock({str(out)!r}).acquire(); "
            "print('held', flush=True); import time; time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputDirBusy, match=f"another run \\(pid {holder.pid}\\) is writing to {out}"):
            RunLock(out).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out / LOCK_NAME).exists()  # a killed run leaves the file, but not the lock
    with RunLock(out):
        pass
    assert not (out / LOCK_NAME).exists() and out.is_dir()
    with pytest.raises(RuntimeError):  # a failed run that wrote nothing leaves no folder it created
        with RunLock(tmp_path / "fresh"):
            raise RuntimeError("first image unreadable")
    assert not (tmp_path / "fresh").exists()


def test_final_files_replace_only_run_files_with_the_ordinary_mode(tmp_path):
    import os

    import pytest

    from hf_vit.output_dir import final_files, is_disk_full

    out = tmp_path / "out"
    out.mkdir()
    for name, text in (
        ("notes.txt", "mine"),
        (".hidden", "mine too"),
        ("config.json", "old"),
        ("model-00001-of-00002.safetensors", "old shard"),
        ("metrics.jsonl", "old rows"),
    ):
        (out / name).write_text(text)
    with pytest.raises(OSError):
        with final_files(out) as staging:
            (staging / "config.json").write_text("new")
            raise OSError(28, "No space left on device")
    assert (out / "config.json").read_text() == "old" and (out / "metrics.jsonl").read_text() == "old rows"
    with final_files(out) as staging:
        (staging / "config.json").write_text("new")
        (staging / "model.safetensors").write_text("new weights")
        os.chmod(staging / "model.safetensors", 0o600)
    # an earlier run's shard and metrics would describe another model: gone; the user's files are untouched
    assert sorted(p.name for p in out.iterdir()) == [".hidden", "config.json", "model.safetensors", "notes.txt"]
    assert (out / "notes.txt").read_text() == "mine" and (out / ".hidden").read_text() == "mine too"
    (tmp_path / "plain").write_text("x")
    assert (out / "model.safetensors").stat().st_mode == (tmp_path / "plain").stat().st_mode
    assert is_disk_full(OSError(28, "No space left on device"))
    assert is_disk_full(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1728 vs 1616"))
    from safetensors import SafetensorError  # what a real full tmpfs gave safetensors' writer

    assert is_disk_full(SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"))
    assert not is_disk_full(RuntimeError("size mismatch")) and not is_disk_full(OSError(2, "missing"))


def test_atomic_directory_gives_the_ordinary_folder_mode(tmp_path):
    from hf_vit.fileio import atomic_directory

    with atomic_directory(tmp_path / "out") as staging:
        (staging / "a").write_text("x")
    (tmp_path / "plain").mkdir()
    assert (tmp_path / "out").stat().st_mode == (tmp_path / "plain").stat().st_mode


def test_the_training_flags_are_made_from_the_settings_with_their_help_defaults_and_types(monkeypatch):
    import dataclasses

    from hf_vit.cli import as_flags, given_settings, setting_names
    from hf_vit.commands.train import parse_args
    from hf_vit.fit import FitSettings

    names = setting_names("training") + setting_names("data") + setting_names("license")
    fields = {f.name: f for f in dataclasses.fields(FitSettings)}
    assert set(fields) == set(names)
    # every value parses to the setting's type, and reaches the settings under the setting's name
    values = {
        "num_train_epochs": 4, "max_train_steps": 9, "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 16, "learning_rate": 3e-4, "weight_decay": 0.01, "lr_scheduler_type": "linear",
        "num_warmup_steps": 2, "warmup_ratio": 0.2, "layer_decay": 0.75, "label_smoothing": 0.0,
        "gradient_accumulation_steps": 2, "max_grad_norm": 0.5, "mixed_precision": "bf16", "seed": 3,
        "num_workers": 1, "checkpointing_steps": 5, "checkpoints_total_limit": 0, "resume_from_checkpoint": "latest",
        "report_to": "tensorboard", "validation_split": 0.25, "shuffle_buffer_size": 64, "license": "mit",
        "augmentation": "crop_flip",
    }  # fmt: skip
    argv = [str(a) for name, value in values.items() for a in (f"--{name}", value)]
    switches = ["--augment", "on", "--overwrite_output_dir", "--skip_bad_images", "--no_progress"]
    switches += ["--override_base_license"]
    expected = FitSettings(
        **values,
        augment=True,
        overwrite_output_dir=True,
        skip_bad_images=True,
        progress=False,
        override_base_license=True,
    )
    assert FitSettings(**given_settings(parse_args(argv + switches))) == expected
    switches = {"augment", "overwrite_output_dir", "skip_bad_images", "progress", "override_base_license"}
    assert set(values) | switches == set(names)
    # nothing given: the settings' own defaults, but those fitted to the data, which stay unset
    assert given_settings(parse_args([])) == {
        name: fields[name].default for name in names if not fields[name].metadata.get("fitted")
    }
    # --help shows each setting's help (with its flags' names), and its default where it has one
    import io
    from contextlib import redirect_stdout

    monkeypatch.setenv("COLUMNS", "10000")  # one line per flag
    with redirect_stdout(io.StringIO()) as out, pytest.raises(SystemExit):
        parse_args(["--help"])
    text = out.getvalue()
    for name in names:
        assert as_flags(fields[name].metadata["help"]) in text, name
    assert "(default: 0.05)" in text and "{auto,on,off}" in text and "{no,bf16,fp16}" in text


HEAD_CASES = {  # the pretrained head's classes are b, a, c; the data's ...
    "same classes in another order": ({0: "a", 1: "b", 2: "c"}, "reordered by name"),
    "other classes, as many": ({0: "x", 1: "y", 2: "z"}, "a new classification head"),
}


@pytest.mark.parametrize("case", HEAD_CASES)
def test_fine_tuning_never_gives_a_trained_output_another_class(case, tiny_config, tmp_path, caplog):
    """hf-vit-train --model_name_or_path and hf-vit-finetune both build through model_setup.build_model: an output
    keeps the class it was trained for (rows reordered by name), or the head is new when the classes differ."""
    import logging

    import torch

    from hf_vit.model_setup import build_model

    theirs = {0: "b", 1: "a", 2: "c"}
    pretrained = HfViTForImageClassification(tiny_config(id2label=theirs)).eval()
    pretrained.save_pretrained(tmp_path / "pretrained")
    ours, message = HEAD_CASES[case]
    with caplog.at_level(logging.INFO, logger="hf_vit"):
        model, _ = build_model(ours, model_name_or_path=str(tmp_path / "pretrained"))
    assert message in caplog.text and model.config.id2label == ours
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before, after = pretrained(x).logits, model.eval()(x).logits
        assert torch.equal(pretrained.vit(x).pooler_output, model.vit(x).pooler_output)  # the backbone is kept
    if message == "reordered by name":
        row = {name: index for index, name in theirs.items()}
        for index, name in ours.items():
            torch.testing.assert_close(after[:, index], before[:, row[name]], rtol=0, atol=0)
    else:
        assert not torch.equal(model.classifier.weight, pretrained.classifier.weight)
