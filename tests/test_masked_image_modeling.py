"""Masked image modeling: HfViTForMaskedImageModeling against transformers' ViTForMaskedImageModeling (random tiny
weights, converted with hf_vit's converter), its loss on non-square inputs, training, saving and the Auto class."""

import json

import pytest
import torch
from helpers import max_diff, perturb, run_python
from safetensors.torch import load_file
from transformers import AutoModelForMaskedImageModeling, ViTConfig, ViTForMaskedImageModeling, ViTModel

from hf_vit import HfViTConfig, HfViTForMaskedImageModeling, HfViTModel
from hf_vit.convert import convert_checkpoint, export_to_transformers, from_transformers

TOL = 1e-5
SHAPE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32)


def random_mask(batch, patches, seed=0):
    return torch.rand(batch, patches, generator=torch.Generator().manual_seed(seed)) < 0.5


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A transformers ViTForMaskedImageModeling saved to disk (v4 names, as save_pretrained writes them), converted
    with hf_vit's converter (verify=True: its checkerboard-mask loss and reconstruction against transformers)."""
    torch.manual_seed(0)
    source = perturb(ViTForMaskedImageModeling(ViTConfig(patch_size=8, encoder_stride=8, **SHAPE)))
    folder = tmp_path_factory.mktemp("mim")
    source.save_pretrained(folder / "transformers")
    result = convert_checkpoint("transformers", folder / "transformers", folder / "hf_vit", verify=True)
    return source, result, folder


def test_converted_checkpoint_matches_transformers(converted):
    source, result, folder = converted
    assert result["max_abs_diff"] <= TOL
    saved = load_file(folder / "transformers" / "model.safetensors")
    assert saved["vit.embeddings.mask_token"].shape == (1, 1, 32) and "decoder.0.weight" in saved
    ours = AutoModelForMaskedImageModeling.from_pretrained(folder / "hf_vit").eval()  # no remote code: registered
    assert type(ours) is HfViTForMaskedImageModeling
    assert ours.config.use_mask_token and ours.config.encoder_stride == 8
    assert ours.vit.embeddings.mask_token.shape == (1, 32)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    mask = random_mask(2, 16)
    with torch.no_grad():
        theirs, mine = source(x, bool_masked_pos=mask), ours(x, bool_masked_pos=mask)
        loss_diff = abs(mine.loss.item() - theirs.loss.item())
        reconstruction_diff = max_diff(mine.reconstruction, theirs.reconstruction)
        print(f"MIM 32x32: |loss diff| {loss_diff:.2e}, reconstruction max-abs-diff {reconstruction_diff:.2e}")
        assert loss_diff <= TOL and reconstruction_diff <= TOL
        assert mine.reconstruction.shape == x.shape
        # the mask token and the mask matter: another mask gives another loss and reconstruction
        other = ours(x, bool_masked_pos=random_mask(2, 16, seed=1))
        assert abs(other.loss.item() - mine.loss.item()) > 1e-3
        assert max_diff(ours(x).reconstruction, mine.reconstruction) > 1e-3
        # another square size (transformers' MIM head only reshapes square grids): positions interpolated alike
        x48 = torch.randn(2, 3, 48, 48)
        big = max_diff(ours(x48).reconstruction, source(x48, interpolate_pos_encoding=True).reconstruction)
        print(f"MIM 48x48, interpolated positions: reconstruction {big:.2e}")
        assert big <= TOL


def test_in_memory_conversion_v5_names_and_vitmodel_mask_token_kept():
    torch.manual_seed(1)
    source = perturb(ViTForMaskedImageModeling(ViTConfig(patch_size=8, encoder_stride=8, **SHAPE)))
    ours = from_transformers(source)
    assert type(ours) is HfViTForMaskedImageModeling
    x, mask = torch.randn(2, 3, 32, 32), random_mask(2, 16, seed=2)
    with torch.no_grad():
        assert abs(ours(x, bool_masked_pos=mask).loss.item() - source(x, bool_masked_pos=mask).loss.item()) <= TOL
    # a ViTModel built with a mask token keeps it (before, the converter dropped it)
    base = perturb(ViTModel(ViTConfig(patch_size=8, **SHAPE), add_pooling_layer=False, use_mask_token=True))
    ours = from_transformers(base)
    assert type(ours) is HfViTModel and ours.config.use_mask_token
    with torch.no_grad():
        assert max_diff(ours(x, bool_masked_pos=mask).last_hidden_state, base(x, bool_masked_pos=mask)[0]) <= TOL


def test_mask_token_replaces_patches_before_positions_are_added(tiny_config):
    """transformers' ViT and DINOv2 both swap the patch embedding for the mask token, then add the positions."""
    model = HfViTModel(tiny_config(use_mask_token=True)).eval()
    embeddings = model.embeddings
    with torch.no_grad():
        embeddings.mask_token.normal_()
    x, mask = torch.randn(1, 3, 32, 32), torch.zeros(1, 16, dtype=torch.bool)
    mask[0, 5] = True
    with torch.no_grad():
        out = embeddings(x, bool_masked_pos=mask)
        plain = embeddings(x)
    positions = embeddings.position_embeddings[0]
    torch.testing.assert_close(out[0, 1 + 5], embeddings.mask_token[0] + positions[1 + 5])
    keep = [i for i in range(17) if i != 6]
    torch.testing.assert_close(out[0, keep], plain[0, keep], rtol=0, atol=0)


def test_loss_on_a_non_square_input_is_the_mean_l1_over_the_masked_patch(tiny_config):
    model = HfViTForMaskedImageModeling(tiny_config(num_register_tokens=2)).eval()
    x = torch.randn(1, 3, 32, 48)  # a 4x6 patch grid
    mask = torch.zeros(1, 24, dtype=torch.bool)
    mask[0, 1 * 6 + 4] = True  # row 1, column 4: pixels 8..15 x 32..39
    with torch.no_grad():
        out = model(x, bool_masked_pos=mask)
    assert out.reconstruction.shape == (1, 3, 32, 48)
    expected = (x - out.reconstruction)[..., 8:16, 32:40].abs().mean()
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=0)
    # the tuple form: (loss, reconstruction)
    loss, reconstruction = model(x, bool_masked_pos=mask, return_dict=False)
    torch.testing.assert_close(loss, out.loss, rtol=0, atol=0)
    assert model(x).loss is None


@pytest.mark.slow
def test_training_lowers_the_loss(tiny_config):
    torch.manual_seed(0)
    model = HfViTForMaskedImageModeling(tiny_config()).train()
    # one random colour per image: what lies under a masked patch is what the visible patches show
    images = torch.randn(16, 3, 1, 1).expand(16, 3, 32, 32).contiguous()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(30):
        mask = torch.rand(16, 16, generator=generator) < 0.5
        loss = model(images, bool_masked_pos=mask).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    print(f"MIM training: loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5
    assert model.vit.embeddings.mask_token.grad.abs().sum() > 0  # the mask token learns


def test_mask_token_is_switched_on_and_the_callers_config_left_alone(tiny_config, tmp_path):
    config = tiny_config()
    assert not config.use_mask_token and config.encoder_stride == config.patch_size == 8
    model = HfViTForMaskedImageModeling(config)
    assert model.config.use_mask_token and not config.use_mask_token
    assert model.vit.embeddings.mask_token is not None
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["use_mask_token"] is True and saved["encoder_stride"] == 8
    assert saved["auto_map"]["AutoModelForMaskedImageModeling"] == "modeling_hf_vit.HfViTForMaskedImageModeling"
    # the decoder's width follows encoder_stride; without a mask any stride runs
    wide = HfViTForMaskedImageModeling(tiny_config(encoder_stride=4)).eval()
    assert wide(torch.randn(1, 3, 32, 32)).reconstruction.shape == (1, 3, 16, 16)


def test_mistakes_are_refused_with_a_clear_message(tiny_config):
    x = torch.randn(1, 3, 32, 32)
    mask = torch.ones(1, 16, dtype=torch.bool)
    with pytest.raises(ValueError, match="needs a mask token: build the model with config.use_mask_token=True"):
        HfViTModel(tiny_config())(x, bool_masked_pos=mask)
    with pytest.raises(ValueError, match=r"encoder_stride \(4\) equal to config.patch_size \(8\)"):
        HfViTForMaskedImageModeling(tiny_config(encoder_stride=4))(x, bool_masked_pos=mask)
    with pytest.raises(ValueError, match=r"bool_masked_pos must have shape \(batch, patches\) = \(1, 16\)"):
        HfViTForMaskedImageModeling(tiny_config())(x, bool_masked_pos=torch.ones(1, 17, dtype=torch.bool))
    with pytest.raises(ValueError, match="encoder_stride must be a positive integer"):
        HfViTConfig(encoder_stride=0).check_values()


def test_a_mask_that_is_not_boolean_or_0_1_is_refused_and_export_still_works(tiny_config):
    """A forgotten `< ratio` (a float mask) would mask every patch while weighting the loss by the floats."""
    model = HfViTForMaskedImageModeling(tiny_config()).eval()
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="must be a boolean .or 0/1 integer. tensor, got torch.float32"):
        model(x, bool_masked_pos=torch.rand(1, 16))
    with pytest.raises(ValueError, match="must hold only 0 and 1"):
        model(x, bool_masked_pos=torch.full((1, 16), 2))
    mask = random_mask(1, 16)
    expected = model(x, bool_masked_pos=mask).loss
    assert model(x, bool_masked_pos=mask.long()).loss == expected  # 0/1 integers are a mask too
    exported = torch.export.export(model, (x,), {"bool_masked_pos": mask.long()})  # the check leaves no graph break
    torch.testing.assert_close(exported.module()(x, bool_masked_pos=mask.long()).loss, expected)


REMOTE_CODE = r"""
import sys
sys.modules["hf_vit"] = None  # make `import hf_vit` fail in this process
import torch
from transformers import AutoModelForMaskedImageModeling
folder = sys.argv[1]
model = AutoModelForMaskedImageModeling.from_pretrained(folder, trust_remote_code=True).eval()
x, mask = torch.load(folder + "/x.pt")
with torch.no_grad():
    out = model(x, bool_masked_pos=mask)
torch.save({"loss": out.loss, "reconstruction": out.reconstruction}, folder + "/remote.pt")
print(type(model).__module__, type(model).__name__)
"""


@pytest.mark.slow
def test_save_reload_in_process_and_as_remote_code(converted, tmp_path_factory):
    _, result, folder = converted
    model = result["model"].eval()
    x, mask = torch.randn(2, 3, 32, 40), random_mask(2, 20, seed=3)
    torch.save((x, mask), folder / "hf_vit" / "x.pt")
    hf_home = tmp_path_factory.mktemp("hf_home")
    remote = run_python(
        ["-c", REMOTE_CODE, str(folder / "hf_vit")], env_extra={"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    )
    assert remote.returncode == 0, remote.stderr[-3000:]
    assert "transformers_modules" in remote.stdout and "HfViTForMaskedImageModeling" in remote.stdout
    outputs = torch.load(folder / "hf_vit" / "remote.pt")
    with torch.no_grad():
        mine = model(x, bool_masked_pos=mask)
    torch.testing.assert_close(outputs["loss"], mine.loss, rtol=0, atol=0)
    torch.testing.assert_close(outputs["reconstruction"], mine.reconstruction, rtol=0, atol=0)


def test_export_writes_the_encoder_as_a_backbone(converted):
    _, _, folder = converted
    result = export_to_transformers(folder / "hf_vit", folder / "exported", verify=True)
    assert result["max_abs_diff"] <= TOL
    assert any("decoder is left out" in note for note in result["notes"])
    assert json.loads((folder / "exported" / "config.json").read_text())["architectures"] == ["ViTModel"]
