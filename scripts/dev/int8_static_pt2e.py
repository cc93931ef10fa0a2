#!/usr/bin/env python
"""Static int8 (PT2E, X86InductorQuantizer) against hf_vit's dynamic int8, fp32 eager and fp32 compiled, on this CPU.

    pip install "hf_vit[int8]"     # torchao: the PT2E quantizers live there since torch 2.10
    python scripts/dev/int8_static_pt2e.py [--model vit-base-patch16-224] [--threads 1] [--calibration_images 64]

hf_vit's classifier (random weights, the benchmark's shapes) is quantized by `hf_vit.quantize_int8_static` (export,
torchao's X86InductorQuantizer with its default config, calibration on random images, inductor with freezing). It is
timed, interleaved in one process (median), against fp32 eager, fp32 compiled (inductor, freezing) and
`hf_vit.quantize_int8` (dynamic int8 of every nn.Linear, eager), and its logits are compared with fp32's. Prints the
CPU (model name, ISA flags) and a markdown table. Not part of hf_vit: a measurement of whether static int8 would be
worth offering here.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit-base-patch16-224")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calibration_images", type=int, default=64)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    import importlib.util

    if importlib.util.find_spec("torchao") is None:
        print('error: static int8 needs torchao: pip install "hf_vit[int8]"', file=sys.stderr)
        return 2

    import torch
    from torch._inductor import config as inductor_config

    import hf_vit
    from hf_vit import benchmark

    sys.path.insert(0, str(Path(__file__).parent))
    from onednn_linear import cpu_description

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    size = benchmark.model_config(args.model).image_size
    x = torch.randn(args.batch_size, 3, size, size)

    fp32 = benchmark.build_contender("hf_vit-sdpa", args.model).eval()
    with torch.inference_mode():
        reference = fp32(x)

    def compiled(model):
        with inductor_config.patch(freezing=True), torch.inference_mode():
            net = torch.compile(model)
            start = time.perf_counter()
            net(x)
            return net, time.perf_counter() - start

    fp32_compiled, fp32_compile_s = compiled(fp32)
    dynamic = hf_vit.quantize_int8(fp32_copy(fp32))  # the same weights

    start = time.perf_counter()
    static = hf_vit.quantize_int8_static(fp32_copy(fp32), torch.randn(args.calibration_images, 3, size, size))
    quantize_s = time.perf_counter() - start
    start = time.perf_counter()
    with torch.inference_mode():
        static(x)  # the first call compiles
    static_compile_s = time.perf_counter() - start

    steps = {
        "fp32 eager": fp32,
        "fp32 compiled": fp32_compiled,
        "int8 dynamic (hf_vit.quantize_int8)": dynamic,
        "int8 static PT2E compiled": static,
    }
    times = {name: [] for name in steps}
    with torch.inference_mode():
        outputs = {name: net(x) for name, net in steps.items()}  # warm-up, and the logits compared below
        for rep in range(args.reps):
            names = list(steps)
            names = names[rep % len(names) :] + names[: rep % len(names)]
            for name in names:
                start = time.perf_counter()
                steps[name](x)
                times[name].append(time.perf_counter() - start)
    dense = statistics.median(times["fp32 eager"])
    print(
        f"{cpu_description()}; torch {torch.__version__}; {args.model}, batch {args.batch_size}, {args.threads} "
        f"thread(s), median of {args.reps} interleaved; quantize (export, calibrate on {args.calibration_images} "
        f"random images, convert) {quantize_s:.0f} s; compile fp32 {fp32_compile_s:.0f} s, static int8 "
        f"{static_compile_s:.0f} s"
    )
    print()
    print("| path | img/s | vs fp32 eager | top-1 agreement with fp32 | max abs logit difference |")
    print("|---|---:|---:|---:|---:|")
    for name in steps:
        seconds = statistics.median(times[name])
        logits = outputs[name].float()
        agreement = (logits.argmax(-1) == reference.argmax(-1)).float().mean().item()
        print(
            f"| {name} | {args.batch_size / seconds:.2f} | {dense / seconds:.2f}× | {100 * agreement:.0f}% | "
            f"{(logits - reference).abs().max().item():.3g} |"
        )
    return 0


def fp32_copy(model):
    import copy

    return copy.deepcopy(model).eval()


if __name__ == "__main__":
    sys.exit(main())
