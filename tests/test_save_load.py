"""Saving, Auto classes, remote code, pipeline, head swaps and Trainer."""

import json
import os

import numpy as np
import pytest
import torch
from helpers import REPO, run_python
from PIL import Image
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    Trainer,
    TrainingArguments,
    ViTImageProcessor,
    pipeline,
)

from hf_vit import HfViTConfig, HfViTForImageClassification, HfViTModel

LABELS = {0: "cat", 1: "dog", 2: "fish"}


@pytest.fixture
def saved(tmp_path, tiny_config):
    model = HfViTForImageClassification(tiny_config(id2label=LABELS, num_register_tokens=1)).eval()
    model.save_pretrained(tmp_path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    return tmp_path, model


def test_folder_contents_and_auto_map(saved):
    folder, _ = saved
    assert {
        "config.json",
        "model.safetensors",
        "configuration_hf_vit.py",
        "modeling_hf_vit.py",
        "preprocessor_config.json",
    } <= set(os.listdir(folder))
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "hf_vit"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_hf_vit.HfViTConfig",
        "AutoModel": "modeling_hf_vit.HfViTModel",
        "AutoModelForImageClassification": "modeling_hf_vit.HfViTForImageClassification",
        "AutoBackbone": "modeling_hf_vit.HfViTBackbone",
        "AutoModelForMaskedImageModeling": "modeling_hf_vit.HfViTForMaskedImageModeling",
    }
    # the copied code is the package's code, byte for byte
    for name in ("configuration_hf_vit.py", "modeling_hf_vit.py"):
        assert (folder / name).read_text() == (REPO / "hf_vit" / name).read_text()


def test_a_saved_folder_names_no_code_but_hf_vits_own(tmp_path, tiny_config):
    """A config loaded with a foreign auto_map entry (another repo's code) is saved with hf_vit's auto_map only."""
    from hf_vit.modeling_hf_vit import AUTO_MAP

    HfViTModel(tiny_config()).save_pretrained(tmp_path / "a")
    settings = json.loads((tmp_path / "a" / "config.json").read_text())
    settings["auto_map"]["AutoModelForImageClassification"] = "other/repo--evil.EvilModel"
    settings["auto_map"]["AutoTokenizer"] = ["other/repo--evil.Evil", None]
    (tmp_path / "a" / "config.json").write_text(json.dumps(settings))
    HfViTForImageClassification.from_pretrained(tmp_path / "a").save_pretrained(tmp_path / "b")
    assert json.loads((tmp_path / "b" / "config.json").read_text())["auto_map"] == AUTO_MAP


def test_round_trip_single_file(saved):
    folder, model = saved
    reloaded = AutoModelForImageClassification.from_pretrained(folder)
    assert type(reloaded) is HfViTForImageClassification
    assert set(load_file(folder / "model.safetensors")) == set(model.state_dict())
    x = torch.randn(2, 3, 32, 40)
    torch.testing.assert_close(reloaded(x).logits, model(x).logits, rtol=0, atol=0)


def test_round_trip_sharded(tmp_path, tiny_config):
    model = HfViTForImageClassification(tiny_config()).eval()
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    shards = sorted(p.name for p in tmp_path.glob("model-*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "model.safetensors.index.json").exists()
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(reloaded(x).logits, model(x).logits, rtol=0, atol=0)


def test_auto_classes(saved):
    folder, model = saved
    assert type(AutoConfig.from_pretrained(folder)) is HfViTConfig
    backbone = AutoModel.from_pretrained(folder)
    assert type(backbone) is HfViTModel
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(backbone(x).pooler_output, model.vit(x).pooler_output, rtol=0, atol=0)
    assert type(AutoImageProcessor.from_pretrained(folder)).__name__.startswith("ViTImageProcessor")
    # built from a config, too
    assert (
        type(AutoModelForImageClassification.from_config(HfViTConfig(**{**model.config.to_dict()})))
        is HfViTForImageClassification
    )


def test_image_processor_found_through_the_model_type(tmp_path, tiny_config):
    """A preprocessor_config.json that does not name its class resolves through the hf_vit registration."""
    HfViTModel(tiny_config()).save_pretrained(tmp_path)
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.1, 0.2, 0.3]).save_pretrained(tmp_path)
    processor_file = tmp_path / "preprocessor_config.json"
    settings = json.loads(processor_file.read_text())
    settings.pop("image_processor_type")
    processor_file.write_text(json.dumps(settings))
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(processor).__name__ == "ViTImageProcessor" and list(processor.image_mean) == [0.1, 0.2, 0.3]


REMOTE_CODE = r"""
import sys, json
sys.modules["hf_vit"] = None  # make `import hf_vit` fail in this process
try:
    import hf_vit
except ImportError:
    pass
else:
    raise SystemExit("hf_vit is importable")
import torch
from transformers import AutoModel, AutoModelForImageClassification
folder = sys.argv[1]
model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
backbone = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
x = torch.load(folder + "/x.pt")
with torch.no_grad():
    torch.save({"logits": model(x).logits, "pooled": backbone(x).pooler_output}, folder + "/remote.pt")
print(type(model).__module__, type(model).__name__, type(backbone).__name__)
"""


@pytest.mark.slow
def test_remote_code_load_without_hf_vit(saved, tmp_path_factory):
    folder, model = saved
    x = torch.randn(2, 3, 32, 48)
    torch.save(x, folder / "x.pt")
    hf_home = tmp_path_factory.mktemp("hf_home")
    result = run_python(
        ["-c", REMOTE_CODE, str(folder)], env_extra={"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}, cwd=hf_home
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "transformers_modules" in result.stdout and "HfViTForImageClassification HfViTModel" in result.stdout
    remote = torch.load(folder / "remote.pt")
    with torch.no_grad():
        torch.testing.assert_close(remote["logits"], model(x).logits, rtol=0, atol=0)
        torch.testing.assert_close(remote["pooled"], model.vit(x).pooler_output, rtol=0, atol=0)


def test_pipeline_returns_labels_from_id2label(saved):
    folder, _ = saved
    classify = pipeline("image-classification", model=str(folder))
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8))
    predictions = classify(image, top_k=3)
    assert {p["label"] for p in predictions} == set(LABELS.values())
    assert sum(p["score"] for p in predictions) == pytest.approx(1.0, abs=1e-5)


def test_backbone_checkpoint_into_classifier_gets_a_new_head(tmp_path, tiny_config):
    backbone = HfViTModel(tiny_config()).eval()
    backbone.save_pretrained(tmp_path)
    classifier = HfViTForImageClassification.from_pretrained(tmp_path, num_labels=4).eval()
    assert classifier.classifier.out_features == 4
    for name, tensor in backbone.state_dict().items():
        assert torch.equal(classifier.vit.state_dict()[name], tensor), name
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(classifier.vit(x).pooler_output, backbone(x).pooler_output, rtol=0, atol=0)


def test_ignore_mismatched_sizes_for_another_num_labels(saved):
    folder, model = saved
    with pytest.raises(RuntimeError, match="size mismatch|ignore_mismatched_sizes"):
        HfViTForImageClassification.from_pretrained(folder, num_labels=7)
    resized = HfViTForImageClassification.from_pretrained(folder, num_labels=7, ignore_mismatched_sizes=True)
    assert resized.classifier.weight.shape == (7, 32)
    assert torch.equal(resized.vit.embeddings.position_embeddings, model.vit.embeddings.position_embeddings)


class _TinyImages(torch.utils.data.Dataset):
    """Two classes a Trainer can tell apart: bright or dark images."""

    def __init__(self, n=64):
        generator = torch.Generator().manual_seed(0)
        self.labels = torch.arange(n) % 2
        self.pixels = (
            torch.randn(n, 3, 32, 32, generator=generator) * 0.5 + (self.labels.float() * 2 - 1)[:, None, None, None]
        )

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"pixel_values": self.pixels[i], "labels": self.labels[i]}


@pytest.mark.slow
def test_trainer_a_few_steps_lowers_the_loss(tmp_path, tiny_config):
    model = HfViTForImageClassification(tiny_config(num_labels=2))
    data = _TinyImages()
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=16,
        num_train_epochs=3,
        learning_rate=1e-3,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        seed=0,
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=data)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 12
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
