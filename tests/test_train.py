"""scripts/train.py as users run it: in subprocesses, checking exit codes, printed lines and written files."""

import json
import re
import signal
from pathlib import Path

import pytest
from helpers import REPO, error_line, free_port, run_main, run_python

TRAIN = str(REPO / "scripts" / "train.py")
ENV = {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
# a few quick steps on a subset of the digits
QUICK = [
    "--no_progress",
    "--max_train_samples",
    "256",
    "--max_eval_samples",
    "120",
    "--per_device_train_batch_size",
    "32",
]


def train(*args, timeout=300):
    return run_python([TRAIN, *QUICK, *map(str, args)], env_extra=ENV, timeout=timeout)


def accuracy(stdout: str) -> float:
    match = re.search(r"(?:test|validation) accuracy: (\d+\.\d\d)%", stdout)
    assert match, stdout
    return float(match.group(1))


@pytest.mark.slow
def test_digits_default_model_learns_and_writes_the_folder(tmp_path):
    out = tmp_path / "run"
    result = train(
        "--output_dir",
        out,
        "--num_train_epochs",
        "3",
        "--max_train_samples",
        "1437",
        "--max_eval_samples",
        "360",
        "--per_device_train_batch_size",
        "64",
        "--report_to",
        "tensorboard",
    )
    assert result.returncode == 0, result.stderr
    assert accuracy(result.stdout) > 40.0  # chance is 10%
    assert f"saved model, image processor and model card to {out}" in result.stdout
    assert re.search(r"pipeline prediction for a held-out test image \(true label \d\): \d \(score", result.stdout)
    for name in (
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "README.md",
        "metrics.jsonl",
        "training_curves.png",
        "all_results.json",
    ):
        assert (out / name).is_file(), name
    assert any((out / "runs").rglob("events.out.tfevents*"))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3] and rows[-1]["eval_samples"] == 360
    card = (out / "README.md").read_text()
    assert "accuracy" in card and "hf_vit" in card and "`test` split" in card and "license: apache-2.0" in card
    assert "github.com" not in card and "0.00 G" not in card  # no dead link, compute in the unit that fits
    assert not list(tmp_path.glob(".run.tmp-*"))  # the staging folder is gone


@pytest.mark.slow
def test_ddp_two_processes_gathers_metrics_once(tmp_path):
    out = tmp_path / "ddp"
    args = [
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO / "scripts" / "accelerate_configs" / "cpu_ddp.yaml"),
        "--main_process_port",
        str(free_port()),
        TRAIN,
        *QUICK,
        "--output_dir",
        str(out),
        "--max_train_steps",
        "6",
        "--max_eval_samples",
        "101",  # odd: the last batch is split unevenly across ranks
    ]
    result = run_python(args, env_extra=ENV, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stdout
    assert result.stdout.count("test accuracy:") == 1  # only the main process reports and writes
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["eval_samples"] == 101  # gather_for_metrics drops the padding duplicates
    assert rows[-1]["step"] == 6
    assert (out / "model.safetensors").is_file()


@pytest.mark.slow
def test_sigkill_and_resume_is_bitwise_identical(tmp_path):
    from safetensors.torch import load_file

    common = [
        "--max_train_steps",
        "20",
        "--checkpointing_steps",
        "3",
        "--seed",
        "7",
        "--augment",
        "on",
    ]  # 8 steps an epoch
    reference = train("--output_dir", tmp_path / "ref", *common)
    assert reference.returncode == 0, reference.stderr

    # killed deliberately at the rotation point: the save of checkpoint-9 is removing checkpoint-3 (limit 2), and
    # the kill lands in the middle of that removal
    out = tmp_path / "killed"
    patch = (
        "import os, shutil, signal\n"
        "real = shutil.rmtree\n"
        "def rmtree(path, *args, **kwargs):\n"
        "    if 'checkpoint-3' in str(path) and 'tmp' not in os.path.basename(str(path)):\n"
        "        os.unlink(os.path.join(path, sorted(os.listdir(path))[0]))\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(path, *args, **kwargs)\n"
        "shutil.rmtree = rmtree\n"
    )
    code = (
        f"import runpy, sys\n{patch}sys.argv = {[TRAIN, *QUICK, '--output_dir', str(out), *common]!r}\n"
        f"runpy.run_path({TRAIN!r}, run_name='__main__')"
    )
    killed = run_python(code, env_extra=ENV, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (out / "checkpoints" / "checkpoint-9").is_dir() and (out / "checkpoints" / "checkpoint-6").is_dir()
    assert len(list((out / "checkpoints").iterdir())) == 3  # what the kill left of checkpoint-3 is still there
    assert not (out / "model.safetensors").exists()  # no final model from a killed run

    resumed = train("--output_dir", out, *common, "--resume_from_checkpoint", "latest")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout
    a, b = load_file(tmp_path / "ref" / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].equal(b[name]), name
    assert accuracy(resumed.stdout) == accuracy(reference.stdout)
    # the metrics log has each epoch once, as the uninterrupted run's
    ref_rows = [json.loads(line) for line in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [r["epoch"] for r in ref_rows]
    assert [r["eval_accuracy"] for r in rows] == [r["eval_accuracy"] for r in ref_rows]
    # the next saves enforced the limit over everything present: the newest two, nothing else
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-15", "checkpoint-18"]

    # a checkpoint from another model is refused, in one line
    other = train(
        "--output_dir", out, *common, "--resume_from_checkpoint", "latest", "--config_overrides", "hidden_size=32"
    )
    error_line(other, "incompatible model", "hidden_size", alone=False)


def test_latest_ignores_half_written_checkpoints(tmp_path):
    from hf_vit.checkpoints import STATE_FILE, list_checkpoints, resolve_checkpoint

    folder = tmp_path / "checkpoints"
    (folder / "checkpoint-4").mkdir(parents=True)
    (folder / "checkpoint-4" / STATE_FILE).write_text('{"completed_steps": 4}')
    (folder / ".tmp-checkpoint-8").mkdir()  # a kill during saving
    (folder / ".tmp-checkpoint-8" / STATE_FILE).write_text("{}")
    (folder / "checkpoint-6").mkdir()  # no state file
    assert [p.name for p in list_checkpoints(folder)] == ["checkpoint-4"]
    assert resolve_checkpoint("latest", folder).name == "checkpoint-4"
    assert resolve_checkpoint("latest", tmp_path / "none") is None


def _write_images(folder: Path, classes=("a", "b"), per_class=6, size=(20, 16), modes=("RGB",)):
    from PIL import Image

    for c, name in enumerate(classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            mode = modes[i % len(modes)]
            color = (40 + 150 * c, 60, 200 - 150 * c, 255)[: len(Image.new(mode, (1, 1)).getbands())]
            if mode == "P":
                image = Image.new("RGB", size, color[:3]).convert("P")
            else:
                image = Image.new(mode, size, color if mode != "L" else color[0])
            image.save(folder / name / f"{i}.png" if mode != "CMYK" else folder / name / f"{i}.jpg")


@pytest.mark.slow
def test_imagefolder_with_bad_image_is_named_or_skipped(tmp_path):
    images = tmp_path / "images"
    _write_images(images, modes=("RGB", "L", "RGBA", "P", "CMYK"))
    (images / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    common = [
        "--train_dir",
        images,
        "--preset",
        "vit-tiny-patch16-224",
        "--config_overrides",
        "image_size=32,patch_size=8,hidden_size=32,num_hidden_layers=2,num_attention_heads=4,intermediate_size=64",
        "--per_device_train_batch_size",
        "4",
        "--max_train_steps",
        "3",
    ]
    failed = train("--output_dir", tmp_path / "fail", *common)
    error_line(failed, "broken.png", alone=False)
    assert not (tmp_path / "fail" / "model.safetensors").exists()

    skipped = train("--output_dir", tmp_path / "ok", *common, "--skip_bad_images")
    assert skipped.returncode == 0, skipped.stderr
    assert "warning: skipped 1 unreadable image" in skipped.stderr
    assert "validation accuracy:" in skipped.stdout
    config = json.loads((tmp_path / "ok" / "config.json").read_text())
    assert config["id2label"] == {"0": "a", "1": "b"}


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--preset", "vit-enormous"], ["Unknown preset", "vit-tiny-patch16-224"]),
        (["--config_overrides", "hidden_size=98"], ["hidden_size (98) must be divisible by num_attention_heads (4)"]),
        (["--train_dir", "{tmp}/missing"], ["--train_dir", "does not exist"]),
        (["--train_dir", "{tmp}/empty"], ["--train_dir", "is empty"]),
        (["--mixed_precision", "fp16", "--cpu_only"], ["fp16", "GPU"]),
        (["--dataset_name", "{tmp}/table", "--max_train_steps", "1"], ["no label column", "picture", "caption"]),
        (["--dataset_name", "{tmp}/table", "--label_column", "kind"], ["label column 'kind'", "picture, caption"]),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, monkeypatch, args, fragments):
    """Refused before any training: in this process (helpers.run_main), no interpreter start-up."""
    (tmp_path / "empty").mkdir()
    if "{tmp}/table" in args:
        import datasets
        from PIL import Image

        table = datasets.Dataset.from_dict(
            {"picture": [Image.new("RGB", (8, 8))] * 4, "caption": ["x"] * 4},
            features=datasets.Features({"picture": datasets.Image(), "caption": datasets.Value("string")}),
        )
        (tmp_path / "table").mkdir()
        table.to_parquet(str(tmp_path / "table" / "train.parquet"))
    if "--cpu_only" in args:  # as `accelerate launch --cpu` runs it, on any machine
        args = [a for a in args if a != "--cpu_only"]
        monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = run_main([TRAIN, "--output_dir", str(tmp_path / "out"), *args])
    error_line(result, *fragments, alone=False)
    assert not (tmp_path / "out" / "model.safetensors").exists()


@pytest.mark.slow
def test_streaming_local_dataset_with_max_train_steps(tmp_path):
    from PIL import Image

    for split, n in (("train", 6), ("validation", 2)):
        for c, name in enumerate(("cat", "dog")):
            (tmp_path / "ds" / split / name).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (20, 20), (20 * i, 120 * c, 0)).save(tmp_path / "ds" / split / name / f"{i}.png")
    overrides = (
        "image_size=32,patch_size=8,hidden_size=32,num_hidden_layers=2,num_attention_heads=4,intermediate_size=64"
    )
    result = run_python(
        [
            TRAIN,
            "--dataset_name",
            str(tmp_path / "ds"),
            "--streaming",
            "--max_train_steps",
            "4",
            "--no_progress",
            "--preset",
            "vit-tiny-patch16-224",
            "--config_overrides",
            overrides,
            "--per_device_train_batch_size",
            "4",
            "--output_dir",
            str(tmp_path / "out"),
        ],
        env_extra=ENV,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "validation accuracy:" in result.stdout
    assert json.loads((tmp_path / "out" / "config.json").read_text())["id2label"] == {"0": "cat", "1": "dog"}
    streaming_needs_steps = run_main([TRAIN, "--dataset_name", str(tmp_path / "ds"), "--streaming"])
    error_line(streaming_needs_steps, "--max_train_steps", alone=False)


@pytest.mark.slow
def test_train_throughput_compares_the_run_with_the_bare_step(trained_run, tmp_path, capsys):
    import runpy

    script = REPO / "scripts" / "dev" / "train_throughput.py"
    result = run_python([str(script), str(trained_run), "--steps", "3", "--reps", "2"], env_extra=ENV)
    assert result.returncode == 0, result.stderr
    assert re.search(r"bare model step: \d+ img/s \(median of 2 x 3 steps, batch 32\)", result.stdout)
    assert re.search(r"train.py end to end: \d+ img/s \(4 steps in [\d.]+ s\)\nratio: \d+\.\d\d", result.stdout)
    # a folder that is not a run: refused before any work, so in this process
    assert runpy.run_path(str(script))["main"]([str(tmp_path)]) == 2
    assert "not an output folder of scripts/train.py" in capsys.readouterr().err
