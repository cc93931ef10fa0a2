"""hf_vit inside the tools around a Hugging Face model: meta-device construction (big-model loading, FSDP),
int8 dynamic quantization, AutoImageProcessor for a folder without preprocessor_config.json."""

import pytest
import torch
from torch import nn

from hf_vit import HfViTForImageClassification, HfViTModel


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
    with (
        torch.device("meta"),
        pytest.raises(ValueError, match=r"hidden_size \(32\) must be divisible by num_attention_heads \(3\)"),
    ):
        HfViTModel(tiny_config(num_attention_heads=3))


def test_auto_image_processor_for_a_folder_saved_without_one(tmp_path, tiny_config):
    from PIL import Image
    from transformers import AutoImageProcessor, ViTImageProcessor, pipeline

    model = HfViTForImageClassification(tiny_config(image_size=(32, 48), id2label={0: "cat", 1: "dog"})).eval()
    model.save_pretrained(tmp_path / "bare")
    processor = AutoImageProcessor.from_pretrained(tmp_path / "bare")
    assert type(processor) is ViTImageProcessor and processor.size == {"height": 32, "width": 48}
    assert list(processor.image_mean) == [0.5] * 3
    classify = pipeline("image-classification", model=str(tmp_path / "bare"), device="cpu")
    assert {p["label"] for p in classify(Image.new("RGB", (100, 60)), top_k=2)} == {"cat", "dog"}

    # the caller's own processor wins, whether saved before or after the model
    own = ViTImageProcessor(size={"height": 32, "width": 48}, image_mean=[0.1, 0.2, 0.3], image_std=[0.3, 0.2, 0.1])
    for order in ("before", "after"):
        folder = tmp_path / order
        folder.mkdir()
        if order == "before":
            own.save_pretrained(folder)
        model.save_pretrained(folder)
        if order == "after":
            own.save_pretrained(folder)
        assert list(AutoImageProcessor.from_pretrained(folder).image_mean) == [0.1, 0.2, 0.3], order
    assert not list(tmp_path.rglob("*.tmp"))


def test_linears_are_exact_nn_linear_and_int8_dynamic_quantization_replaces_them_all(tiny_config):
    model = HfViTForImageClassification(tiny_config(num_labels=10)).eval()
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    assert len(linears) == 2 * 4 + 1  # qkv, proj, fc1, fc2 per block + the head
    assert all(type(model.get_submodule(name)) is nn.Linear for name in linears)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        reference = model(x).logits
    quantized = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    dynamic_linear = torch.ao.nn.quantized.dynamic.Linear
    assert all(type(quantized.get_submodule(name)) is dynamic_linear for name in linears)
    assert not any(type(module) is nn.Linear for module in quantized.modules())
    with torch.no_grad():
        logits = quantized(x).logits
    assert (logits - reference).abs().max() <= 0.1 * reference.abs().max()
    assert torch.nn.functional.cosine_similarity(logits.flatten(), reference.flatten(), dim=0) > 0.99


def test_onednn_fast_path_keeps_module_hooks(tiny_config, monkeypatch):
    from hf_vit import modeling_hf_vit

    if not modeling_hf_vit._ONEDNN_LINEAR_WORKS:
        pytest.skip("this torch build has no usable oneDNN linear; F.linear is used everywhere")
    monkeypatch.setattr(modeling_hf_vit, "_ONEDNN_LINEAR", True)  # whether or not this CPU is one where it pays off
    model = HfViTModel(tiny_config()).eval()
    seen = []
    model.encoder.layers[0].mlp.fc1.register_forward_hook(lambda module, args, output: seen.append(output.shape))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fast = model(x).last_hidden_state
    assert "mkldnn::_linear_pointwise" in {event.name for event in prof.events()}
    assert seen == [(2, 17, 64)]
    monkeypatch.setattr(modeling_hf_vit, "_ONEDNN_LINEAR", False)
    with torch.no_grad():
        plain = model(x).last_hidden_state
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-5)
