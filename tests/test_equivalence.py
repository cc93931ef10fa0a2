"""hf_vit against the peers' own code: random-weight timm / transformers models, converted, same forward (fp32)."""

import pytest
import timm
import torch
from helpers import max_diff, perturb
from transformers import ViTConfig, ViTForImageClassification, ViTModel

from hf_vit import HfViTForImageClassification, HfViTModel
from hf_vit.convert import from_timm, from_transformers

TOL = 1e-5
SIZES = [(224, 224), (320, 256)]


@pytest.fixture(scope="module")
def timm_token():
    torch.manual_seed(0)
    return perturb(timm.create_model("vit_small_patch16_224", pretrained=False, dynamic_img_size=True, num_classes=10))


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES)
def test_timm_vit_small_avg_pooling(size):
    torch.manual_seed(1)
    source = perturb(
        timm.create_model(
            "vit_small_patch16_224", pretrained=False, dynamic_img_size=True, global_pool="avg", num_classes=7
        )
    )
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
    source = perturb(
        timm.create_model(
            "vit_small_patch16_224",
            pretrained=False,
            depth=2,
            reg_tokens=4,
            no_embed_class=True,
            init_values=1e-1,
            dynamic_img_size=True,
            num_classes=5,
        )
    )
    ours = from_timm(source)
    cfg = ours.config
    assert cfg.num_register_tokens == 4 and not cfg.cls_position_embedding and cfg.layerscale_init is not None
    for size in SIZES:
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            assert max_diff(ours.vit(x).last_hidden_state, source.forward_features(x)) <= TOL
            assert max_diff(ours(x).logits, source(x)) <= TOL


def test_timm_features_hf_vit_lacks_are_refused():
    source = timm.create_model("vit_small_patch16_224", pretrained=False, depth=1, scale_attn_norm=True)
    with pytest.raises(ValueError, match="normalisation inside attention"):
        from_timm(source)
    source = timm.create_model("vit_small_patch16_224", pretrained=False, depth=1, global_pool="avgmax")
    with pytest.raises(ValueError, match="global_pool='avgmax'"):
        from_timm(source)


@pytest.fixture(scope="module")
def transformers_vit_small():
    torch.manual_seed(4)
    config = ViTConfig(
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        intermediate_size=1536,
        num_labels=10,
        layer_norm_eps=1e-12,
    )
    return perturb(ViTForImageClassification(config))


@pytest.mark.slow
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
        assert (
            max_diff(
                ours.vit(x).last_hidden_state, source.vit(x, interpolate_pos_encoding=interpolate).last_hidden_state
            )
            <= TOL
        )
        for ours_h, theirs_h in zip(got.hidden_states, expected.hidden_states, strict=True):
            assert max_diff(ours_h, theirs_h) <= TOL


def test_transformers_base_model_drops_only_the_pooler():
    torch.manual_seed(5)
    config = ViTConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=32, patch_size=8
    )
    source = perturb(ViTModel(config))
    ours = from_transformers(source)
    assert isinstance(ours, HfViTModel)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert max_diff(ours(x).last_hidden_state, source(x).last_hidden_state) <= TOL


# ---- DINOv2 (transformers' Dinov2Model / Dinov2WithRegistersModel), ViT-S/14 width, 4 blocks ---------------------
DINOV2_SIZES = [(224, 224), (168, 252)]


@pytest.fixture(scope="module", params=["mlp", "swiglu", "registers"])
def dinov2_pair(request):
    from transformers import (
        Dinov2Config,
        Dinov2Model,
        Dinov2WithRegistersConfig,
        Dinov2WithRegistersModel,
    )

    from hf_vit.convert import from_dinov2

    torch.manual_seed(3)
    shape = dict(
        hidden_size=384, num_hidden_layers=4, num_attention_heads=6, image_size=224, patch_size=14, layerscale_value=0.1
    )
    if request.param == "registers":
        source = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(num_register_tokens=4, **shape))
    else:
        source = Dinov2Model(Dinov2Config(use_swiglu_ffn=request.param == "swiglu", **shape))
    source = perturb(source)
    return request.param, source, from_dinov2(source)


@pytest.mark.parametrize("size", DINOV2_SIZES)
def test_dinov2_matches_transformers(dinov2_pair, size):
    variant, source, ours = dinov2_pair
    assert isinstance(ours, HfViTModel) and ours.config.use_mask_token
    assert ours.config.mlp_type == ("swiglu" if variant == "swiglu" else "mlp")
    assert ours.config.num_register_tokens == (4 if variant == "registers" else 0)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        theirs, mine = source(x), ours(x)
    print(
        f"DINOv2 {variant} {size[0]}x{size[1]}: "
        f"max-abs-diff {max_diff(mine.last_hidden_state, theirs.last_hidden_state):.2e}"
    )
    assert max_diff(mine.last_hidden_state, theirs.last_hidden_state) <= TOL
    assert max_diff(mine.pooler_output, theirs.pooler_output) <= TOL


def test_dinov2_mask_token_matches_transformers(dinov2_pair):
    _, source, ours = dinov2_pair
    x = torch.randn(2, 3, 224, 224)
    mask = torch.rand(2, 256, generator=torch.Generator().manual_seed(0)) < 0.4
    with torch.no_grad():
        theirs, mine = source(x, bool_masked_pos=mask), ours(x, bool_masked_pos=mask)
        assert max_diff(mine.last_hidden_state, theirs.last_hidden_state) <= TOL
        assert max_diff(mine.last_hidden_state, ours(x).last_hidden_state) > 1e-3  # the mask token did something


def test_timm_swiglu_packed_matches_timm():
    """timm's SwiGLUPacked MLP (vit_giant_patch14_dinov2's), at a small width."""
    from timm.layers import SwiGLUPacked

    torch.manual_seed(4)
    source = perturb(
        timm.create_model(
            "vit_small_patch14_dinov2",
            pretrained=False,
            img_size=56,
            depth=2,
            mlp_layer=SwiGLUPacked,
            act_layer=torch.nn.SiLU,
            mlp_ratio=2.66667 * 2,
            num_classes=5,
            dynamic_img_size=True,
        )
    )
    ours = from_timm(source)
    assert (
        ours.config.mlp_type == "swiglu" and ours.config.intermediate_size * 2 == source.blocks[0].mlp.fc1.out_features
    )
    for size in [(56, 56), (42, 70)]:
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            assert max_diff(ours(x).logits, source(x)) <= TOL
