"""Dense features: HfViTBackbone (AutoBackbone), HfViTModel.get_intermediate_layers, transformers' dense heads (DPT,
UperNet, Mask2Former) on an hf_vit backbone, and the image-feature-extraction pipeline."""

import importlib.util
import unittest
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY, max_diff, perturb, run_python
from PIL import Image
from transformers import (
    AutoBackbone,
    DPTConfig,
    DPTForDepthEstimation,
    UperNetConfig,
    UperNetForSemanticSegmentation,
    pipeline,
)

from hf_vit import HfViTBackbone, HfViTConfig, HfViTModel

DEEP = {**TINY, "num_hidden_layers": 4}  # four blocks: four stages for DPT's and UperNet's four-level necks
ALL_BLOCKS = [1, 2, 3, 4]


# ---- the backbone's stages and their validation --------------------------------------------------------------------
def test_auto_backbone_from_config_follows_transformers_backbone_conventions(tmp_path):
    backbone = AutoBackbone.from_config(HfViTConfig(**DEEP))
    assert type(backbone) is HfViTBackbone
    assert backbone.stage_names == ["stem", "stage1", "stage2", "stage3", "stage4"]
    assert (backbone.out_features, backbone.out_indices, backbone.channels) == (["stage4"], [4], [32])  # the last
    assert backbone.out_feature_channels == dict.fromkeys(backbone.stage_names, 32)

    config = HfViTConfig(**DEEP, out_features=["stem", "stage2"])
    assert config.out_indices == [0, 2]
    assert HfViTConfig(**DEEP, out_indices=[-2, -1]).out_features == ["stage3", "stage4"]
    config.save_pretrained(tmp_path)
    reloaded = HfViTConfig.from_pretrained(tmp_path)
    assert (reloaded.out_features, reloaded.out_indices) == (["stem", "stage2"], [0, 2])
    assert AutoBackbone.from_config(reloaded).channels == [32, 32]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(out_features=["stage5"]), r"out_features must be a subset of stage_names"),
        (dict(out_features="stage1"), r"out_features must be a list"),
        (dict(out_indices=[5]), r"out_indices must be valid indices for stage_names"),
        (dict(out_indices=[3, 1]), r"out_indices must be in the same order as stage_names"),
        (dict(out_features=["stage1"], out_indices=[2]), r"should correspond to the same stages"),
    ],
)
def test_invalid_out_features_or_out_indices_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HfViTConfig(**DEEP, **kwargs)


def test_out_indices_beyond_a_reduced_depth_are_refused_when_the_model_is_built():
    config = HfViTConfig(**DEEP, out_indices=[2, 4])
    config.num_hidden_layers = 2
    assert config.stage_names == ["stem", "stage1", "stage2"]
    with pytest.raises(ValueError, match=r"Invalid HfViTConfig: out_features must be a subset of stage_names"):
        HfViTBackbone(config)


class _BackboneTester:
    """What transformers' `BackboneTesterMixin` asks of a model tester: a tiny config with stages to pick from."""

    def prepare_config_and_inputs_for_common(self):
        config = HfViTConfig(**DEEP, out_features=["stage1", "stage2", "stage4"])
        return config, {"pixel_values": torch.rand(2, 3, 32, 32)}


def test_transformers_own_backbone_tests_pass(request, tmp_path_factory):
    """transformers' `BackboneTesterMixin` (tests/test_backbone_common.py of the installed release's source
    distribution, fetched as tests/test_transformers_common.py does) run against HfViTBackbone."""
    from test_transformers_common import _transformers_tests_root

    cache = getattr(request.config, "cache", None)
    cache_dir = Path(cache.mkdir("hf_vit-transformers-tests") if cache else tmp_path_factory.mktemp("tf-tests"))
    path = _transformers_tests_root(cache_dir) / "tests" / "test_backbone_common.py"
    spec = importlib.util.spec_from_file_location("transformers_test_backbone_common", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    class HfViTBackboneTest(module.BackboneTesterMixin, unittest.TestCase):
        all_model_classes = (HfViTBackbone,)
        config_class = HfViTConfig

        def setUp(self):
            self.model_tester = _BackboneTester()

    result = unittest.TestResult()
    unittest.TestLoader().loadTestsFromTestCase(HfViTBackboneTest).run(result)
    assert result.testsRun >= 8 and not result.skipped, (result.testsRun, result.skipped)
    assert not result.errors and not result.failures, "\n".join(text for _, text in result.errors + result.failures)


def test_a_saved_config_file_trains_at_another_depth(tmp_path):
    """A model's config.json names the backbone stages of its own depth; another depth drops them."""
    from hf_vit.model_setup import build_model

    HfViTConfig(**DEEP).save_pretrained(tmp_path)  # out_features ["stage4"]
    model, _ = build_model(
        {0: "a", 1: "b"}, config_file=str(tmp_path / "config.json"), config_overrides={"num_hidden_layers": 2}
    )
    assert model.config.num_hidden_layers == 2 and model.config.out_features == ["stage2"]


# ---- feature maps --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("registers", [0, 2])
def test_feature_maps_are_the_normed_patch_tokens_on_the_patch_grid(registers):
    config = HfViTConfig(**TINY, num_register_tokens=registers, out_features=["stem", "stage1", "stage2"])
    backbone = perturb(HfViTBackbone(config))
    x = torch.randn(2, 3, 40, 24)  # not the trained 32x32, not square: a 5x3 grid
    with torch.no_grad():
        maps = backbone(x).feature_maps
        hidden_states = backbone.vit(x, output_hidden_states=True).hidden_states
    assert [tuple(m.shape) for m in maps] == [(2, 32, 5, 3)] * 3
    for feature_map, hidden_state in zip(maps, hidden_states, strict=True):
        normed = backbone.vit.layernorm(hidden_state)
        for row in range(5):
            for column in range(3):  # patch tokens in row-major order, after [CLS] and the registers
                token = normed[:, 1 + registers + row * 3 + column]
                torch.testing.assert_close(feature_map[:, :, row, column], token, rtol=0, atol=0)


def test_token_feature_maps_without_layernorm_and_optional_outputs():
    config = HfViTConfig(
        **TINY, num_register_tokens=2, out_indices=[1, 2], reshape_hidden_states=False, apply_layernorm=False
    )
    backbone = perturb(HfViTBackbone(config))
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        outputs = backbone(x, output_hidden_states=True, output_attentions=True)
        plain = backbone(x)
        as_tuple = backbone(x, return_dict=False)
    assert len(outputs.hidden_states) == 3 and len(outputs.attentions) == 2
    assert plain.hidden_states is None and plain.attentions is None
    for feature_map, hidden_state in zip(outputs.feature_maps, outputs.hidden_states[1:], strict=True):
        assert feature_map.shape == (2, 1 + 4 * 6, 32)  # [CLS] + patches, as DPT's neck reads them
        torch.testing.assert_close(feature_map, torch.cat((hidden_state[:, :1], hidden_state[:, 3:]), dim=1))
    for a, b in zip(as_tuple[0], plain.feature_maps, strict=True):
        assert torch.equal(a, b)
    backbone.config.apply_layernorm = True
    with torch.no_grad():
        normed = backbone(x).feature_maps[0]
    torch.testing.assert_close(normed, backbone.vit.layernorm(plain.feature_maps[0]))
    assert max_diff(normed, plain.feature_maps[0]) > 0.1


# ---- get_intermediate_layers ---------------------------------------------------------------------------------------
def test_get_intermediate_layers_has_dinov2_semantics_and_matches_the_backbone():
    model = perturb(HfViTModel(HfViTConfig(**DEEP, num_register_tokens=1)))
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        hidden_states = model(x, output_hidden_states=True).hidden_states
        last_two = model.get_intermediate_layers(x, n=2)
        picked = model.get_intermediate_layers(x, n=[0, -1], reshape=True, return_class_token=True, norm=False)
        all_maps = model.get_intermediate_layers(x, n=4, reshape=True)
    # n=2: the last two blocks, normed, [CLS] and the register removed
    assert len(last_two) == 2
    for features, hidden_state in zip(last_two, hidden_states[3:], strict=True):
        assert features.shape == (2, 24, 32)
        torch.testing.assert_close(features, model.layernorm(hidden_state)[:, 2:], rtol=0, atol=0)
    # a list of blocks, reshaped to (B, D, h, w), with the class token, not normed
    (first, first_cls), (last, last_cls) = picked
    assert first.shape == last.shape == (2, 32, 4, 6)
    torch.testing.assert_close(first_cls, hidden_states[1][:, 0], rtol=0, atol=0)
    torch.testing.assert_close(last_cls, hidden_states[4][:, 0], rtol=0, atol=0)
    torch.testing.assert_close(first.flatten(2).transpose(1, 2), hidden_states[1][:, 2:], rtol=0, atol=0)
    torch.testing.assert_close(last.flatten(2).transpose(1, 2), hidden_states[4][:, 2:], rtol=0, atol=0)
    # the backbone on the same weights returns the same maps
    backbone = HfViTBackbone(HfViTConfig(**DEEP, num_register_tokens=1, out_indices=ALL_BLOCKS)).eval()
    backbone.vit.load_state_dict(model.state_dict())
    with torch.no_grad():
        maps = backbone(x).feature_maps
    for a, b in zip(maps, all_maps, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("n", [0, 5, True, [4], [-5], [], "1", [1.0]])
def test_get_intermediate_layers_refuses_blocks_the_model_does_not_have(n):
    model = HfViTModel(HfViTConfig(**DEEP))
    with pytest.raises(ValueError, match=r"n must be .* \(the model has 4 blocks\), got"):
        model.get_intermediate_layers(torch.zeros(1, 3, 32, 32), n=n)


# ---- transformers' dense heads -------------------------------------------------------------------------------------
def _dpt(backbone_config):
    # DPT reads [CLS] + patch tokens (reshape_hidden_states=False) at stride P; with P=8 these factors bring the four
    # maps to strides 4, 8, 16, 32, and the depth comes out at the input size
    return DPTForDepthEstimation(
        DPTConfig(
            backbone_config=backbone_config,
            neck_hidden_sizes=[8, 16, 32, 32],
            reassemble_factors=[2, 1, 0.5, 0.25],
            fusion_hidden_size=16,
            head_hidden_size=8,
        )
    )


def _upernet(backbone_config):
    return UperNetForSemanticSegmentation(
        UperNetConfig(
            backbone_config=backbone_config, hidden_size=16, auxiliary_channels=8, pool_scales=[1, 2], num_labels=3
        )
    )


HEADS = {
    "dpt": (_dpt, DPTForDepthEstimation, {"reshape_hidden_states": False}),
    "upernet": (_upernet, UperNetForSemanticSegmentation, {}),
}


def _batch():
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.rand(2, 3, 32, 32, generator=generator)
    depth = pixel_values.mean(dim=1)  # something to learn: brightness as depth
    classes = (pixel_values[:, 0] > 0.5).long() + (pixel_values[:, 1] > 0.5).long()
    return pixel_values, depth, classes


def _step_losses(model, steps=3, lr=2e-3):
    pixel_values, depth, classes = _batch()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        if isinstance(model, DPTForDepthEstimation):  # DPT computes no loss itself ("not implemented")
            predicted = model(pixel_values=pixel_values).predicted_depth
            assert predicted.shape == depth.shape
            loss = torch.nn.functional.l1_loss(predicted, depth)
        else:
            outputs = model(pixel_values=pixel_values, labels=classes)
            assert outputs.logits.shape == (2, 3, 32, 32)
            loss = outputs.loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def _output(model, pixel_values):
    with torch.no_grad():
        outputs = model.eval()(pixel_values=pixel_values)
    return outputs.predicted_depth if isinstance(model, DPTForDepthEstimation) else outputs.logits


@pytest.mark.parametrize("source", ["backbone_config", "backbone_folder"])
@pytest.mark.parametrize("head", list(HEADS))
def test_dense_head_on_an_hf_vit_backbone_trains_saves_and_reloads(tmp_path, head, source):
    build, head_class, backbone_settings = HEADS[head]
    torch.manual_seed(0)
    if source == "backbone_config":
        model = build(HfViTConfig(**DEEP, out_indices=ALL_BLOCKS, **backbone_settings))
    else:
        # a plain hf_vit checkpoint (trained, converted from DINOv2, ...) as the backbone: transformers 5 builds a
        # head's backbone from its config only (`backbone=<folder>` goes to the Hub), so its weights are loaded after
        pretrained = perturb(HfViTModel(HfViTConfig(**DEEP)))
        pretrained.save_pretrained(tmp_path / "backbone")
        backbone = HfViTBackbone.from_pretrained(tmp_path / "backbone", out_indices=ALL_BLOCKS, **backbone_settings)
        assert backbone.out_indices == ALL_BLOCKS
        model = build(backbone.config)
        model.backbone.load_state_dict(backbone.state_dict())
        for name, tensor in pretrained.state_dict().items():
            assert torch.equal(model.backbone.vit.state_dict()[name], tensor), name
    assert type(model.backbone) is HfViTBackbone

    losses = _step_losses(model)
    assert losses[-1] < losses[0], losses

    x = _batch()[0]
    model.save_pretrained(tmp_path / head)
    reloaded = head_class.from_pretrained(tmp_path / head)
    assert type(reloaded.backbone) is HfViTBackbone and reloaded.config.backbone_config.model_type == "hf_vit"
    assert reloaded.config.backbone_config.out_indices == ALL_BLOCKS
    saved, loaded = model.state_dict(), reloaded.state_dict()
    assert saved.keys() == loaded.keys()
    for name, tensor in saved.items():
        assert torch.equal(loaded[name], tensor), name
    # the same weights; the outputs agree to float32 rounding (UperNet's convolutions may pick another kernel for
    # a reloaded module's memory layout, so bitwise equality of outputs depends on the thread count)
    torch.testing.assert_close(_output(reloaded, x), _output(model, x), rtol=0, atol=1e-6)
    wide = torch.rand(1, 3, 32, 64)  # any size divisible by the patch size
    assert _output(model, wide).shape[-2:] == (32, 64)


def test_mask2former_runs_on_a_single_scale_vit_backbone():
    """Mask2Former names only Swin as supported and warns; with a plain ViT all four levels have stride P (no
    pyramid), so masks come out at 1/P of the input. It builds, runs and trains; for real use a multi-scale neck
    (ViTDet's simple feature pyramid) would belong between backbone and head."""
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation

    torch.manual_seed(0)
    config = Mask2FormerConfig(
        backbone_config=HfViTConfig(**DEEP, out_indices=ALL_BLOCKS),
        feature_size=32,
        mask_feature_size=32,
        hidden_dim=32,
        encoder_feedforward_dim=64,
        dim_feedforward=64,
        encoder_layers=1,
        decoder_layers=2,
        num_attention_heads=4,
        num_queries=5,
        num_labels=3,
        train_num_points=64,
    )
    model = Mask2FormerForUniversalSegmentation(config)
    assert type(model.model.pixel_level_module.encoder) is HfViTBackbone
    pixel_values = _batch()[0]
    foreground = (pixel_values[:, 0] > 0.5).float()
    mask_labels = [torch.stack((f, 1 - f)) for f in foreground]
    class_labels = [torch.tensor([0, 1])] * 2
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(3):
        torch.manual_seed(1)  # the same sampled points each step
        outputs = model(pixel_values=pixel_values, mask_labels=mask_labels, class_labels=class_labels)
        optimizer.zero_grad()
        outputs.loss.backward()
        optimizer.step()
        losses.append(outputs.loss.item())
    assert outputs.masks_queries_logits.shape == (2, 5, 4, 4)  # stride 8 = the patch size
    assert losses[-1] < losses[0], losses


# ---- DINOv2: the converted checkpoint as a backbone = transformers' Dinov2Backbone ----------------------------------
@pytest.mark.parametrize("registers", [False, True])
def test_converted_dinov2_as_backbone_matches_transformers_dinov2_backbone(tmp_path, registers):
    import transformers

    from hf_vit.convert import convert_dinov2_folder

    torch.manual_seed(0)
    shape = dict(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=4, image_size=32, patch_size=8, layerscale_value=0.1
    )
    if registers:
        source = transformers.Dinov2WithRegistersModel(
            transformers.Dinov2WithRegistersConfig(num_register_tokens=4, **shape)
        )
        reference_class = transformers.Dinov2WithRegistersBackbone
    else:
        source = transformers.Dinov2Model(transformers.Dinov2Config(**shape))
        reference_class = transformers.Dinov2Backbone
    perturb(source).save_pretrained(tmp_path / "dinov2")
    convert_dinov2_folder(tmp_path / "dinov2").model.save_pretrained(tmp_path / "hf_vit")

    settings = dict(out_indices=[0, 1, 3], apply_layernorm=True, reshape_hidden_states=True)
    theirs = reference_class.from_pretrained(tmp_path / "dinov2", **settings).eval()
    ours = HfViTBackbone.from_pretrained(tmp_path / "hf_vit", **settings).eval()
    assert ours.config.num_register_tokens == (4 if registers else 0)
    for size in [(32, 32), (40, 24)]:
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            expected, got = theirs(x).feature_maps, ours(x).feature_maps
        assert len(got) == len(expected) == 3
        for a, b in zip(got, expected, strict=True):
            assert a.shape == b.shape == (2, 32, size[0] // 8, size[1] // 8)
            print(f"DINOv2{' with registers' if registers else ''} backbone {size}: max-abs-diff {max_diff(a, b):.2e}")
            assert max_diff(a, b) <= 1e-5


# ---- loading without hf_vit; the pipeline ---------------------------------------------------------------------------
REMOTE_BACKBONE = r"""
import sys
sys.modules["hf_vit"] = None  # make `import hf_vit` fail in this process
try:
    import hf_vit
except ImportError:
    pass
else:
    raise SystemExit("hf_vit is importable")
import torch
from transformers import AutoConfig
from transformers.dynamic_module_utils import get_class_from_dynamic_module
folder = sys.argv[1]
# AutoBackbone.from_pretrained(folder) asks the Hub whether `folder` is a repo (transformers 5.x), so a local folder
# loads through the class its auto_map names
config = AutoConfig.from_pretrained(folder, trust_remote_code=True, out_indices=[1, 2])
backbone_class = get_class_from_dynamic_module(config.auto_map["AutoBackbone"], folder)
backbone = backbone_class.from_pretrained(folder, config=config).eval()
with torch.no_grad():
    maps = backbone(torch.load(folder + "/x.pt")).feature_maps
torch.save(maps, folder + "/remote.pt")
print(backbone_class.__module__, backbone_class.__name__)
"""


@pytest.mark.slow
def test_saved_backbone_loads_with_remote_code_without_hf_vit(tmp_path):
    folder = tmp_path / "backbone"
    backbone = perturb(HfViTBackbone(HfViTConfig(**TINY, out_indices=[1, 2])))
    backbone.save_pretrained(folder)
    x = torch.randn(1, 3, 32, 48)
    torch.save(x, folder / "x.pt")
    hf_home = tmp_path / "hf_home"
    hf_home.mkdir()
    result = run_python(
        ["-c", REMOTE_BACKBONE, str(folder)], env_extra={"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}, cwd=hf_home
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "transformers_modules" in result.stdout and "HfViTBackbone" in result.stdout
    with torch.no_grad():
        expected = backbone(x).feature_maps
    for a, b in zip(torch.load(folder / "remote.pt"), expected, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    plain = HfViTModel.from_pretrained(folder)  # a saved backbone is an hf_vit checkpoint like any other
    for name, tensor in backbone.vit.state_dict().items():
        assert torch.equal(plain.state_dict()[name], tensor), name


def test_image_feature_extraction_pipeline_gives_image_and_patch_features(tmp_path):
    model = perturb(HfViTModel(HfViTConfig(**TINY, num_register_tokens=1)))
    model.save_pretrained(tmp_path)
    extract = pipeline("image-feature-extraction", model=str(tmp_path))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8))
    tokens = extract(image, return_tensors=True)
    pooled = extract(image, pool=True, return_tensors=True)
    pixel_values = extract.image_processor(image, return_tensors="pt").pixel_values
    with torch.no_grad():
        outputs = model(pixel_values)
        patches = model.get_intermediate_layers(pixel_values)[0]
    assert tokens.shape == (1, 1 + 1 + 16, 32) and pooled.shape == (1, 32)
    torch.testing.assert_close(tokens, outputs.last_hidden_state)
    torch.testing.assert_close(pooled, outputs.pooler_output)
    torch.testing.assert_close(tokens[:, 2:], patches)  # patch features: the tokens after [CLS] and the registers
