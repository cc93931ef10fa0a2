"""hf_vit against the peers' own code: random-weight timm / transformers models, converted, same forward (fp32)."""

import pytest
import timm
import torch
from transformers import ViTConfig, ViTForImageClassification, ViTModel

from hf_vit import HfViTForImageClassification, HfViTModel
from hf_vit.convert import from_timm, from_transformers

TOL = 1e-5
SIZES = [(224, 224), (320, 256)]


def max_diff(a, b):
    return (a - b).abs().max().item()


def perturb(model):
    """Random weights everywhere (biases, LayerNorms, tokens too), so no parameter hides behind its default init."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model.eval()


@pytest.fixture(scope="module")
def timm_token():
    torch.manual_seed(0)
    return perturb(timm.create_model("vit_small_patch16_224", pretrained=False, dynamic_img_size=True, num_classes=10))


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("size", SIZES)
def test_timm_vit_small_token_pooling(timm_token, size, attn):
    ours = from_timm(timm_token)
    ours.set_attn_implementation(attn)
    assert isinstance(ours, HfViTForImageClassification) and ours.config.layer_norm_eps == 1e-6
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        features = timm_token.forward_features(x)
        out = ours(x)
        last = ours.vit(x).last_hidden_state
        assert max_diff(last, features) <= TOL
        assert max_diff(out.logits, timm_token(x)) <= TOL


@pytest.mark.parametrize("size", SIZES)
def test_timm_vit_small_avg_pooling(size):
    torch.manual_seed(1)
    source = perturb(timm.create_model("vit_small_patch16_224", pretrained=False, dynamic_img_size=True,
                                       global_pool="avg", num_classes=7))
    ours = from_timm(source)
    assert ours.config.pooling == "mean"
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        assert max_diff(ours.vit(x).last_hidden_state, source.forward_features(x)) <= TOL
        assert max_diff(ours(x).logits, source(x)) <= TOL


def test_timm_backbone_without_head_converts_to_the_base_model():
    torch.manual_seed(2)
    source = perturb(timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, depth=2))
    ours = from_timm(source)
    assert isinstance(ours, HfViTModel)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert max_diff(ours(x).pooler_output, source(x)) <= TOL


def test_timm_registers_layerscale_no_embed_class():
    torch.manual_seed(3)
    source = perturb(timm.create_model("vit_small_patch16_224", pretrained=False, depth=2, reg_tokens=4, no_embed_class=True,
                                       init_values=1e-1, dynamic_img_size=True, num_classes=5))
    ours = from_timm(source)
    cfg = ours.config
    assert cfg.num_register_tokens == 4 and not cfg.cls_position_embedding and cfg.layerscale_init is not None
    for size in SIZES:
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            assert max_diff(ours.vit(x).last_hidden_state, source.forward_features(x)) <= TOL
            assert max_diff(ours(x).logits, source(x)) <= TOL


def test_timm_features_hf_vit_lacks_are_refused():
    source = timm.create_model("vit_small_patch16_224", pretrained=False, depth=1, qk_norm=True)
    with pytest.raises(ValueError, match="normalisation inside attention"):
        from_timm(source)
    source = timm.create_model("vit_small_patch16_224", pretrained=False, depth=1, global_pool="map")
    with pytest.raises(ValueError, match="global_pool='map'"):
        from_timm(source)


@pytest.fixture(scope="module")
def transformers_vit_small():
    torch.manual_seed(4)
    config = ViTConfig(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                       num_labels=10, layer_norm_eps=1e-12)
    return perturb(ViTForImageClassification(config))


@pytest.mark.parametrize("size", SIZES)
def test_transformers_vit_small(transformers_vit_small, size):
    source = transformers_vit_small
    ours = from_transformers(source)
    assert ours.config.layer_norm_eps == 1e-12  # taken from the source
    assert ours.config.id2label == source.config.id2label
    x = torch.randn(2, 3, *size)
    interpolate = size != (224, 224)
    with torch.no_grad():
        expected = source(x, interpolate_pos_encoding=interpolate, output_hidden_states=True)
        got = ours(x, output_hidden_states=True)
        assert max_diff(got.logits, expected.logits) <= TOL
        assert max_diff(ours.vit(x).last_hidden_state, source.vit(x, interpolate_pos_encoding=interpolate).last_hidden_state) <= TOL
        for ours_h, theirs_h in zip(got.hidden_states, expected.hidden_states, strict=True):
            assert max_diff(ours_h, theirs_h) <= TOL


def test_transformers_base_model_drops_only_the_pooler():
    torch.manual_seed(5)
    config = ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                       image_size=32, patch_size=8)
    source = perturb(ViTModel(config))
    ours = from_transformers(source)
    assert isinstance(ours, HfViTModel)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert max_diff(ours(x).last_hidden_state, source(x).last_hidden_state) <= TOL
