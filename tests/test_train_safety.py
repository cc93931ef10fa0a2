"""scripts/train.py and scripts/finetune_trainer.py never lose the user's files and never report a wrong result as
success: run as users run them, in subprocesses; what must survive is compared byte for byte.

Faults (a full disk, a kill at a given point) are injected by running the script through `runpy` after patching the
one function where the fault should strike, so that each case is deterministic rather than left to timing.
"""

import json
import os
import pickle
import signal

import pytest
from helpers import REPO, TINY, error_line, run_main, run_python
from test_train import ENV, QUICK, TRAIN, train

FINETUNE = str(REPO / "scripts" / "finetune_trainer.py")


def snapshot(folder):
    """Every file under `folder` with its bytes (hidden ones included)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def train_here(*args):
    """A run refused before or at its start, in this process (helpers.run_main): no interpreter start-up."""
    return run_main([TRAIN, *QUICK, *map(str, args)])


def run_with_fault(script, args, patch, timeout=300):
    """Run `script args` in a fresh process after executing `patch` (Python source) there."""
    code = (
        f"import runpy, sys\n{patch}\nsys.argv = {[script, *map(str, args)]!r}\n"
        f"runpy.run_path({script!r}, run_name='__main__')"
    )
    return run_python(code, env_extra=ENV, timeout=timeout)


def write_images(folder, classes=("a", "b"), per_class=4, broken=()):
    from PIL import Image

    for c, name in enumerate(classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (8, 8), (200 * c, 30 * i, 90)).save(folder / name / f"{i}.png")
    for relative in broken:
        (folder / relative).write_bytes(b"\x89PNG\r\n\x1a\n not an image")


@pytest.fixture
def trained(trained_run):
    """A finished run with checkpoints at steps 2 and 4: the user's earlier, good work (conftest's session run;
    the tests check that nothing changes it)."""
    return trained_run


@pytest.mark.slow
def test_a_folder_with_files_is_never_emptied(trained, tmp_path):
    before = snapshot(trained)
    refused = train_here("--output_dir", trained, "--max_train_steps", "2")
    error_line(refused, "already holds files", "--overwrite_output_dir", "nothing else is touched", alone=False)
    assert snapshot(trained) == before

    # with the flag, only the run's own files are replaced: the user's files, hidden ones too, stay
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    (out / ".env").write_text("SECRET=1")
    done = train("--output_dir", out, "--max_train_steps", "2", "--overwrite_output_dir")
    assert done.returncode == 0, done.stderr
    assert (out / "notes.txt").read_text() == "my notes" and (out / ".env").read_text() == "SECRET=1"
    assert (out / "model.safetensors").is_file() and (out / "metrics.jsonl").is_file()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".hf_vit")]  # no lock or staging folder left
    assert oct((out / "model.safetensors").stat().st_mode & 0o777) == oct(0o666 & ~current_umask())
    help_text = run_main([TRAIN, "--help"]).stdout
    assert "nothing else in the folder is touched" in " ".join(help_text.split())


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_output_folder_in_the_input_data_is_refused(tmp_path):
    """(is / contains / lies inside: tests/test_training_helpers.py)"""
    data = tmp_path / "data" / "images"
    write_images(data)
    before = snapshot(tmp_path)
    result = train_here("--train_dir", data, "--output_dir", tmp_path / "data", "--overwrite_output_dir")
    error_line(result, "contains the input --train_dir", alone=False)
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_finetune_trainer_keeps_the_users_files(tmp_path):
    data = tmp_path / "images"
    write_images(data)
    before = snapshot(data)
    into_data = run_main([FINETUNE, "--train_dir", str(data), "--output_dir", str(data), "--overwrite_output_dir"])
    error_line(into_data, "--output_dir", "is the input --train_dir", alone=False)
    assert snapshot(data) == before

    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    common = [
        FINETUNE,
        "--preset",
        "vit-tiny-patch16-224",
        "--config_overrides",
        ",".join(f"{k}={v}" for k, v in TINY.items()),
        "--output_dir",
        str(out),
        "--max_steps",
        "1",
        "--max_train_samples",
        "32",
        "--max_eval_samples",
        "16",
        "--disable_tqdm",
        "true",
    ]
    refused = run_main(common)
    error_line(refused, "already holds files", "--overwrite_output_dir", alone=False)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    done = run_python([*common, "--overwrite_output_dir"], env_extra=ENV, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "notes.txt").read_text() == "my notes" and (out / "model.safetensors").is_file()
    assert not (out / "training_args.bin").exists()  # a pickle: outputs are safetensors only


@pytest.mark.slow
def test_a_failed_run_leaves_the_folder_as_it_found_it(trained, tmp_path):
    """The earlier run's model, metrics.jsonl and checkpoints survive a run that fails on its first image; a run into
    a new folder that fails leaves no folder."""
    data = tmp_path / "broken"
    write_images(data, broken=[f"{c}/{i}.png" for c in "ab" for i in range(4)])
    before = snapshot(trained)
    failed = train(
        "--train_dir",
        data,
        "--output_dir",
        trained,
        "--overwrite_output_dir",
        "--max_train_steps",
        "2",
        "--preset",
        "vit-tiny-patch16-224",
        "--config_overrides",
        "image_size=8,patch_size=4,hidden_size=32,num_hidden_layers=1,num_attention_heads=2,intermediate_size=64",
    )
    error_line(failed, str(data), "read", alone=False)
    assert snapshot(trained) == before
    fresh = train("--train_dir", data, "--output_dir", tmp_path / "fresh", "--max_train_steps", "2")
    error_line(fresh, str(data), "read", alone=False)
    assert not (tmp_path / "fresh").exists()


def test_a_second_run_into_the_same_folder_is_refused(tmp_path):
    from hf_vit.output_dir import RunLock

    out = tmp_path / "out"
    with RunLock(out):  # a run in progress
        second = train_here("--output_dir", out, "--max_train_steps", "2")
        error_line(second, "another run", str(out), alone=False)
        assert not (out / "model.safetensors").exists()


@pytest.mark.slow
def test_resume_refuses_other_settings_and_damaged_checkpoints(trained, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(trained, out)
    before = snapshot(out)
    other_batch = train_here(
        "--output_dir",
        out,
        "--max_train_steps",
        "4",
        "--checkpointing_steps",
        "2",
        "--resume_from_checkpoint",
        "latest",
        "--per_device_train_batch_size",
        "16",
    )
    error_line(other_batch, "cannot resume from checkpoint", "per_device_train_batch_size 32 then, 16 now", alone=False)
    assert snapshot(out) == before

    newest = out / "checkpoints" / "checkpoint-4"
    (newest / "trainer_state.json").write_text("")
    explicit = train_here("--output_dir", out, "--max_train_steps", "4", "--resume_from_checkpoint", newest)
    error_line(
        explicit,
        "checkpoint-4 is damaged (trainer_state.json is unreadable",
        "resume from checkpoint",
        "checkpoint-2 (the newest intact one) or start over",
        alone=False,
    )

    # a checkpoint saved without the file sizes (older hf_vit) whose optimizer.bin would run code: refused as damaged
    oldest = out / "checkpoints" / "checkpoint-2"
    state = json.loads((oldest / "trainer_state.json").read_text())
    del state["files"]
    (oldest / "trainer_state.json").write_text(json.dumps(state))
    (oldest / "optimizer.bin").write_bytes(pickle.dumps(Exploit(tmp_path / "pwned")))
    evil = train_here("--output_dir", out, "--max_train_steps", "4", "--resume_from_checkpoint", oldest)
    error_line(evil, "checkpoint-2 is damaged (UnpicklingError", "start over", alone=False)
    assert not (tmp_path / "pwned").exists()

    # `latest` passes over the damaged newest one and resumes from an intact one
    shutil.rmtree(out)
    shutil.copytree(trained, out)
    truncated = out / "checkpoints" / "checkpoint-4" / "model.safetensors"
    truncated.write_bytes(truncated.read_bytes()[:100])
    resumed = train(
        "--output_dir",
        out,
        "--max_train_steps",
        "4",
        "--checkpointing_steps",
        "2",
        "--resume_from_checkpoint",
        "latest",
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "warning: passing over damaged checkpoint" in resumed.stderr and "resumed from" in resumed.stdout
    assert "checkpoint-2 at step 2" in resumed.stdout


class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.slow
def test_disk_full_is_one_line_and_leaves_the_earlier_model(trained, tmp_path):
    before = snapshot(trained)
    enospc = "raise OSError(28, 'No space left on device')"
    final = run_with_fault(
        TRAIN,
        [*QUICK, "--output_dir", trained, "--overwrite_output_dir", "--max_train_steps", "2"],
        (f"import transformers.modeling_utils as m\ndef full(*args, **kwargs):\n    {enospc}\nm.safe_save_file = full"),
    )
    assert final.returncode == 1, final.stderr[-3000:]
    error_line(final, "disk full while writing the trained model", "nothing in it was changed", code=1, alone=False)
    assert snapshot(trained) == before
    assert not [p for p in trained.iterdir() if p.name.startswith(".hf_vit")]

    # the second checkpoint meets a full disk inside torch.save (whose error hides the errno)
    out = tmp_path / "run"
    saving = run_with_fault(
        TRAIN,
        [*QUICK, "--output_dir", out, "--max_train_steps", "4", "--checkpointing_steps", "2"],
        (
            "import accelerate.utils.other as other, torch\n"
            "calls = []\n"
            "def save(obj, f, *args, **kwargs):\n"
            "    calls.append(f)\n"
            "    if 'checkpoint-4' in str(f):\n"
            "        raise RuntimeError('[enforce fail at inline_container.cc:672] . unexpected pos 1728 vs 1616')\n"
            "    return torch.serialization.save(obj, f, *args, **kwargs)\n"
            "other.torch.save = save"
        ),
    )
    error_line(saving, "disk full while saving checkpoint 4", "earlier checkpoints are intact", code=1, alone=False)
    assert saving.returncode == 1
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-2"]
    assert not (out / "model.safetensors").exists()


@pytest.mark.slow
def test_a_kill_while_the_final_files_are_moved_in_strands_nothing(tmp_path):
    out = tmp_path / "run"
    args = [*QUICK, "--output_dir", out, "--max_train_steps", "4", "--checkpointing_steps", "2"]
    killed = run_with_fault(
        TRAIN,
        args,
        (
            "import os, signal\n"
            "real = os.replace\n"
            "def replace(src, dst, *a, **k):\n"
            "    if str(dst).endswith('config.json'):  # model.safetensors is in, config.json not yet\n"
            "        os.kill(os.getpid(), signal.SIGKILL)\n"
            "    return real(src, dst, *a, **k)\n"
            "os.replace = replace"
        ),
    )
    assert killed.returncode == -signal.SIGKILL
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    resumed = train(*args[len(QUICK) :], "--resume_from_checkpoint", "latest")
    assert resumed.returncode == 0, resumed.stderr
    assert (out / "config.json").is_file() and (out / "checkpoints" / "checkpoint-4").is_dir()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # the killed run's staging folder is gone


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--num_train_epochs", "0"], ["--num_train_epochs must be at least 1, got 0"]),
        (["--max_train_steps", "-1"], ["--max_train_steps must be at least 1, got -1"]),
        (["--learning_rate", "0"], ["--learning_rate must be a positive number, got 0.0"]),
        (["--learning_rate", "-0.01"], ["--learning_rate must be a positive number"]),
        (["--learning_rate", "nan"], ["--learning_rate must be a positive number"]),
        (["--per_device_train_batch_size", "0"], ["--per_device_train_batch_size must be at least 1"]),
        (["--per_device_train_batch_size", "-4"], ["--per_device_train_batch_size must be at least 1"]),
        (["--validation_split", "0"], ["--validation_split must be a fraction between 0 and 1"]),
        (["--validation_split", "1"], ["--validation_split must be a fraction between 0 and 1"]),
        (
            ["--config_overrides", "num_hidden_layer=1"],
            ["unknown HfViTConfig key 'num_hidden_layer'", "did you mean 'num_hidden_layers'?"],
        ),
        (["--config_overrides", "foo_bar=3"], ["unknown HfViTConfig key 'foo_bar'", "known keys:"]),
    ],
)
def test_empty_or_nonsensical_training_is_refused_before_any_work(tmp_path, args, fragments):
    from hf_vit.cli import UserError
    from hf_vit.commands import train as train_script

    with pytest.raises(UserError) as error:
        train_script.check_args(train_script.parse_args(["--output_dir", str(tmp_path / "out"), *args]))
    for fragment in fragments:
        assert fragment in str(error.value)
    assert not (tmp_path / "out").exists()


def test_refusals_exit_2_in_one_line_before_loading_data(tmp_path):
    result = train_here("--output_dir", tmp_path / "out", "--num_train_epochs", "0")
    error_line(result, "--num_train_epochs must be at least 1", alone=False)
    assert result.returncode == 2 and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_an_unreadable_demo_image_never_fails_the_run(tmp_path):
    write_images(tmp_path / "train")
    write_images(tmp_path / "val", per_class=2, broken=["a/0.png"])  # the first held-out image
    result = train(
        "--train_dir",
        tmp_path / "train",
        "--validation_dir",
        tmp_path / "val",
        "--skip_bad_images",
        "--output_dir",
        tmp_path / "out",
        "--max_train_steps",
        "2",
        "--preset",
        "vit-tiny-patch16-224",
        "--config_overrides",
        "image_size=8,patch_size=4,hidden_size=32,num_hidden_layers=1,num_attention_heads=2,intermediate_size=64",
    )
    assert result.returncode == 0, result.stderr
    assert "pipeline prediction for a held-out validation image" in result.stdout


def test_finetune_resumes_from_latest_as_train_does(tmp_path):
    """`--resume_from_checkpoint latest` (what train.py takes) is the newest checkpoint-N; a folder that is not one
    is refused in one line naming the checkpoints there."""
    from safetensors.torch import load_file

    data, out = tmp_path / "images", tmp_path / "out"
    write_images(data)
    common = [
        FINETUNE,
        "--train_dir",
        str(data),
        "--preset",
        "vit-tiny-patch16-224",
        "--config_overrides",
        ",".join(f"{k}={v}" for k, v in TINY.items()),
        "--output_dir",
        str(out),
        "--max_steps",
        "2",
        "--save_strategy",
        "steps",
        "--save_steps",
        "1",
        "--eval_strategy",
        "no",
        "--disable_tqdm",
        "true",
        "--use_cpu",
        "true",
    ]
    first = run_main(common)
    assert first.returncode == 0, first.stderr[-3000:]
    saved = load_file(out / "checkpoint-2" / "model.safetensors")
    wrong = run_main([*common, "--resume_from_checkpoint", str(out / "checkpoint-9")])
    error_line(wrong, "checkpoint-9", "holds checkpoint-1, checkpoint-2", '"latest"', alone=False)
    # another seed: a fresh start would give other weights; resumed at step 2 of 2, the model is checkpoint-2's
    resumed = run_main([*common, "--resume_from_checkpoint", "latest", "--seed", "1"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = load_file(out / "model.safetensors")
    assert all((final[name] == tensor).all() for name, tensor in saved.items())
