"""scripts/finetune_trainer.py: transformers.Trainer on the same data path, from scratch and from an hf_vit folder."""

import json
import re

import pytest
from helpers import REPO, TINY, run_python

pytestmark = pytest.mark.slow  # real training processes

SCRIPT = str(REPO / "scripts" / "finetune_trainer.py")
ENV = {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def test_trainer_on_digits_then_fine_tune_the_saved_folder(tmp_path):
    out = tmp_path / "scratch"
    result = run_python(
        [
            SCRIPT,
            "--output_dir",
            str(out),
            "--num_train_epochs",
            "3",
            "--max_eval_samples",
            "120",
            "--disable_tqdm",
            "true",
        ],
        env_extra=ENV,
        timeout=400,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    accuracy = float(re.search(r"test accuracy: (\d+\.\d\d)%", result.stdout).group(1))
    assert accuracy > 40.0  # chance is 10%
    assert "pipeline prediction for a held-out test image" in result.stdout
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "README.md"):
        assert (out / name).is_file(), name
    assert not (out / "pytorch_model.bin").exists()

    # fine-tune that folder on a 3-class subset of its labels: a new head
    images = tmp_path / "images"
    from PIL import Image

    for c, name in enumerate(("x", "y", "z")):
        (images / name).mkdir(parents=True)
        for i in range(4):
            Image.new("L", (8, 8), 60 * c + 10 * i).save(images / name / f"{i}.png")
    tuned = tmp_path / "tuned"
    result = run_python(
        [
            SCRIPT,
            "--model_name_or_path",
            str(out),
            "--train_dir",
            str(images),
            "--output_dir",
            str(tuned),
            "--max_steps",
            "2",
            "--per_device_train_batch_size",
            "4",
            "--disable_tqdm",
            "true",
        ],
        env_extra=ENV,
        timeout=400,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "validation accuracy:" in result.stdout
    config = json.loads((tuned / "config.json").read_text())
    assert config["id2label"] == {"0": "x", "1": "y", "2": "z"} and config["hidden_size"] == 96


def test_trainer_from_a_preset(tmp_path):
    overrides = ",".join(f"{k}={v}" for k, v in TINY.items())
    result = run_python(
        [
            SCRIPT,
            "--preset",
            "vit-tiny-patch16-224",
            "--config_overrides",
            overrides,
            "--output_dir",
            str(tmp_path / "p"),
            "--max_steps",
            "2",
            "--max_train_samples",
            "64",
            "--max_eval_samples",
            "32",
            "--disable_tqdm",
            "true",
        ],
        env_extra=ENV,
        timeout=400,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "p" / "config.json").read_text())["image_size"] == 32
