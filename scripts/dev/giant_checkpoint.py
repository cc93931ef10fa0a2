#!/usr/bin/env python
"""Make a DINOv3-7B-shaped checkpoint (random bf16, transformers' `dinov3_vit` layout) and measure loading it with
transformers, timm and hf_vit: peak resident memory, time and disk, each contender in a fresh process of its own.

  python scripts/dev/giant_checkpoint.py --folder /data/dinov3-7b-shaped --work /data/giant-work --output table.md
  python scripts/dev/giant_checkpoint.py --folder /tmp/dinov3-2l --work /tmp/giant-2l --num_layers 2

The checkpoint (config.json that transformers' DINOv3ViTConfig reads: 40 layers, hidden 4096, 32 heads, gated SiLU
MLP of 8192, 4 registers, patch 16, image 224; the parameter names and shapes of a DINOv3ViTModel built on the meta
device) is written shard by shard, holding one shard at a time; an existing one of the same shape is reused.
`--num_layers` makes a smaller one (2 layers: 0.68 GB). A contender that fails or is killed gets its reason in its
row, and the run goes on. The table (markdown, with the date, the CPU's `lscpu` model and ISA flags, and the
command) is printed and, with --output, written to a file.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

CONTENDERS = (
    "transformers",
    "timm",
    "hf_vit-first",
    "hf_vit-cached",
    "hf_vit-offload",
    "hf_vit-export",
    "hf_vit-to-transformers",
    "hf_vit-finetune-frozen",
)
DESCRIPTIONS = {
    "transformers": "transformers AutoModel.from_pretrained(folder, dtype=torch.bfloat16) + one 224x224 forward",
    "timm": "timm vit_7b_patch16_dinov3 (meta device, transformers' weights mapped, assign) + one forward",
    "hf_vit-first": 'hf_vit.from_pretrained(folder, task="feature-extraction"), first load (conversion) + forward',
    "hf_vit-cached": "hf_vit.from_pretrained, cached load + forward",
    "hf_vit-offload": 'hf_vit.from_pretrained(device_map="auto", max_memory={"cpu": "8GiB"}, offload_folder) + forward',
    "hf_vit-export": "hf-vit-export of the hf_vit cache (safetensors writer, 5GB shards)",
    "hf_vit-to-transformers": "hf-vit-convert --to transformers of the hf_vit cache",
    "hf_vit-finetune-frozen": "hf_vit bf16, frozen backbone + new head, gradient checkpointing: one step, batch 2",
}
DEFAULT_SHARD = "1300MB"  # 11 shards for the 40-layer 13.4 GB checkpoint, as the published DINOv3-7B has


def dinov3_config(num_layers: int):
    from transformers import DINOv3ViTConfig

    return DINOv3ViTConfig(
        hidden_size=4096,
        num_hidden_layers=num_layers,
        num_attention_heads=32,
        intermediate_size=8192,
        use_gated_mlp=True,
        hidden_act="silu",
        num_register_tokens=4,
        patch_size=16,
        image_size=224,
        layerscale_value=1e-5,
        query_bias=False,  # the 7B has no q/k/v biases (timm's vit_7b_patch16_dinov3: qkv_bias=False)
        key_bias=False,
        value_bias=False,
    )


def _random(name: str, shape, generator) -> torch.Tensor:
    """Random bf16 values of the scale a trained model has: weights ~0.02, norms ~1, layer scales small."""
    noise = torch.randn(shape, generator=generator, dtype=torch.bfloat16)
    if name.endswith("lambda1"):
        return noise.mul_(1e-3).add_(0.05)
    if "norm" in name and name.endswith(".weight"):
        return noise.mul_(0.02).add_(1.0)
    return noise.mul_(0.02)


def _complete(folder: Path, num_layers: int, names: set[str]) -> bool:
    """Whether `folder` already holds this checkpoint (same layers, every tensor name, every file)."""
    from safetensors import safe_open

    if not (folder / "config.json").is_file():
        return False
    if json.loads((folder / "config.json").read_text()).get("num_hidden_layers") != num_layers:
        return False
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return set(weight_map) == names and all((folder / f).is_file() for f in set(weight_map.values()))
    if not (folder / "model.safetensors").is_file():
        return False
    with safe_open(str(folder / "model.safetensors"), framework="pt") as handle:
        return set(handle.keys()) == names


def make_checkpoint(folder: Path, num_layers: int, max_shard_size: str, seed: int = 0) -> int:
    """Write the checkpoint into `folder` one shard at a time; returns the weights' size in bytes. An existing
    complete one with `num_layers` layers is reused."""
    from huggingface_hub import split_state_dict_into_shards_factory
    from safetensors.torch import save_file
    from transformers import DINOv3ViTModel
    from transformers.core_model_loading import revert_weight_conversion

    config = dinov3_config(num_layers)
    with torch.device("meta"):
        model = DINOv3ViTModel(config)
    shapes = revert_weight_conversion(model, model.state_dict())  # the names transformers writes on disk
    shapes = {name: tensor.to(torch.bfloat16) for name, tensor in shapes.items()}
    total = sum(t.numel() * t.element_size() for t in shapes.values())
    index_file = folder / "model.safetensors.index.json"
    if _complete(folder, num_layers, set(shapes)):
        print(f"reusing {folder} ({total / 1e9:.2f} GB)", file=sys.stderr)
        return total
    if folder.exists() and any(folder.iterdir()):
        raise SystemExit(f"error: {folder} holds other files; give an empty or new --folder")
    folder.mkdir(parents=True, exist_ok=True)
    # huggingface_hub's shard plan, from the sizes the meta tensors stand for
    split = split_state_dict_into_shards_factory(
        shapes,
        get_storage_size=lambda tensor: tensor.numel() * tensor.element_size(),
        filename_pattern="model{suffix}.safetensors",
        max_shard_size=max_shard_size,
    )
    generator = torch.Generator().manual_seed(seed)
    for number, (filename, names) in enumerate(split.filename_to_tensors.items(), 1):
        tensors = {name: _random(name, shapes[name].shape, generator) for name in names}
        save_file(tensors, str(folder / filename), metadata={"format": "pt"})
        del tensors
        print(f"wrote {filename} ({number}/{len(split.filename_to_tensors)})", file=sys.stderr)
    if split.is_sharded:
        index = {"metadata": {"total_size": total}, "weight_map": split.tensor_to_filename}
        index_file.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    config.architectures = ["DINOv3ViTModel"]
    config.dtype = torch.bfloat16
    config.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "DINOv3ViTImageProcessorFast",
                "do_resize": True,
                "size": {"height": 224, "width": 224},
                "do_normalize": True,
                "image_mean": [0.485, 0.456, 0.406],
                "image_std": [0.229, 0.224, 0.225],
                "do_rescale": True,
                "rescale_factor": 1 / 255,
            },
            indent=2,
        )
    )
    return total


# ---------------------------------------------------------------------------------------------------------------
# contenders: each runs in a fresh process (`--contender NAME`) and writes WORK/NAME.json (+ its pooled output)
# ---------------------------------------------------------------------------------------------------------------
def _pixels() -> torch.Tensor:
    return torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)


def _rss() -> int:
    """This process's resident memory now (VmRSS), in bytes: the start from which a contender's peak is counted."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


def _disk(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def _hf_vit_cache(work: Path) -> Path:
    from hf_vit.convert.pretrained import conversion_cache_root

    return conversion_cache_root(work / "hf_cache")


def _converted_folder(work: Path) -> Path:
    folders = [p.parent for p in _hf_vit_cache(work).rglob("config.json")]
    if len(folders) != 1:
        raise RuntimeError(f"expected one converted folder under {_hf_vit_cache(work)}, found {len(folders)}")
    return folders[0]


def _forward(model, pooled) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    with torch.inference_mode():
        out = pooled(model, _pixels())
    return time.perf_counter() - start, out.float()


def contender_transformers(folder: Path, work: Path) -> dict:
    from transformers import AutoModel

    start_rss, start = _rss(), time.perf_counter()
    model = AutoModel.from_pretrained(folder, dtype=torch.bfloat16).eval()
    load = time.perf_counter() - start
    forward, pooled = _forward(model, lambda m, x: m(pixel_values=x).pooler_output)
    dtype = str(next(model.parameters()).dtype)
    return {"load_s": load, "forward_s": forward, "pooled": pooled, "dtype": dtype, "start_rss": start_rss}


def _timm_names(name: str) -> str:
    """transformers' dinov3_vit name -> timm's Eva name (q/k/v are fused separately)."""
    import re

    rules = [
        (r"^embeddings\.cls_token$", "cls_token"),
        (r"^embeddings\.register_tokens$", "reg_token"),
        (r"^embeddings\.patch_embeddings\.", "patch_embed.proj."),
        (r"^(?:model\.)?layer\.(\d+)\.layer_scale1\.lambda1$", r"blocks.\1.gamma_1"),
        (r"^(?:model\.)?layer\.(\d+)\.layer_scale2\.lambda1$", r"blocks.\1.gamma_2"),
        (r"^(?:model\.)?layer\.(\d+)\.attention\.o_proj\.", r"blocks.\1.attn.proj."),
        (r"^(?:model\.)?layer\.(\d+)\.mlp\.gate_proj\.", r"blocks.\1.mlp.fc1_g."),
        (r"^(?:model\.)?layer\.(\d+)\.mlp\.up_proj\.", r"blocks.\1.mlp.fc1_x."),
        (r"^(?:model\.)?layer\.(\d+)\.mlp\.down_proj\.", r"blocks.\1.mlp.fc2."),
        (r"^(?:model\.)?layer\.(\d+)\.(norm[12])\.", r"blocks.\1.\2."),
        (r"^norm\.", "norm."),
    ]
    for pattern, replacement in rules:
        new, hits = re.subn(pattern, replacement, name)
        if hits:
            return new
    raise KeyError(name)


def contender_timm(folder: Path, work: Path) -> dict:
    import re

    import timm
    from safetensors.torch import load_file
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder)
    start_rss, start = _rss(), time.perf_counter()
    with torch.device("meta"):
        model = timm.create_model(
            "vit_7b_patch16_dinov3",
            pretrained=False,
            num_classes=0,
            global_pool="token",
            depth=config.num_hidden_layers,
            img_size=224,
        )
    index = folder / "model.safetensors.index.json"
    files = (
        sorted({*json.loads(index.read_text())["weight_map"].values()}) if index.is_file() else ["model.safetensors"]
    )
    state_dict, qkv = {}, {}
    for file in files:
        for name, tensor in load_file(str(folder / file)).items():  # memory-mapped
            match = re.match(r"^(?:model\.)?layer\.(\d+)\.attention\.([qkv])_proj\.weight$", name)
            if match:
                qkv.setdefault(int(match[1]), {})[match[2]] = tensor
            elif not name.endswith("mask_token"):
                state_dict[_timm_names(name)] = tensor
    for layer, parts in qkv.items():  # timm fuses q, k and v: one new tensor per layer
        state_dict[f"blocks.{layer}.attn.qkv.weight"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    del qkv
    model.load_state_dict(state_dict, strict=True, assign=True)
    del state_dict
    for module in model.modules():  # the rotary tables are not in the weights: timm computes them
        if hasattr(module, "init_non_persistent_buffers"):
            for key, buffer in list(module.named_buffers(recurse=False)):
                module.register_buffer(key, torch.empty_like(buffer, device="cpu"), persistent=False)
            module.init_non_persistent_buffers()
    leftover = [n for n, b in model.named_buffers() if b.is_meta] + [
        n for n, p in model.named_parameters() if p.is_meta
    ]
    if leftover:
        raise RuntimeError(f"timm tensors left on the meta device: {leftover[:3]}")
    model.eval()
    load = time.perf_counter() - start
    forward, pooled = _forward(model, lambda m, x: m(x))
    dtype = str(next(model.parameters()).dtype)
    return {"load_s": load, "forward_s": forward, "pooled": pooled, "dtype": dtype, "start_rss": start_rss}


def _hf_vit_load(folder: Path, work: Path, **kwargs) -> dict:
    import hf_vit
    import hf_vit.convert.pretrained  # noqa: F401 (imported before the start: the peak is the load's)

    start_rss, start = _rss(), time.perf_counter()
    model = hf_vit.from_pretrained(str(folder), task="feature-extraction", cache_dir=work / "hf_cache", **kwargs)
    load = time.perf_counter() - start
    forward, pooled = _forward(model.eval(), lambda m, x: m(x.to(next(m.parameters()).dtype)).pooler_output)
    dtype = str(next(model.parameters()).dtype)
    return {"load_s": load, "forward_s": forward, "pooled": pooled, "dtype": dtype, "start_rss": start_rss}


def contender_hf_vit_first(folder: Path, work: Path) -> dict:
    cache = _hf_vit_cache(work)
    if cache.exists():
        shutil.rmtree(cache)  # a first load converts
    result = _hf_vit_load(folder, work)
    result["disk_bytes"] = _disk(cache)
    return result


def contender_hf_vit_cached(folder: Path, work: Path) -> dict:
    if not _hf_vit_cache(work).exists():
        raise RuntimeError("no hf_vit cache: the first load did not complete")
    return _hf_vit_load(folder, work)


def contender_hf_vit_offload(folder: Path, work: Path) -> dict:
    offload = work / "offload"
    shutil.rmtree(offload, ignore_errors=True)
    result = _hf_vit_load(folder, work, device_map="auto", max_memory={"cpu": "8GiB"}, offload_folder=str(offload))
    result["disk_bytes"] = _disk(offload)
    return result


def _writer(command: str, argv: list, output: Path) -> dict:
    """A command of hf_vit run in this process as a user runs it (its `main(argv)`), its failure's `error:` line."""
    import contextlib
    import importlib
    import io

    import hf_vit.convert  # noqa: F401 (what the command imports: before the start, the peak is the writer's)

    main = importlib.import_module(f"hf_vit.commands.{command}").main
    shutil.rmtree(output, ignore_errors=True)
    stderr = io.StringIO()
    start_rss, start = _rss(), time.perf_counter()
    with contextlib.redirect_stderr(stderr):
        code = main([str(arg) for arg in argv])
    if code:
        lines = [line for line in stderr.getvalue().splitlines() if line.startswith("error:")]
        raise RuntimeError(lines[-1].removeprefix("error: ") if lines else f"exit {code}")
    source = Path(argv[argv.index("--input" if "--input" in argv else "--checkpoint") + 1])
    return {
        "load_s": time.perf_counter() - start,
        "disk_bytes": _disk(output),
        "start_rss": start_rss,
        "weights_bytes": sum(f.stat().st_size for f in source.glob("*.safetensors")),  # what it writes
    }


def contender_hf_vit_export(folder: Path, work: Path) -> dict:
    source = _converted_folder(work)
    output = work / "export"
    return _writer("export", ["--input", source, "--output_dir", output, "--max_shard_size", "5GB"], output)


def contender_hf_vit_to_transformers(folder: Path, work: Path) -> dict:
    source = _converted_folder(work)
    output = work / "to-transformers"
    return _writer("convert", ["--to", "transformers", "--checkpoint", source, "--output_dir", output], output)


def contender_hf_vit_finetune_frozen(folder: Path, work: Path) -> dict:
    import hf_vit
    import hf_vit.convert.pretrained  # noqa: F401

    start_rss, start = _rss(), time.perf_counter()
    backbone = hf_vit.from_pretrained(
        str(folder), task="feature-extraction", cache_dir=work / "hf_cache", dtype=torch.bfloat16
    ).train()
    backbone.requires_grad_(False)
    backbone.activation_checkpointing_enable({"use_reentrant": False})
    head = torch.nn.Linear(backbone.config.hidden_size, 10, dtype=torch.bfloat16)
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3)
    load = time.perf_counter() - start
    start = time.perf_counter()
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1), dtype=torch.bfloat16)
    loss = torch.nn.functional.cross_entropy(head(backbone(pixels).pooler_output), torch.tensor([1, 7]))
    loss.backward()
    optimizer.step()
    frozen_grads = sum(p.grad is not None for p in backbone.parameters())
    if frozen_grads:
        raise RuntimeError(f"{frozen_grads} frozen parameters got gradients")
    step = time.perf_counter() - start
    return {"load_s": load, "forward_s": step, "dtype": "torch.bfloat16", "start_rss": start_rss}


def run_contender(name: str, folder: Path, work: Path) -> None:
    result = globals()["contender_" + name.replace("-", "_")](folder, work)
    pooled = result.pop("pooled", None)
    if pooled is not None:
        torch.save(pooled, work / f"{name}.pooled.pt")
    (work / f"{name}.json").write_text(json.dumps(result))


# ---------------------------------------------------------------------------------------------------------------
# the parent: one fresh process per contender, peak RSS from the kernel's accounting of the child
# ---------------------------------------------------------------------------------------------------------------
def measure(name: str, folder: Path, work: Path, timeout: float) -> dict:
    (work / f"{name}.json").unlink(missing_ok=True)
    (work / f"{name}.pooled.pt").unlink(missing_ok=True)
    log = open(work / f"{name}.log", "w")
    command = [sys.executable, __file__, "--contender", name, "--folder", str(folder), "--work", str(work)]
    start = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    timed_out = False
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() - start > timeout:
            process.send_signal(signal.SIGKILL)
            timed_out = True
            pid, status, usage = os.wait4(process.pid, 0)
            break
        time.sleep(0.2)
    log.close()
    row = {"name": name, "wall_s": time.perf_counter() - start, "peak_rss": usage.ru_maxrss * 1024}
    if timed_out:
        row["failed"] = f"timed out after {timeout:.0f} s"
    elif os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        row["failed"] = "killed (OOM)" if sig == signal.SIGKILL else f"killed by signal {sig}"
    elif os.WEXITSTATUS(status) != 0 or not (work / f"{name}.json").is_file():
        lines = [line for line in (work / f"{name}.log").read_text().splitlines() if line.strip()]
        reason = next((line for line in reversed(lines) if "Error" in line or line.startswith("error")), None)
        reason = (reason or (lines[-1] if lines else "no output")).removeprefix("RuntimeError: ")
        row["failed"] = f"failed: {reason if len(reason) < 240 else reason[:240].rsplit(';', 1)[0] + '; ...'}"
    else:
        row.update(json.loads((work / f"{name}.json").read_text()))
    return row


def machine() -> tuple[str, str]:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    from hf_vit.benchmark import ISA_FLAGS, cpu_flags

    flags = cpu_flags()
    return model, " ".join(flag for flag in ISA_FLAGS if flag in flags) or "none of " + " ".join(ISA_FLAGS)


def table(rows: list[dict], weights: int, work: Path, num_layers: int, command: str) -> str:
    reference = next((r for r in rows if r["name"] == "transformers" and "failed" not in r), None)
    pooled_ref = work / "transformers.pooled.pt"
    pooled_ref = torch.load(pooled_ref) if pooled_ref.is_file() else None
    model, isa = machine()
    lines = [
        f"DINOv3-7B-shaped checkpoint, {num_layers} layers, random bf16 in transformers' dinov3_vit layout: "
        f"{weights / 1e9:.2f} GB of weights.",
        f"{datetime.date.today().isoformat()}, {model} (ISA flags: {isa}), {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}. Command: `{command}`",
        "",
        "| contender | peak RSS | peak − start | × weights | load / write (s) | × transformers | forward / step (s) "
        "| disk | pooled vs transformers |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        what = DESCRIPTIONS[row["name"]]
        peak = f"{row['peak_rss'] / 1e9:.2f} GB"
        if "failed" in row:
            lines.append(f"| {what} | {peak} | | | {row['failed']} | | | | |")
            continue
        above = row["peak_rss"] - row["start_rss"]
        load = row["load_s"]
        vs = f"{load / reference['load_s']:.2f}" if reference else ""
        forward = f"{row['forward_s']:.2f}" if "forward_s" in row else ""
        disk = f"{row['disk_bytes'] / 1e9:.2f} GB" if row.get("disk_bytes") else ""
        compare = ""
        pooled_file = work / f"{row['name']}.pooled.pt"
        if pooled_ref is not None and pooled_file.is_file() and row["name"] != "transformers":
            diff = (torch.load(pooled_file) - pooled_ref).abs().max().item()
            scale = pooled_ref.abs().max().item()
            compare = f"max abs diff {diff:.3g} of max {scale:.3g} ({row.get('dtype', '').replace('torch.', '')})"
        elif row["name"] == "transformers":
            compare = f"reference ({row.get('dtype', '').replace('torch.', '')})"
        ratio = above / row.get("weights_bytes", weights)
        lines.append(
            f"| {what} | {peak} | {above / 1e9:.2f} GB | {ratio:.2f} | {load:.1f} | {vs} | {forward} | {disk} "
            f"| {compare} |"
        )
    lines.append("")
    lines.append(
        "peak RSS: the contender process's maximum resident set (the kernel's ru_maxrss, as VmHWM), interpreter and "
        "libraries included; peak − start: above its resident memory once the libraries were imported, just before "
        "the load or write; × weights: peak − start over the checkpoint's size (a writer's: over the weights it "
        "writes, the hf_vit cache's); × transformers: load (or write) time over transformers' load time; forward / "
        "step: one 224×224 image (the fine-tuning step: forward, backward and AdamW on 2 images)."
    )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", required=True, type=Path, help="the checkpoint folder (made if absent)")
    parser.add_argument("--work", type=Path, help="scratch folder for caches, exports and logs (default: FOLDER-work)")
    parser.add_argument("--num_layers", type=int, default=40, help="transformer layers (40: the 7B; 2: 0.68 GB)")
    parser.add_argument(
        "--max_shard_size", default=DEFAULT_SHARD, help=f"shard size of the checkpoint ({DEFAULT_SHARD})"
    )
    parser.add_argument("--contenders", default=",".join(CONTENDERS), help="comma-separated, in order")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per contender before it is killed")
    parser.add_argument("--output", type=Path, help="also write the markdown table here")
    parser.add_argument("--contender", help=argparse.SUPPRESS)  # the child's side
    args = parser.parse_args(argv)
    work = args.work or args.folder.with_name(args.folder.name + "-work")
    if args.contender:
        run_contender(args.contender, args.folder, work)
        return 0
    names = [name.strip() for name in args.contenders.split(",") if name.strip()]
    unknown = [name for name in names if name not in CONTENDERS]
    if unknown:
        parser.error(f"unknown contender(s) {', '.join(unknown)}; choose from {', '.join(CONTENDERS)}")
    weights = make_checkpoint(args.folder, args.num_layers, args.max_shard_size)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        row = measure(name, args.folder, work, args.timeout)
        print(f"{name}: {row.get('failed') or 'ok'} (peak {row['peak_rss'] / 1e9:.2f} GB)", file=sys.stderr)
        rows.append(row)
    command = "python scripts/dev/giant_checkpoint.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = table(rows, weights, work, args.num_layers, command)
    print(text)
    if args.output:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
