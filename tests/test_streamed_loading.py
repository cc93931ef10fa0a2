"""Big checkpoints at the memory of their weights, in their own dtype.

A transformers DINOv3 checkpoint of about 300 MB in bf16 (written by transformers' own `save_pretrained`, in shards)
is converted and loaded by `hf_vit.from_pretrained` in a process of its own, where the peak RSS is the point: the
step's peak over the process's memory before it stays within 1.2x the weights, the cache is bf16 and no larger than
the source, the model comes back bf16 without `dtype=`, `dtype=torch.float32` is a cast of the same cache (no second
conversion), and `device_map="auto"` with a small `max_memory` loads with the rest on disk; outputs are compared with
transformers' own. Then: every converter reads its source one tensor at a time (counted through `LazyTensor.load`),
and a step that cannot fit is refused in one line before anything is written.
"""

import json
import os
from pathlib import Path

import pytest
import torch
from helpers import run_python

import hf_vit
from hf_vit.convert import core
from hf_vit.convert.pretrained import RECORD, conversion_cache_root

CHILD = r"""
import gc, sys
from pathlib import Path
import torch


def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024


import hf_vit

source, cache, offload, out = sys.argv[1:5]
x = torch.randn(1, 3, 64, 48, generator=torch.Generator().manual_seed(0))
report = {}
try:  # reset the peak to the current RSS: the step's own peak is measured
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    base = status("VmRSS")
except OSError:
    base = status("VmHWM")
model = hf_vit.from_pretrained(source, task="feature-extraction", cache_dir=cache)
with torch.no_grad():  # a forward, so that every weight is really in memory (mapped pages count once read)
    report["bf16"] = model(x.bfloat16()).pooler_output.float()
report["peak"] = status("VmHWM") - base
report["dtype"] = str(model.dtype)
del model
gc.collect()
records = sorted(Path(cache).rglob("RECORD_NAME"))
stamp = [record.stat().st_mtime_ns for record in records]
model = hf_vit.from_pretrained(source, task="feature-extraction", cache_dir=cache, dtype=torch.float32)
report["fp32_dtype"] = str(model.dtype)
report["conversions"] = [record.stat().st_mtime_ns for record in sorted(Path(cache).rglob("RECORD_NAME"))] == stamp
with torch.no_grad():
    report["fp32"] = model(x).pooler_output
del model
gc.collect()
model = hf_vit.from_pretrained(
    source, task="feature-extraction", cache_dir=cache, device_map="auto", max_memory={"cpu": "60MB"},
    offload_folder=offload,
)
report["devices"] = sorted({str(device) for device in model.hf_device_map.values()})
with torch.no_grad():
    report["offloaded"] = model(x.bfloat16()).pooler_output.float()
torch.save(report, out)
""".replace("RECORD_NAME", RECORD)


def _safetensors_bytes(folder: Path) -> int:
    return sum(file.stat().st_size for file in folder.rglob("*.safetensors"))


@pytest.fixture(scope="module")
def giant(tmp_path_factory):
    """A transformers DINOv3 ViT in bf16, ~300 MB (14 layers, width 1024, gated SiLU MLP, 4 registers, patch 16),
    written by transformers' `save_pretrained` in 50 MB shards. Random weights, filled tensor by tensor (a model
    built on the meta device, then given memory): transformers' own init of 100 M parameters takes seconds."""
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    folder = tmp_path_factory.mktemp("dinov3-bf16")
    config = DINOv3ViTConfig(
        hidden_size=1024,
        num_hidden_layers=14,
        num_attention_heads=16,
        intermediate_size=2048,
        use_gated_mlp=True,
        hidden_act="silu",
        num_register_tokens=4,
        patch_size=16,
        image_size=64,
    )
    with torch.device("meta"):
        model = DINOv3ViTModel(config).to(torch.bfloat16)
    model.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            scale = 0.5 if "lambda1" in name else 0.05
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale + ("norm" in name))
    model.save_pretrained(folder, max_shard_size="50MB")
    return folder


@pytest.mark.slow
def test_a_bf16_checkpoint_converts_and_loads_at_the_memory_of_its_weights(giant, tmp_path):
    from transformers import AutoModel

    index = json.loads((giant / "model.safetensors.index.json").read_text())
    weights = index["metadata"]["total_size"]
    assert len(set(index["weight_map"].values())) > 3  # sharded in
    cache, out = tmp_path / "cache", tmp_path / "outputs.pt"
    result = run_python(["-c", CHILD, giant, cache, tmp_path / "offload", out], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = torch.load(out)
    (converted,) = [path.parent for path in cache.rglob(RECORD)]
    print(
        f"weights {weights / 1e6:.0f} MB: conversion + load + forward peak {report['peak'] / 1e6:.0f} MB "
        f"({report['peak'] / weights:.2f}x); cache {_safetensors_bytes(converted) / 1e6:.0f} MB"
    )
    assert report["peak"] <= 1.2 * weights, report["peak"]
    assert json.loads((converted / "config.json").read_text())["dtype"] == "bfloat16"
    # no bigger than the source, but for the key bias DINOv3 has not and hf_vit's fused qkv holds as zeros
    assert _safetensors_bytes(converted) <= 1.001 * _safetensors_bytes(giant)
    assert report["dtype"] == "torch.bfloat16"  # the source's dtype, without `dtype=`
    assert report["fp32_dtype"] == "torch.float32" and report["conversions"]  # a cast: not converted again
    x = torch.randn(1, 3, 64, 48, generator=torch.Generator().manual_seed(0))
    reference = AutoModel.from_pretrained(giant, dtype=torch.float32).eval()
    with torch.no_grad():
        theirs = reference(x).pooler_output
        theirs_bf16 = reference.to(torch.bfloat16)(x.bfloat16()).pooler_output.float()
    assert (report["fp32"] - theirs).abs().max() <= 1e-5
    # in bf16: no further from transformers' fp32 output than transformers' own bf16 forward is
    bf16_error = (theirs_bf16 - theirs).abs().max()
    assert (report["bf16"] - theirs).abs().max() <= 2 * bf16_error, (report["bf16"] - theirs).abs().max()
    assert "disk" in report["devices"] and "cpu" in report["devices"], report["devices"]  # offloaded...
    assert torch.equal(report["offloaded"], report["bf16"])  # ... with the same outputs


# ---------------------------------------------------------------------------------------------------------------
# every converter reads its source one tensor at a time
# ---------------------------------------------------------------------------------------------------------------
def _transformers_source(kind, folder):
    import transformers

    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32)
    if kind == "vit":
        model = transformers.ViTModel(transformers.ViTConfig(patch_size=8, **small), add_pooling_layer=False)
    elif kind == "dinov2":
        model = transformers.Dinov2Model(transformers.Dinov2Config(patch_size=8, **{**small, "intermediate_size": 0}))
    elif kind == "dinov3":
        config = transformers.DINOv3ViTConfig(patch_size=8, use_gated_mlp=True, hidden_act="silu", **small)
        model = transformers.DINOv3ViTModel(config)
    elif kind == "siglip":
        model = transformers.SiglipVisionModel(transformers.SiglipVisionConfig(patch_size=8, **small))
    elif kind == "clip":
        model = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(patch_size=8, **small))
    elif kind == "mae":
        model = transformers.ViTMAEModel(transformers.ViTMAEConfig(patch_size=8, **small))
    model.save_pretrained(folder)
    return folder


def _timm_source(kind, folder):
    import timm
    from timm.models._hub import save_for_hf

    args = dict(pretrained=False, depth=2, embed_dim=32, num_heads=4, img_size=32, patch_size=8, num_classes=3)
    name = {"timm": "vit_small_patch16_224", "timm-eva": "vit_small_patch16_dinov3"}[kind]
    model = timm.create_model(name, **args)
    if kind == "dino":
        return model
    save_for_hf(model, folder, model_config={"num_classes": 3})
    return folder


def _source(kind, tmp_path):
    if kind in ("timm", "timm-eva"):
        return _timm_source(kind, tmp_path / kind)
    if kind == "dino":  # a DINO training checkpoint: teacher and student, `backbone.` prefixes
        import timm

        model = timm.create_model("vit_small_patch16_224", pretrained=False, depth=2, embed_dim=192, num_heads=3,
                                  img_size=32, patch_size=8, num_classes=0)  # fmt: skip
        backbone = {f"module.backbone.{k}": v for k, v in model.state_dict().items()}
        torch.save({"teacher": backbone, "student": backbone, "epoch": 3}, tmp_path / "dino.pth")
        return tmp_path / "dino.pth"
    if kind == "npz":
        import timm
        from test_convert_files import write_npz

        model = timm.create_model("vit_small_patch16_224", pretrained=False, depth=2, embed_dim=32, num_heads=4,
                                  img_size=32, patch_size=8, num_classes=3)  # fmt: skip
        write_npz(model, tmp_path / "vit.npz", "vit_jax")
        return tmp_path / "vit.npz"
    return _transformers_source(kind, tmp_path / kind)


LAYOUTS = {
    "vit": "transformers",
    "dinov2": "dinov2",
    "dinov3": "dinov3",
    "siglip": "siglip",
    "clip": "clip",
    "mae": "transformers",
    "timm": "timm",
    "timm-eva": "timm",
    "dino": "dino",
    "npz": "npz",
}


@pytest.mark.parametrize("kind", list(LAYOUTS))
def test_every_converter_reads_its_source_one_tensor_at_a_time(kind, tmp_path, monkeypatch):
    """Converting reads no tensor (the config comes from config.json and the tensors' shapes), and writing reads
    only the few source tensors of the one being written (q, k and v for a fused qkv): never the whole source."""
    from hf_vit.convert.pretrained import convert_layout

    path = _source(kind, tmp_path)
    reads, per_output, depth, loading = [0], [], [0], []
    load, materialize = core.LazyTensor.load, core.materialize

    def counted_load(self):  # a read of the source: a load that loads no other (not a reshape or a fusion over one)
        if loading:
            loading[-1] = True
        loading.append(False)
        try:
            return load(self)
        finally:
            if not loading.pop():
                reads[0] += 1

    def counted_materialize(value):  # a call from the writer (depth 0) is one output tensor
        depth[0] += 1
        before = reads[0]
        try:
            return materialize(value)
        finally:
            depth[0] -= 1
            if depth[0] == 0:
                per_output.append(reads[0] - before)

    monkeypatch.setattr(core.LazyTensor, "load", counted_load)
    monkeypatch.setattr(core, "materialize", counted_materialize)
    conversion = convert_layout(LAYOUTS[kind], path)
    assert reads[0] <= 1, reads  # at most the LayerScale gamma its config is initialised from
    assert conversion.built is None
    reads[0] = 0
    per_output.clear()
    core.write_hf_vit_folder(conversion, tmp_path / "out")
    sources = len(core.lazy_state_dict(path)) if kind != "dino" else None
    assert len(per_output) == len(conversion.weights) and reads[0] >= len(per_output)
    assert max(per_output) <= 3, per_output  # a fused qkv: its three parts
    if sources is not None:
        assert reads[0] <= sources + 2  # each source tensor read once (a packed in_proj: once per part)
    monkeypatch.undo()
    model = type(core.load_hf_vit_folder(tmp_path / "out"))
    assert model.__name__.startswith("HfViT")


# ---------------------------------------------------------------------------------------------------------------
# a step that cannot fit is refused, before anything is written
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_dinov3(tmp_path_factory):
    return _transformers_source("dinov3", tmp_path_factory.mktemp("tiny") / "dinov3")


def _nothing_written(cache: Path) -> bool:
    return not list(cache.rglob(RECORD)) and not list(cache.rglob("*.safetensors"))


def test_a_load_that_cannot_fit_in_memory_is_refused_in_one_line(tiny_dinov3, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("HF_VIT_AVAILABLE_MEMORY", "1000")
    with pytest.raises(ValueError) as refused:
        hf_vit.from_pretrained(tiny_dinov3, task="feature-extraction", cache_dir=cache)
    message = str(refused.value)
    assert "\n" not in message and "of memory, and 0.00 GB is available" in message, message
    assert '`device_map="auto"`' in message and "`dtype`" in message and "`cache_dir`" in message, message
    assert _nothing_written(cache)
    # with a device map Accelerate places the weights: not refused
    model = hf_vit.from_pretrained(tiny_dinov3, task="feature-extraction", cache_dir=cache, device_map="auto")
    assert model.dtype == torch.float32
    # a cached conversion (and any hf_vit folder) is checked before it loads, too
    with pytest.raises(ValueError, match="of memory, and 0.00 GB is available"):
        hf_vit.from_pretrained(tiny_dinov3, task="feature-extraction", cache_dir=cache)
    monkeypatch.delenv("HF_VIT_AVAILABLE_MEMORY")
    assert hf_vit.from_pretrained(tiny_dinov3, task="feature-extraction", cache_dir=cache).dtype == torch.float32


def test_a_conversion_the_disk_cannot_hold_is_refused_and_writes_nothing(tiny_dinov3, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("HF_VIT_FREE_DISK", "10")
    with pytest.raises(ValueError) as refused:
        hf_vit.from_pretrained(tiny_dinov3, task="feature-extraction", cache_dir=cache)
    message = str(refused.value)
    assert f"of disk for the converted weights, and {conversion_cache_root(cache) / 'local'} has" in message, message
    assert "`cache_dir` on a disk with more room" in message
    assert _nothing_written(cache)
    assert not os.environ.get("HF_VIT_AVAILABLE_MEMORY")
