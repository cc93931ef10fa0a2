"""Behaviour of the model itself on tiny configs: shapes, interpolation, attention paths, training features, errors."""

import copy

import pytest
import torch
import torch.nn.functional as F

from hf_vit import HfViTForImageClassification, HfViTModel


def tokens(config, height, width):
    return 1 + config.num_register_tokens + (height // config.patch_size) * (width // config.patch_size)


@pytest.mark.parametrize("size", [(32, 32), (48, 48), (16, 16), (32, 56), (64, 24)])
def test_any_size_divisible_by_the_patch_size(tiny_config, size):
    config = tiny_config(num_register_tokens=2)
    model = HfViTModel(config).eval()
    out = model(torch.randn(2, 3, *size))
    assert out.last_hidden_state.shape == (2, tokens(config, *size), 32)
    assert out.pooler_output.shape == (2, 32)


def test_no_interpolation_work_at_the_native_size(tiny_config, monkeypatch):
    model = HfViTModel(tiny_config()).eval()
    calls = []
    original = F.interpolate
    monkeypatch.setattr(F, "interpolate", lambda *a, **k: calls.append(k) or original(*a, **k))
    model(torch.randn(1, 3, 32, 32))
    assert calls == []
    model(torch.randn(1, 3, 48, 32))
    assert len(calls) == 1 and calls[0]["size"] == (6, 4) and calls[0]["mode"] == "bicubic"


def test_interpolated_positions_are_bicubic_resize_of_the_learned_grid(tiny_config):
    model = HfViTModel(tiny_config(image_size=(32, 48))).eval()  # non-square native grid 4x6
    pos = model.embeddings.position_embeddings
    resized = model.embeddings.interpolate_pos_encoding((8, 3))
    grid = pos[:, 1:].reshape(1, 4, 6, -1).permute(0, 3, 1, 2)
    expected = (
        F.interpolate(grid, size=(8, 3), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(1, 24, -1)
    )
    torch.testing.assert_close(resized[:, 1:], expected, rtol=0, atol=0)
    torch.testing.assert_close(resized[:, :1], pos[:, :1], rtol=0, atol=0)
    antialiased = HfViTModel(tiny_config(image_size=(32, 48), interpolate_antialias=True))
    antialiased.load_state_dict(model.state_dict())
    assert not torch.equal(
        antialiased.embeddings.interpolate_pos_encoding((2, 3)), model.embeddings.interpolate_pos_encoding((2, 3))
    )


def test_interpolate_pos_encoding_false_refuses_another_size(tiny_config):
    model = HfViTModel(tiny_config()).eval()
    model(torch.randn(1, 3, 32, 32), interpolate_pos_encoding=False)  # native size is fine
    with pytest.raises(
        ValueError,
        match=r"Input image size \(48x32\) differs from the model's \(32x32\) and interpolate_pos_encoding=False",
    ):
        model(torch.randn(1, 3, 48, 32), interpolate_pos_encoding=False)
    a = model(torch.randn(1, 3, 48, 32, generator=torch.Generator().manual_seed(1)), interpolate_pos_encoding=True)
    b = model(torch.randn(1, 3, 48, 32, generator=torch.Generator().manual_seed(1)))
    torch.testing.assert_close(a.last_hidden_state, b.last_hidden_state, rtol=0, atol=0)


@pytest.mark.parametrize(
    "shape, error, message",
    [
        ((2, 1, 32, 32), ValueError, r"pixel_values must have 3 channels \(config.num_channels\), got 1"),
        ((3, 32, 32), ValueError, r"pixel_values must be 4-D \(batch, channels, height, width\), got 3-D"),
        ((1, 2, 3, 32, 32), ValueError, r"pixel_values must be 4-D .* got 5-D"),
        ((1, 3, 30, 32), ValueError, r"height and width must be positive multiples of the patch size 8, got 30x32"),
        ((1, 3, 32, 36), ValueError, r"multiples of the patch size 8, got 32x36"),
    ],
)
def test_bad_pixel_values(tiny_config, shape, error, message):
    model = HfViTForImageClassification(tiny_config())
    with pytest.raises(error, match=message):
        model(torch.randn(*shape))


def test_pixel_values_missing_or_not_a_tensor(tiny_config):
    model = HfViTModel(tiny_config())
    with pytest.raises(ValueError, match="pixel_values is required"):
        model()
    with pytest.raises(TypeError, match="pixel_values must be a torch.Tensor"):
        model([[0.0]])


def test_unknown_attn_implementation(tiny_config):
    with pytest.raises(ValueError, match='attn_implementation="flash_attention_9"'):
        HfViTModel(tiny_config(attn_implementation="flash_attention_9"))
    model = HfViTModel(tiny_config())
    with pytest.raises(ValueError, match="not supported"):
        model.set_attn_implementation("flash_attention_9")


def _pair(config):
    sdpa = HfViTForImageClassification(copy.deepcopy(config)).eval()
    assert sdpa.config._attn_implementation == "sdpa"  # the default
    eager = HfViTForImageClassification(copy.deepcopy(config)).eval()
    eager.load_state_dict(sdpa.state_dict())
    eager.set_attn_implementation("eager")
    assert eager.config._attn_implementation == "eager" and sdpa.config._attn_implementation == "sdpa"
    return sdpa, eager


def test_eager_and_sdpa_agree(tiny_config):
    sdpa, eager = _pair(tiny_config(num_register_tokens=1, layerscale_init=0.5))
    x = torch.randn(3, 3, 40, 32)
    torch.testing.assert_close(sdpa(x).logits, eager(x).logits, rtol=0, atol=1e-5)


def test_attention_weights_under_sdpa_are_the_real_eager_weights(tiny_config):
    sdpa, eager = _pair(tiny_config(num_register_tokens=2))
    x = torch.randn(2, 3, 32, 48)
    a = sdpa(x, output_attentions=True)
    b = eager(x, output_attentions=True)
    assert len(a.attentions) == 2
    n = tokens(sdpa.config, 32, 48)
    for got, expected in zip(a.attentions, b.attentions, strict=True):
        assert got.shape == (2, 4, n, n)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(got.sum(-1), torch.ones(2, 4, n), rtol=0, atol=1e-5)
    # asking for the weights does not change the result, and the default call returns none
    torch.testing.assert_close(a.logits, sdpa(x).logits, rtol=0, atol=1e-5)
    assert sdpa(x).attentions is None


def test_hidden_states_are_the_embeddings_then_each_block(tiny_config):
    model = HfViTModel(tiny_config()).eval()
    out = model(torch.randn(2, 3, 32, 32), output_hidden_states=True)
    assert len(out.hidden_states) == 3
    torch.testing.assert_close(model.layernorm(out.hidden_states[-1]), out.last_hidden_state)


def test_return_dict_false(tiny_config):
    model = HfViTForImageClassification(tiny_config(num_labels=5)).eval()
    x = torch.randn(2, 3, 32, 32)
    logits, hidden_states, attentions = model(x, output_hidden_states=True, output_attentions=True, return_dict=False)
    assert logits.shape == (2, 5) and len(hidden_states) == 3 and len(attentions) == 2
    loss, logits2 = model(x, labels=torch.tensor([1, 2]), return_dict=False)
    assert loss.ndim == 0
    torch.testing.assert_close(logits, logits2)
    last, pooled = model.vit(x, return_dict=False)
    assert last.shape == (2, 17, 32) and pooled.shape == (2, 32)


def test_mean_pooling_is_normed_mean_of_patch_tokens(tiny_config):
    model = HfViTModel(tiny_config(pooling="mean", num_register_tokens=2)).eval()
    out = model(torch.randn(2, 3, 32, 32))
    expected = model.layernorm(out.last_hidden_state[:, 3:].mean(1))  # skip CLS and both registers
    torch.testing.assert_close(out.pooler_output, expected, rtol=0, atol=0)


def test_cls_position_embedding_off(tiny_config):
    model = HfViTModel(tiny_config(cls_position_embedding=False, num_register_tokens=4))
    assert model.embeddings.position_embeddings.shape == (1, 16, 32)  # patches only
    assert model(torch.randn(1, 3, 40, 40)).last_hidden_state.shape == (1, 1 + 4 + 25, 32)


def test_layerscale_and_registers_are_initialised_and_used(tiny_config):
    model = HfViTModel(tiny_config(layerscale_init=1e-5, num_register_tokens=3))
    layer = model.encoder.layers[0]
    assert torch.all(layer.layer_scale1.lambda1 == 1e-5) and torch.all(layer.layer_scale2.lambda1 == 1e-5)
    assert model.embeddings.register_tokens.shape == (1, 3, 32) and model.embeddings.register_tokens.std() > 0
    # with a tiny LayerScale the blocks barely change the tokens
    out = model(torch.randn(1, 3, 32, 32), output_hidden_states=True)
    assert (out.hidden_states[-1] - out.hidden_states[0]).abs().max() < 1e-3


def test_weight_init_is_truncated_normal(tiny_config):
    model = HfViTForImageClassification(tiny_config(hidden_size=64, initializer_range=0.02, num_labels=10))
    qkv = model.vit.encoder.layers[0].attention.qkv
    assert abs(qkv.weight.std().item() - 0.02) < 0.003 and torch.all(qkv.bias == 0)
    assert torch.all(model.vit.encoder.layers[0].norm1.weight == 1) and torch.all(model.vit.layernorm.bias == 0)
    assert model.vit.embeddings.position_embeddings.abs().max() <= 2.0  # truncated
    assert model.vit.embeddings.cls_token.std() > 0


def test_drop_path_is_linear_over_depth_and_only_in_training(tiny_config):
    model = HfViTModel(tiny_config(num_hidden_layers=5, drop_path_rate=0.4))
    rates = [getattr(layer.drop_path, "drop_prob", 0.0) for layer in model.encoder.layers]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    x = torch.randn(8, 3, 32, 32)
    model.eval()
    torch.testing.assert_close(model(x).last_hidden_state, model(x).last_hidden_state, rtol=0, atol=0)
    model.train()
    assert not torch.equal(model(x).last_hidden_state, model(x).last_hidden_state)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_config):
    model = HfViTForImageClassification(tiny_config(num_labels=3)).train()
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    model(x, labels=y).loss.backward()
    plain = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    model.gradient_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in model.vit.encoder.layers)
    model(x, labels=y).loss.backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, plain[name], rtol=0, atol=1e-6, msg=name)


@pytest.mark.slow
def test_compile_fullgraph_has_no_graph_break(tiny_config):
    model = HfViTForImageClassification(tiny_config(num_labels=3, num_register_tokens=1)).eval()
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x).logits, model(x).logits, rtol=0, atol=1e-6)
        torch.testing.assert_close(compiled(torch.randn(2, 3, 48, 40)).logits.shape, torch.Size([2, 3]))


@pytest.mark.slow
def test_compile_with_inductor(tiny_config):
    model = HfViTForImageClassification(tiny_config(num_labels=3)).eval()
    compiled = torch.compile(model, fullgraph=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x).logits, model(x).logits, rtol=1e-5, atol=1e-5)


def test_single_label_loss_and_trainer_num_items_in_batch(tiny_config):
    model = HfViTForImageClassification(tiny_config(num_labels=4)).eval()
    x, y = torch.randn(3, 3, 32, 32), torch.tensor([0, 3, -100])
    out = model(x, labels=y)
    assert model.config.problem_type == "single_label_classification"
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, y, ignore_index=-100))
    # Trainer divides by the number of labelled items over the whole (accumulated) batch
    summed = model(x, labels=y, num_items_in_batch=torch.tensor(8)).loss
    torch.testing.assert_close(summed, F.cross_entropy(out.logits, y, reduction="sum") / 8)


def test_multi_label_and_regression_losses(tiny_config):
    x = torch.randn(3, 3, 32, 32)
    multi = HfViTForImageClassification(tiny_config(num_labels=4, problem_type="multi_label_classification")).eval()
    targets = torch.tensor([[1.0, 0, 1, 0], [0, 0, 0, 1], [1, 1, 1, 1]])
    out = multi(x, labels=targets)
    torch.testing.assert_close(out.loss, F.binary_cross_entropy_with_logits(out.logits, targets))
    regression = HfViTForImageClassification(tiny_config(num_labels=1)).eval()
    values = torch.tensor([0.5, -1.0, 2.0])
    out = regression(x, labels=values)
    assert regression.config.problem_type == "regression"
    torch.testing.assert_close(out.loss, F.mse_loss(out.logits.squeeze(), values))


def test_bf16_weights_and_autocast(tiny_config):
    model = HfViTForImageClassification(tiny_config(num_labels=3)).eval()
    x = torch.randn(2, 3, 40, 32)
    reference = model(x).logits
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (model(x).logits.float() - reference).abs().max() < 0.1
    model = model.to(torch.bfloat16)
    assert model(x).logits.dtype == torch.bfloat16  # float32 pixels are cast to the weights' dtype


def test_no_split_modules_for_device_map(tiny_config):
    from accelerate.utils import infer_auto_device_map

    model = HfViTForImageClassification(tiny_config())
    assert set(model._no_split_modules) == {"HfViTEmbeddings", "HfViTLayer"}
    # a memory budget that forces a split: blocks are placed whole, never cut inside
    device_map = infer_auto_device_map(
        model, max_memory={0: 40_000, "cpu": 10**9}, no_split_module_classes=list(model._no_split_modules)
    )
    assert set(device_map.values()) >= {"cpu"}
    for name in device_map:
        assert not name.startswith("vit.encoder.layers.0.") and not name.startswith("vit.embeddings."), name


def _ops_run(fn):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {event.name for event in prof.events()}


def test_onednn_linear_fast_path_only_for_fp32_cpu_inference(tiny_config, monkeypatch):
    from hf_vit import modeling_hf_vit

    if not modeling_hf_vit._ONEDNN_LINEAR_WORKS:
        pytest.skip("this torch build has no usable oneDNN linear; F.linear is used everywhere")
    monkeypatch.setattr(modeling_hf_vit, "_ONEDNN_LINEAR", True)  # whether or not this CPU is one where it pays off
    model = HfViTForImageClassification(tiny_config(num_labels=3)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fast = model(x).logits
        assert "mkldnn::_linear_pointwise" in _ops_run(lambda: model(x))
    assert "mkldnn::_linear_pointwise" not in _ops_run(lambda: model(x))  # autograd: the ordinary linear
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert "mkldnn::_linear_pointwise" not in _ops_run(lambda: model(x))
    torch.testing.assert_close(fast, model(x).logits, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_onednn_linear_can_be_turned_off_and_on():
    from helpers import run_python

    code = "import hf_vit.modeling_hf_vit as m, torch; print(m._ONEDNN_LINEAR, m._ONEDNN_LINEAR_WORKS)"
    off = run_python(code, env_extra={"HF_VIT_ONEDNN_LINEAR": "0"})
    assert off.returncode == 0, off.stderr
    assert off.stdout.split()[0] == "False"
    on = run_python(code, env_extra={"HF_VIT_ONEDNN_LINEAR": "1"})  # on any CPU, where the op works
    assert on.returncode == 0, on.stderr
    assert on.stdout.split()[0] == on.stdout.split()[1]
