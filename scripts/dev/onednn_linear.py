#!/usr/bin/env python
"""Does hf_vit's oneDNN fp32 inference path pay off on this CPU? Same-run, interleaved measurement.

    python scripts/dev/onednn_linear.py                 # ViT matmul shapes, then ViT-S/16 and ViT-B/16 forwards
    python scripts/dev/onednn_linear.py --reps 21 --threads 2 --models vit-small-patch16-224

Prints the CPU (model name, the ISA flags that matter) and, per matmul shape and per model, the median time of
F.linear (MKL) and of oneDNN's linear, alternating which goes first, plus the median and range of the per-round
speed-up (F.linear time / oneDNN time, both from the same round, so load drift cancels). Models are timed as
hf_vit with the path on, the same model with it off, and timm's VisionTransformer of the same shape.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

MATMULS = [(1576, 384, 1152), (1576, 1536, 384), (1576, 768, 3072), (1576, 3072, 768)]  # batch 8 x 197 tokens
TIMM_NAMES = {"vit-small-patch16-224": "vit_small_patch16_224", "vit-base-patch16-224": "vit_base_patch16_224"}
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile")


def cpu_description() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    name = fields.get("Model name", "?").strip()
    flags = fields.get("Flags", "").split()
    isa = " ".join(f"{flag}:{'yes' if flag in flags else 'no'}" for flag in ISA_FLAGS)
    return f"{name}, {fields.get('CPU(s)', '?').strip()} CPUs; {isa}"


def interleaved(steps: dict, reps: int) -> dict[str, list[float]]:
    """Seconds per call of each step: one untimed round, then `reps` rounds rotating which step goes first."""
    names = list(steps)
    for name in names:
        steps[name]()
    times = {name: [] for name in names}
    for rep in range(reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    return times


def speedups(slow: list[float], fast: list[float]) -> str:
    ratios = [s / f for s, f in zip(slow, fast, strict=True)]
    return f"{statistics.median(ratios):.3f}x (rounds {min(ratios):.2f}-{max(ratios):.2f})"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=11)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is steadiest on a shared machine)")
    parser.add_argument(
        "--models", default=",".join(TIMM_NAMES), help=f"comma list of {', '.join(TIMM_NAMES)}; '' for none"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)

    import torch
    import torch.nn.functional as F

    from hf_vit import modeling_hf_vit

    torch.set_num_threads(args.threads)
    if not modeling_hf_vit._ONEDNN_LINEAR_WORKS:
        sys.exit("this torch build has no usable oneDNN linear op; nothing to measure")
    load = " ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    print(f"CPU: {cpu_description()}")
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), {args.reps} interleaved rounds, load average {load}; "
        f"hf_vit turns the path on by default here: {modeling_hf_vit._ONEDNN_LINEAR}"
    )
    torch.manual_seed(0)
    with torch.no_grad():
        for m, k, n in MATMULS:
            x, w, b = torch.randn(m, k), torch.randn(n, k), torch.randn(n)
            times = interleaved(
                {
                    "F.linear": lambda x=x, w=w, b=b: F.linear(x, w, b),
                    "oneDNN": lambda x=x, w=w, b=b: torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], ""),
                },
                args.reps,
            )
            print(
                f"matmul {m}x{k} -> {n}: F.linear {statistics.median(times['F.linear']) * 1e3:.1f} ms, oneDNN "
                f"{statistics.median(times['oneDNN']) * 1e3:.1f} ms; "
                f"oneDNN speed-up {speedups(times['F.linear'], times['oneDNN'])}",
                flush=True,
            )

        models = [name for name in args.models.split(",") if name]
        if models:
            import timm

            from hf_vit.benchmark import model_config
        for name in models:
            config = model_config(name)
            config._attn_implementation = "sdpa"
            model = modeling_hf_vit.HfViTForImageClassification(config).eval()
            reference = timm.create_model(TIMM_NAMES[name], pretrained=False).eval()
            pixels = torch.randn(args.batch_size, 3, 224, 224)

            def hf_vit(path_on: bool, model=model, pixels=pixels):
                saved, modeling_hf_vit._ONEDNN_LINEAR = modeling_hf_vit._ONEDNN_LINEAR, path_on
                try:
                    model(pixel_values=pixels)
                finally:
                    modeling_hf_vit._ONEDNN_LINEAR = saved

            times = interleaved(
                {
                    "on": lambda: hf_vit(True),
                    "off": lambda: hf_vit(False),
                    "timm": lambda reference=reference, pixels=pixels: reference(pixels),
                },
                args.reps,
            )
            medians = {key: statistics.median(value) for key, value in times.items()}
            print(
                f"{name} batch {args.batch_size} fp32 forward: hf_vit oneDNN on {medians['on']:.3f} s, off "
                f"{medians['off']:.3f} s, timm {medians['timm']:.3f} s; "
                f"on vs off {speedups(times['off'], times['on'])}, "
                f"on vs timm {speedups(times['timm'], times['on'])}, "
                f"off vs timm {speedups(times['timm'], times['off'])}",
                flush=True,
            )
    print(
        "load average after: " + (" ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?")
    )


if __name__ == "__main__":
    main()
