"""hf_vit inside the tools around a Hugging Face model: meta-device construction (big-model loading, FSDP),
int8 dynamic quantization, AutoImageProcessor for a folder without preprocessor_config.json."""

import pytest
import torch
from torch import nn

from hf_vit import HfViTConfig, HfViTForImageClassification, HfViTModel


def test_builds_on_the_meta_device(tiny_config):
    config = tiny_config(drop_path_rate=0.1, layerscale_init=1e-5, num_register_tokens=2)
    with torch.device("meta"):
        model = HfViTModel(config)
    tensors = list(model.parameters()) + list(model.buffers())
    assert tensors and all(t.device.type == "meta" for t in tensors)
    rates = [getattr(layer.drop_path, "drop_prob", 0.0) for layer in model.encoder.layers]
    assert rates == pytest.approx([0.0, 0.1])


def test_init_empty_weights_then_real_weights_give_the_reference_outputs(tiny_config):
    from accelerate import init_empty_weights
    from transformers import AutoModelForImageClassification

    config = tiny_config(drop_path_rate=0.1, num_labels=3)
    reference = HfViTForImageClassification(config).eval()
    with init_empty_weights(include_buffers=True):
        empty = AutoModelForImageClassification.from_config(config)
    assert type(empty) is HfViTForImageClassification
    assert all(p.device.type == "meta" for p in empty.parameters())
    empty.load_state_dict(reference.state_dict(), assign=True)
    empty.eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(empty(x).logits, reference(x).logits, rtol=0, atol=0)


def test_meta_device_keeps_the_config_check(tiny_config):
    with torch.device("meta"), pytest.raises(ValueError, match=r"hidden_size \(32\) must be divisible by num_attention_heads \(3\)"):
        HfViTModel(tiny_config(num_attention_heads=3))
