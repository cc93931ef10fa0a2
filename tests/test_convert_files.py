"""File-based conversion against the source libraries' own forward passes; exports and round trips.

Sources are built here with random weights (no network): timm.create_model(pretrained=False), transformers'
ViTForImageClassification(config), and a vit_jax / big_vision .npz written from a random timm model and read back
by timm's own npz loader as the reference.
"""

import json
import re

import numpy as np
import pytest
import timm
import torch
from helpers import max_diff, perturb
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from timm.models.vision_transformer import _load_weights
from transformers import AutoModelForImageClassification, ViTConfig, ViTForImageClassification

from hf_vit import HfViTForImageClassification, HfViTModel
from hf_vit.convert import (
    convert_checkpoint,
    export_safetensors,
    export_to_timm,
    export_to_transformers,
    load_hf_vit_folder,
)

TOL = 1e-5


def batch(size=224, n=2):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def logits_of_folder(folder, x):
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(x).logits


# ---------------------------------------------------------------------------------------------------------------
# timm
# ---------------------------------------------------------------------------------------------------------------
TIMM_CASES = {
    # name: (timm architecture, create_model kwargs, file suffix); vit_small_patch16_224's default weights are
    # Google's (mean/std 0.5), deit_small_patch16_224's are ImageNet-1k (ImageNet mean/std)
    "token": ("vit_small_patch16_224", dict(), ".safetensors"),
    "avg_fc_norm": ("deit_small_patch16_224", dict(depth=2, global_pool="avg"), ".pth"),
    "reg4_no_embed_class": ("vit_small_patch16_224", dict(depth=2, reg_tokens=4, no_embed_class=True), ".bin"),
    "layerscale": ("deit_small_patch16_224", dict(depth=2, init_values=1e-1), ".safetensors"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(TIMM_CASES))
def test_timm_file_converts_and_matches_timm(case, tmp_path):
    arch, kwargs, suffix = TIMM_CASES[case]
    torch.manual_seed(0)
    source = perturb(timm.create_model(arch, pretrained=False, num_classes=7, **kwargs))
    path = tmp_path / f"weights{suffix}"
    state_dict = {k: v.contiguous() for k, v in source.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state_dict, str(path))
    elif suffix == ".pth":  # a timm training checkpoint: {"state_dict": ..., "arch": ..., "epoch": ...}
        torch.save({"state_dict": {f"module.{k}": v for k, v in state_dict.items()}, "arch": "vit", "epoch": 3}, path)
    else:
        torch.save(state_dict, path)
    out = tmp_path / "out"
    result = convert_checkpoint("timm", path, out, timm_model=arch, verify=True)
    assert result["max_abs_diff"] <= TOL
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "config.json",
        "configuration_hf_vit.py",
        "model.safetensors",
        "modeling_hf_vit.py",
        "preprocessor_config.json",
    ]
    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"]["AutoModelForImageClassification"] == "modeling_hf_vit.HfViTForImageClassification"
    assert config["num_register_tokens"] == kwargs.get("reg_tokens", 0)
    assert config["pooling"] == ("mean" if case == "avg_fc_norm" else "cls")
    assert config["num_hidden_layers"] == kwargs.get("depth", 12)
    processor = json.loads((out / "preprocessor_config.json").read_text())
    expected_mean = [0.5] * 3 if arch.startswith("vit_") else [0.485, 0.456, 0.406]
    assert processor["image_mean"] == pytest.approx(expected_mean)
    assert processor["size"] == {"height": 224, "width": 224}
    assert f"timm `{arch}`" in (out / "README.md").read_text()
    with safe_open(str(out / "model.safetensors"), framework="pt") as handle:
        assert handle.metadata() == {"format": "pt"}
    x = batch()
    with torch.no_grad():
        assert max_diff(logits_of_folder(out, x), source(x)) <= TOL


def test_timm_file_with_num_heads_needs_no_model_name(tmp_path):
    torch.manual_seed(1)
    source = perturb(timm.create_model("vit_small_patch16_224", pretrained=False, depth=2, num_classes=0, img_size=64))
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    result = convert_checkpoint("timm", tmp_path / "w.safetensors", tmp_path / "out", num_heads=6, verify=True)
    model = result["model"]
    assert isinstance(model, HfViTModel) and model.config.image_size == 64
    x = batch(64)
    with torch.no_grad():
        assert max_diff(model(x).pooler_output, source(x)) <= TOL


# ---------------------------------------------------------------------------------------------------------------
# DINO
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_dino_training_checkpoint(tmp_path):
    """Saved as DINO saves it: teacher/student dicts, `module.`/`backbone.` prefixes, a DINO head, args Namespace."""
    import argparse

    torch.manual_seed(2)
    source = perturb(timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, depth=4))
    backbone = source.state_dict()
    dino_head = {"head.mlp.0.weight": torch.randn(64, 384), "head.last_layer.weight_g": torch.ones(128, 1)}
    checkpoint = {
        "teacher": {**{f"backbone.{k}": v for k, v in backbone.items()}, **dino_head},
        "student": {
            **{f"module.backbone.{k}": v + 1 for k, v in backbone.items()},
            **{f"module.{k}": v for k, v in dino_head.items()},
        },
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
        "epoch": 100,
        "args": argparse.Namespace(arch="vit_small", patch_size=16),
    }
    torch.save(checkpoint, tmp_path / "checkpoint.pth")
    result = convert_checkpoint("dino", tmp_path / "checkpoint.pth", tmp_path / "out", verify=True)
    model = result["model"]
    assert result["max_abs_diff"] <= TOL
    assert isinstance(model, HfViTModel) and model.config.num_attention_heads == 6
    assert model.config.interpolate_antialias is False
    x = batch()
    with torch.no_grad():
        assert max_diff(model(x).pooler_output, source(x)) <= TOL
        assert max_diff(model(x).last_hidden_state, source.forward_features(x)) <= TOL
    card = (tmp_path / "out" / "README.md").read_text()
    assert "native size" in card and "+0.1" in card
    # the student entry and plain backbone weights work too
    student = convert_checkpoint(
        "dino", tmp_path / "checkpoint.pth", tmp_path / "out_student", checkpoint_key="student"
    )
    assert torch.equal(student["model"].embeddings.cls_token, source.cls_token + 1)
    torch.save(backbone, tmp_path / "dino_vits16_pretrain.pth")
    plain = convert_checkpoint("dino", tmp_path / "dino_vits16_pretrain.pth", tmp_path / "out_plain", verify=True)
    assert plain["max_abs_diff"] <= TOL


# ---------------------------------------------------------------------------------------------------------------
# transformers (v5 names as saved today, v4 names as on the Hub)
# ---------------------------------------------------------------------------------------------------------------
def to_v4_names(key):
    key = re.sub(
        r"layers\.(\d+)\.attention\.([qkv])_proj",
        lambda m: (
            f"encoder.layer.{m.group(1)}.attention.attention." + {"q": "query", "k": "key", "v": "value"}[m.group(2)]
        ),
        key,
    )
    key = re.sub(r"layers\.(\d+)\.attention\.o_proj", r"encoder.layer.\1.attention.output.dense", key)
    key = re.sub(r"layers\.(\d+)\.mlp\.fc1", r"encoder.layer.\1.intermediate.dense", key)
    key = re.sub(r"layers\.(\d+)\.mlp\.fc2", r"encoder.layer.\1.output.dense", key)
    return re.sub(r"(^|\.)layers\.(\d+)\.", r"\1encoder.layer.\2.", key)


@pytest.mark.parametrize("names", ["v5", "v4"])
def test_transformers_folder(names, tmp_path):
    torch.manual_seed(3)
    config = ViTConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        image_size=32,
        patch_size=8,
        num_labels=5,
        id2label={i: f"c{i}" for i in range(5)},
    )
    source = perturb(ViTForImageClassification(config))
    folder = tmp_path / "vit"
    config.save_pretrained(folder)
    state_dict = source.state_dict()  # v5 names (save_pretrained itself writes v4 names to disk)
    assert "vit.layers.0.attention.q_proj.weight" in state_dict
    if names == "v5":
        save_file(state_dict, str(folder / "model.safetensors"), metadata={"format": "pt"})
    else:
        v4 = {to_v4_names(k): v for k, v in state_dict.items()}
        assert "vit.encoder.layer.0.attention.attention.query.weight" in v4
        torch.save(v4, folder / "pytorch_model.bin")
    result = convert_checkpoint("transformers", folder, tmp_path / "out", verify=True)
    assert result["max_abs_diff"] <= TOL
    assert result["model"].config.id2label[3] == "c3"
    processor = json.loads((tmp_path / "out" / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == [0.5, 0.5, 0.5]
    x = batch(32)
    with torch.no_grad():
        assert max_diff(logits_of_folder(tmp_path / "out", x), source(x).logits) <= TOL


def test_converted_folder_never_carries_the_sources_auto_map(tmp_path):
    """A source processor's auto_map (code of some other repo) is not copied: the converted folder names the class
    transformers ships, so loading it with trust_remote_code runs nothing but hf_vit's own files."""
    from transformers import ViTImageProcessor

    config = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64, image_size=32)
    folder = tmp_path / "vit"
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.25] * 3).save_pretrained(folder)
    settings = json.loads((folder / "preprocessor_config.json").read_text())
    settings["auto_map"] = {"AutoImageProcessor": "other/repo--evil.EvilProcessor"}
    (folder / "preprocessor_config.json").write_text(json.dumps(settings))
    convert_checkpoint("transformers", folder, tmp_path / "out")
    written = json.loads((tmp_path / "out" / "preprocessor_config.json").read_text())
    assert "auto_map" not in written and written["image_processor_type"] == "ViTImageProcessor"
    assert written["image_mean"] == [0.25] * 3  # the source's preprocessing itself is kept


# ---------------------------------------------------------------------------------------------------------------
# Google .npz: written from a random timm model, read back by timm's own loader (the reference)
# ---------------------------------------------------------------------------------------------------------------
def write_npz(model, path, layout):
    """A timm ViT in Google's .npz layout: vit_jax (`Transformer/encoderblock_N/...`, cls position) or big_vision
    (`params/...`, patch-only `pos_embedding`, `_0`/`_1` module numbering, optionally scanned blocks)."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    big_vision = layout != "vit_jax"
    prefix = "params/" if big_vision else ""
    heads = model.blocks[0].attn.num_heads
    dim = model.embed_dim
    out = {
        "embedding/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
        "embedding/bias": sd["patch_embed.proj.bias"],
        "cls": sd["cls_token"],
        ("pos_embedding" if big_vision else "Transformer/posembed_input/pos_embedding"): sd["pos_embed"],
        "Transformer/encoder_norm/scale": sd["norm.weight"],
        "Transformer/encoder_norm/bias": sd["norm.bias"],
        "head/kernel": sd["head.weight"].T,
        "head/bias": sd["head.bias"],
    }
    mha, mlp, ln2 = (0, 0, 1) if big_vision else (1, 3, 2)
    blocks = []
    for i in range(len(model.blocks)):
        b = f"blocks.{i}."
        q, k, v = np.split(sd[b + "attn.qkv.weight"], 3)
        qb, kb, vb = np.split(sd[b + "attn.qkv.bias"], 3)
        block = {
            "LayerNorm_0/scale": sd[b + "norm1.weight"],
            "LayerNorm_0/bias": sd[b + "norm1.bias"],
            f"LayerNorm_{ln2}/scale": sd[b + "norm2.weight"],
            f"LayerNorm_{ln2}/bias": sd[b + "norm2.bias"],
            f"MultiHeadDotProductAttention_{mha}/out/kernel": sd[b + "attn.proj.weight"].T.reshape(heads, -1, dim),
            f"MultiHeadDotProductAttention_{mha}/out/bias": sd[b + "attn.proj.bias"],
        }
        for name, w, bias in (("query", q, qb), ("key", k, kb), ("value", v, vb)):
            block[f"MultiHeadDotProductAttention_{mha}/{name}/kernel"] = w.T.reshape(dim, heads, -1)
            block[f"MultiHeadDotProductAttention_{mha}/{name}/bias"] = bias.reshape(heads, -1)
        for r in range(2):
            block[f"MlpBlock_{mlp}/Dense_{r}/kernel"] = sd[b + f"mlp.fc{r + 1}.weight"].T
            block[f"MlpBlock_{mlp}/Dense_{r}/bias"] = sd[b + f"mlp.fc{r + 1}.bias"]
        blocks.append(block)
    if layout == "big_vision_scan":
        for name in blocks[0]:
            out[f"Transformer/encoderblock/{name}"] = np.stack([block[name] for block in blocks])
    else:
        for i, block in enumerate(blocks):
            out.update({f"Transformer/encoderblock_{i}/{name}": value for name, value in block.items()})
    np.savez(path, **{prefix + k: v for k, v in out.items()})


@pytest.mark.parametrize("layout", ["vit_jax", "big_vision", "big_vision_scan"])
def test_npz_matches_timms_npz_loader(layout, tmp_path):
    torch.manual_seed(4)
    no_embed_class = layout != "vit_jax"  # big_vision's [CLS] ('tok' pooling) has no position embedding
    kwargs = dict(depth=2, num_classes=6, no_embed_class=no_embed_class)
    written = perturb(timm.create_model("vit_small_patch16_224", pretrained=False, **kwargs))
    write_npz(written, tmp_path / "vit.npz", layout)
    reference = timm.create_model("vit_small_patch16_224", pretrained=False, **kwargs).eval()
    _load_weights(reference, str(tmp_path / "vit.npz"))  # timm's own loader is the reference
    result = convert_checkpoint("npz", tmp_path / "vit.npz", tmp_path / "out", verify=True)
    model = result["model"]
    assert result["max_abs_diff"] <= TOL
    assert model.config.num_attention_heads == 6 and model.config.cls_position_embedding == (not no_embed_class)
    x = batch()
    with torch.no_grad():
        assert max_diff(model(x).logits, reference(x)) <= TOL
    processor = json.loads((tmp_path / "out" / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == [0.5, 0.5, 0.5] and processor["image_std"] == [0.5, 0.5, 0.5]


# ---------------------------------------------------------------------------------------------------------------
# Export and round trips
# ---------------------------------------------------------------------------------------------------------------
def save_hf_vit(tmp_path, tiny_config, **overrides):
    model = perturb(HfViTForImageClassification(tiny_config(num_labels=3, **overrides)))
    model.save_pretrained(tmp_path / "hf")
    return model


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize(
    "variant", [dict(), dict(num_register_tokens=2, cls_position_embedding=False, layerscale_init=0.1, pooling="mean")]
)
def test_round_trip_through_timm_is_bitwise(variant, tmp_path, tiny_config):
    model = save_hf_vit(tmp_path, tiny_config, interpolate_antialias=True, **variant)
    result = export_to_timm(tmp_path / "hf", tmp_path / "timm", verify=True)
    assert result["max_abs_diff"] <= TOL
    timm_model = timm.create_model(f"local-dir:{tmp_path / 'timm'}", pretrained=True).eval()
    x = batch(32)
    with torch.no_grad():
        assert max_diff(timm_model(x), model(x).logits) <= TOL
    back = convert_checkpoint("timm", tmp_path / "timm", tmp_path / "back")["model"]
    assert_same_weights(back, model)
    assert back.config.num_register_tokens == model.config.num_register_tokens


def test_round_trip_through_transformers_is_bitwise(tmp_path, tiny_config):
    model = save_hf_vit(tmp_path, tiny_config, layer_norm_eps=1e-12)
    result = export_to_transformers(tmp_path / "hf", tmp_path / "vit", verify=True)
    assert result["max_abs_diff"] <= TOL
    reloaded = ViTForImageClassification.from_pretrained(tmp_path / "vit").eval()
    x = batch(32)
    with torch.no_grad():
        assert max_diff(reloaded(x).logits, model(x).logits) <= TOL
    back = convert_checkpoint("transformers", tmp_path / "vit", tmp_path / "back")["model"]
    assert_same_weights(back, model)


def test_export_refuses_what_the_target_cannot_express(tmp_path, tiny_config):
    save_hf_vit(tmp_path, tiny_config, num_register_tokens=4, cls_position_embedding=False)
    with pytest.raises(ValueError, match="register tokens"):
        export_to_transformers(tmp_path / "hf", tmp_path / "vit")
    assert not (tmp_path / "vit").exists()
    (tmp_path / "eps").mkdir()
    HfViTForImageClassification(tiny_config(layer_norm_eps=1e-12)).save_pretrained(tmp_path / "eps" / "hf")
    with pytest.raises(ValueError, match="eps"):
        export_to_timm(tmp_path / "eps" / "hf", tmp_path / "timm")


# ---------------------------------------------------------------------------------------------------------------
# export_safetensors
# ---------------------------------------------------------------------------------------------------------------
def test_export_safetensors_from_accelerate_state(tmp_path, tiny_config):
    from accelerate import Accelerator

    model = perturb(HfViTForImageClassification(tiny_config(num_labels=3)))
    model.config.save_pretrained(tmp_path / "cfg")
    accelerator = Accelerator(cpu=True)
    prepared, optimizer = accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1))
    accelerator.save_state(tmp_path / "state", safe_serialization=False)  # the legacy pickle form
    result = export_safetensors(tmp_path / "state", tmp_path / "out", config=tmp_path / "cfg", max_shard_size="20KB")
    assert result["files"][-1] == "model.safetensors.index.json" and len(result["files"]) > 2
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path / "out")
    assert_same_weights(reloaded, model)
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    for name in set(index["weight_map"].values()):
        with safe_open(str(tmp_path / "out" / name), framework="pt") as handle:
            assert handle.metadata() == {"format": "pt"}


def test_export_safetensors_legacy_folder_and_shared_tensors(tmp_path, tiny_config):
    model = perturb(HfViTModel(tiny_config()))
    model.config.save_pretrained(tmp_path / "legacy")
    state_dict = dict(model.state_dict())
    # two entries aliasing one storage (as tied weights do): safetensors cannot store aliases, so each gets a copy
    state_dict["layernorm.weight"] = state_dict["encoder.layers.0.norm1.weight"]
    torch.save(state_dict, tmp_path / "legacy" / "pytorch_model.bin")
    result = export_safetensors(tmp_path / "legacy", tmp_path / "out")
    assert result["files"] == ["model.safetensors"]
    written = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert torch.equal(written["layernorm.weight"], state_dict["encoder.layers.0.norm1.weight"])
    reloaded = load_hf_vit_folder(tmp_path / "out")
    assert torch.equal(reloaded.layernorm.weight, state_dict["layernorm.weight"])


def test_verify_fails_above_tolerance_and_writes_nothing(tmp_path):
    from hf_vit.convert import load_foreign_checkpoint, verify_conversion

    torch.manual_seed(5)
    source = timm.create_model("vit_small_patch16_224", pretrained=False, depth=1, num_classes=2, img_size=32)
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    conversion = load_foreign_checkpoint("timm", tmp_path / "w.safetensors", timm_model="vit_small_patch16_224")
    assert verify_conversion(conversion) <= TOL
    with torch.no_grad():
        conversion.model.classifier.bias.add_(1e-3)  # a converter bug of 1e-3 must not pass
    with pytest.raises(ValueError, match="verification failed: max-abs-diff .* exceeds 0.0001"):
        verify_conversion(conversion)


def test_readers_give_one_clear_error(tmp_path):
    import argparse

    from hf_vit.checkpoint_io import load_npz, load_pickle, load_weights

    torch.save({"state_dict": {"w": torch.ones(3)}, "args": argparse.Namespace(lr=0.1)}, tmp_path / "ok.pth")
    assert torch.equal(load_weights(tmp_path / "ok.pth")["w"], torch.ones(3))  # Namespace is allowed, unwrapped
    data = (tmp_path / "ok.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.pth: not a valid PyTorch checkpoint"):
        load_pickle(tmp_path / "cut.pth")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "no_tensors.pth")
    with pytest.raises(ValueError, match="holds no state dict.*epoch, lr"):
        load_weights(tmp_path / "no_tensors.pth")
    np.savez(tmp_path / "ok.npz", a=np.ones(4))
    data = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[:-40])
    with pytest.raises(ValueError, match="cut.npz: not a valid .npz archive"):
        load_npz(tmp_path / "cut.npz")
    with pytest.raises(ValueError, match="not a ViT .npz.*first keys: a"):
        convert_checkpoint("npz", tmp_path / "ok.npz", tmp_path / "out")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    with pytest.raises(ValueError, match=r"already holds files \(x\)"):
        convert_checkpoint("npz", tmp_path / "ok.npz", tmp_path / "full")
