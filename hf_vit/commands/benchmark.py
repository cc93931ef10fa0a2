"""Benchmark hf_vit against timm's and transformers' ViT in one run: speed (inference fp32/bf16, training step),
% of the matmul peak measured in the same run, and peak memory with and without gradient checkpointing.

    python scripts/benchmark.py                          # ViT-S/16 and ViT-B/16, batch 8, CPU (a few minutes)
    python scripts/benchmark.py --memory --compile       # + peak memory (ViT-B/16, batch 32) and torch.compile
    python scripts/benchmark.py --quick                  # tiny model, seconds (what the tests run)
    python scripts/benchmark.py --device cuda            # GPU: bf16 autocast, SDPA/flash, MFU vs the bf16 peak
    python scripts/benchmark.py --modes infer-fp32 --compile --onnx --int8 --token_merging_r 8,13
                                 # every inference path: compiled, onnxruntime, int8, token merging (+ int8)

Writes benchmark.md (the table), benchmark.json (every timing) and benchmark.png (chart) into --out-dir.
"""

import argparse
import shlex
import sys
from pathlib import Path

from hf_vit.benchmark import (
    CONTENDERS,
    EXTRA_CONTENDERS,
    MODEL_SHAPES,
    MODES,
    Options,
    is_contender,
    markdown,
    run_benchmark,
    write_outputs,
)
from hf_vit.cli import command, fail, new_parser
from hf_vit.extras import require


def _list(text):
    return [item.strip() for item in text.split(",") if item.strip()]


@command
def main(argv=None):
    defaults = Options()
    p = new_parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=_list, default=defaults.models, help=f"comma list of {', '.join(MODEL_SHAPES)}")
    p.add_argument("--batch-sizes", type=lambda t: [int(x) for x in _list(t)], default=defaults.batch_sizes)
    p.add_argument(
        "--modes",
        type=_list,
        default=None,
        help=f"comma list of {', '.join(MODES)} "
        "(default: infer-fp32,infer-bf16,train-fp32 on CPU; infer-bf16,train-bf16,infer-fp32 on CUDA)",
    )
    p.add_argument(
        "--contenders",
        type=_list,
        default=defaults.contenders,
        help=f"inference contenders, of {', '.join(CONTENDERS + EXTRA_CONTENDERS)}",
    )
    p.add_argument("--train-contenders", type=_list, default=defaults.train_contenders)
    p.add_argument(
        "--compile",
        action="store_true",
        help="add torch.compile variants (inductor, freezing for inference) of the sdpa contenders and timm",
    )
    p.add_argument(
        "--token_merging_r",
        type=lambda t: [int(x) for x in _list(t)],
        default=[],
        metavar="R[,R...]",
        help="add hf_vit with token merging at each R (pairs merged per block) as inference contenders",
    )
    p.add_argument(
        "--int8",
        action="store_true",
        help="add hf_vit with int8 dynamic quantization (and with each --token_merging_r)",
    )
    p.add_argument(
        "--int8_static",
        action="store_true",
        help="add hf_vit with static int8 (PT2E, compiled; needs the int8 extra), and with each --token_merging_r",
    )
    p.add_argument("--onnx", action="store_true", help="add hf_vit's and transformers' ONNX exports run by onnxruntime")
    p.add_argument("--reps", type=int, default=defaults.reps, help="interleaved repetitions (median taken; >= 5)")
    p.add_argument("--iters", type=int, default=defaults.iters, help="steps per repetition")
    p.add_argument("--warmup", type=int, default=defaults.warmup, help="untimed rounds before the reps")
    p.add_argument("--device", default=defaults.device, choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument(
        "--memory", action="store_true", help="peak training memory per contender, fresh process each, GC off/on"
    )
    p.add_argument("--memory-models", type=_list, default=defaults.memory_models)
    p.add_argument("--memory-batch-size", type=int, default=defaults.memory_batch_size)
    p.add_argument("--memory-contenders", type=_list, default=defaults.memory_contenders)
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny model, batch 8, 512² matmul peak: seconds on any CPU "
        "(bf16 skipped where the CPU has no native bf16); for tests and smoke runs",
    )
    p.add_argument("--out-dir", default=defaults.out_dir)
    from hf_vit.cli import add_logging_arguments

    add_logging_arguments(p)
    args = p.parse_args(argv)
    from hf_vit.cli import setup_logging

    setup_logging(args.verbose, args.quiet)
    require("benchmark", "hf-vit-benchmark")
    if args.int8_static:
        require("int8", "--int8_static")

    if args.quick:
        args.models, args.memory_models = ["tiny"], ["tiny"]
        args.batch_sizes, args.memory_batch_size = [8], 8
        args.iters = max(args.iters, 3)
    # bf16 named explicitly runs even where it is emulated; the default set skips it there (with a note)
    args.emulated_bf16 = args.modes is not None and not args.quick
    if args.modes is None:
        args.modes = (
            ["infer-bf16", "train-bf16", "infer-fp32"]
            if args.device == "cuda"
            else ["infer-fp32", "infer-bf16", "train-fp32"]
        )
    if args.reps < 1:
        p.error("--reps must be >= 1")
    if any(r < 0 for r in args.token_merging_r):
        p.error(f"--token_merging_r must be integers >= 0, got {args.token_merging_r}")
    added = [f"hf_vit-sdpa-tome{r}" for r in args.token_merging_r]
    if args.int8:
        added += ["hf_vit-sdpa-int8"] + [f"hf_vit-sdpa-tome{r}-int8" for r in args.token_merging_r]
    if args.int8_static:
        added += ["hf_vit-sdpa-int8static"] + [f"hf_vit-sdpa-tome{r}-int8static" for r in args.token_merging_r]
    if args.onnx:
        added += ["hf_vit-onnxruntime", "transformers-onnxruntime"]
    args.contenders = list(dict.fromkeys(args.contenders + added))
    for name in args.contenders + args.train_contenders + args.memory_contenders:
        if not is_contender(name):
            p.error(
                f"unknown contender {name!r}; known: {', '.join(CONTENDERS + EXTRA_CONTENDERS)}, hf_vit-sdpa-tome<R>, "
                "hf_vit-sdpa-tome<R>-int8[static]"
            )
    for name in args.train_contenders + args.memory_contenders:
        if "-tome" in name or name.endswith(("-int8", "-int8static", "-onnxruntime")):
            p.error(f"{name!r} is an inference contender; it cannot be a training or memory contender")
    for mode in args.modes:
        if mode not in MODES:
            p.error(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
    for model in args.models + args.memory_models:
        if model not in MODEL_SHAPES:
            p.error(f"unknown model {model!r}; known: {', '.join(MODEL_SHAPES)}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            p.error("--device cuda: no CUDA device is visible")

    out_dir = Path(args.out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        fail(f"--out-dir {out_dir} is a file; expected a folder (created if missing)")
    try:  # before the run, not after minutes of it
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        fail(f"--out-dir {out_dir} cannot be created: {error.strerror or error}")

    command = "python scripts/benchmark.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    opts = Options(
        **{k: v for k, v in vars(args).items() if k in Options.__dataclass_fields__}, command=command.strip()
    )
    # outputs are rewritten after every group, so an interrupted long run keeps what it finished
    report = run_benchmark(
        opts,
        log=lambda line: print(line, file=sys.stderr, flush=True),
        on_progress=lambda partial: write_outputs(partial, args.out_dir),
    )
    paths = write_outputs(report, args.out_dir)
    print(markdown(report))
    print(f"wrote {paths['markdown']}, {paths['json']}, {paths['png']}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
