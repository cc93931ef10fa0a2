"""The shared helpers: atomic folders, FLOP count, model cards."""

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from torch.utils.flop_counter import FlopCounterMode

from hf_vit import HfViTConfig, HfViTForImageClassification
from hf_vit.fileio import atomic_directory, atomic_write_text
from hf_vit.model_card import render_model_card, write_model_card
from hf_vit.stats import count_parameters, forward_flops


def test_atomic_directory_commits_on_success_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as staging:
            (staging / "half.bin").write_bytes(b"x")
            raise RuntimeError("killed")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_directory(target) as staging:
        (staging / "whole.bin").write_bytes(b"x")
        assert not target.exists()
    assert [p.name for p in target.iterdir()] == ["whole.bin"]
    with pytest.raises(ValueError, match="already exists and is not empty"):
        with atomic_directory(target):
            pass
    for name in ("model-00001-of-00002.safetensors", "model.safetensors.index.json", "config.json"):
        (target / name).write_text("earlier")
    with atomic_directory(target, overwrite=True) as staging:  # into a user's folder: only its own files change
        (staging / "model.safetensors").write_bytes(b"y")
        (staging / "config.json").write_text("new")
        assert (target / "config.json").read_text() == "earlier"
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.safetensors", "whole.bin"]
    assert (target / "config.json").read_text() == "new" and len(list(tmp_path.iterdir())) == 1


def test_atomic_write_text(tmp_path):
    atomic_write_text(tmp_path / "a" / "card.md", "hello")
    assert (tmp_path / "a" / "card.md").read_text() == "hello" and len(list((tmp_path / "a").iterdir())) == 1
    (tmp_path / "plain.md").write_text("x")  # the mode an ordinary write gives, not mkstemp's 0600
    assert (tmp_path / "a" / "card.md").stat().st_mode == (tmp_path / "plain.md").stat().st_mode


@pytest.mark.parametrize("size", [(32, 32), (48, 40)])
def test_forward_flops_matches_torch_flop_counter(tiny_config, size):
    config = tiny_config(num_register_tokens=2, num_labels=5)
    model = HfViTForImageClassification(config).eval()
    model.set_attn_implementation("eager")  # the counter sees the attention matmuls on the eager path
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, *size))
    assert forward_flops(config, *size) == counter.get_total_flops()


def test_vit_base_flops_are_the_papers():
    # DeiT/timm report 17.6 G multiply-adds for ViT-B/16 at 224 (with a 1000-class head)
    macs = forward_flops(HfViTConfig.from_preset("vit-base-patch16-224"), num_labels=1000) / 2
    assert 17.5e9 < macs < 17.7e9


def test_model_card_metadata_and_body(tmp_path, tiny_config):
    config = tiny_config(num_labels=10)
    model = HfViTForImageClassification(config)
    card = render_model_card(
        config,
        num_parameters=count_parameters(model),
        model_name="digits-vit",
        repo_id="me/digits-vit",
        datasets=["sklearn-digits"],
        results={"accuracy": 0.98},
        hyperparameters={"learning_rate": 0.001},
        source="timm vit_small_patch16_224",
    )
    path = write_model_card(tmp_path, card)
    loaded = ModelCard.load(path)
    data = loaded.data.to_dict()
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "image-classification"
    assert {"vision", "vit", "hf_vit"} <= set(data["tags"]) and data["license"] == "apache-2.0"
    metric = data["model-index"][0]["results"][0]["metrics"][0]
    assert metric == {"type": "accuracy", "value": 0.98, "name": "Accuracy"}
    text = path.read_text()
    assert "converted from timm vit_small_patch16_224" in text and "| learning_rate | 0.001 |" in text
    assert f"{count_parameters(model) / 1e3:.1f}K" in text and "trust_remote_code=True" in text
    assert yaml.safe_load(text.split("---")[1])["datasets"] == ["sklearn-digits"]
