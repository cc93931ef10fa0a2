#!/usr/bin/env python
"""Accuracy and speed of token merging and int8, measured on a model hf_vit trains itself on real data.

    python scripts/dev/tome_accuracy.py [--epochs 40] [--r 2,4,8,12] [--int8_static] [--threads 1] [--out table.md]

The data are the embedded digits (scikit-learn's 1,797 scanned 8x8 handwritten digits, the training scripts' fixed
stratified 80/20 split), upscaled bicubically to 32x32 and cut into 4-px patches: 64 patch tokens + [CLS], enough
tokens for merging to matter. An hf_vit classifier (hidden 64, 4 blocks, 4 heads) is trained from scratch (AdamW,
cosine schedule, random shifts of up to 4 px), then evaluated on the 360 held-out digits: dense, merged at each r,
int8 (dynamic, every nn.Linear) and merged + int8; with --int8_static (the `int8` extra) also static int8 (PT2E,
compiled; calibrated on 256 training digits spread evenly over the training set) and merged + static int8. Speed is
the median of interleaved timed passes over the held-out digits in batches of 8 (one process, `--threads` threads),
relative to dense. Prints the markdown table (and writes it to --out); the trained model is saved with --output_dir.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

MODEL = dict(
    image_size=32,
    patch_size=4,
    hidden_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=128,
    num_labels=10,
)


def digits_32(split_indices, images):
    """(N, 3, 32, 32) float tensors in [-1, 1] (mean = std = 0.5, as ViTImageProcessor's default)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(images[split_indices]).float().div(255.0).unsqueeze(1)
    x = F.interpolate(x, size=(32, 32), mode="bicubic", align_corners=False).clamp(0.0, 1.0)
    return ((x - 0.5) / 0.5).expand(-1, 3, -1, -1).contiguous()


def shift(batch, generator, max_shift=4):
    """Random translations of up to `max_shift` pixels (zero-padded with the background value -1)."""
    import torch

    padded = torch.nn.functional.pad(batch, (max_shift,) * 4, value=-1.0)
    out = torch.empty_like(batch)
    offsets = torch.randint(0, 2 * max_shift + 1, (len(batch), 2), generator=generator)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        out[i] = padded[i, :, dy : dy + 32, dx : dx + 32]
    return out


def train(model, x, y, epochs, batch_size, seed, log):
    import torch

    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    steps_per_epoch = math.ceil(len(x) / batch_size)
    total = epochs * steps_per_epoch
    warmup = steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total)),
    )
    model.train()
    start = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        losses = []
        for i in range(0, len(x), batch_size):
            index = order[i : i + batch_size]
            loss = model(pixel_values=shift(x[index], generator), labels=y[index]).loss
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
        log(f"epoch {epoch + 1}/{epochs}: loss {statistics.mean(losses):.4f} ({time.perf_counter() - start:.0f} s)")
    model.eval()


def predict(model, x, batch_size=8):
    import torch

    with torch.inference_mode():
        return torch.cat([model(pixel_values=x[i : i + batch_size]).logits for i in range(0, len(x), batch_size)])


def configure(net, r):
    """Token merging at `r` for the next forward passes of `net` (a float or dynamic int8 model); returns `net`."""
    net.config.token_merging_r = r
    return net


def calibration_digits(x_train, count=256):
    """`count` training digits spread evenly over the training set: the static int8 calibration images."""
    return x_train[:: max(1, len(x_train) // count)][:count]


def static_int8(model, calibration):
    """hf_vit's static int8 (PT2E, compiled) of `model` at its current token merging, compiled for batches of 8
    (the evaluation's; a smaller last batch compiles once more)."""
    import hf_vit

    return hf_vit.quantize_int8_static(model, calibration, batch_size=8)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--r", default="2,4,8,12", help="comma list of token merging r to evaluate")
    parser.add_argument("--int8_r", type=int, default=None, help="r for the merged + int8 row (default: every r)")
    parser.add_argument(
        "--int8_static", action="store_true", help="also static int8 rows (hf_vit.quantize_int8_static; needs torchao)"
    )
    parser.add_argument("--timing_reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the evaluation and timing")
    parser.add_argument("--train_threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also write the table to this markdown file")
    parser.add_argument("--output_dir", default=None, help="save the trained model here")
    args = parser.parse_args(argv)
    try:
        r_values = [int(r) for r in args.r.split(",")]
    except ValueError:
        print(f"error: --r must be a comma list of integers, got {args.r!r}", file=sys.stderr)
        return 2
    if args.epochs < 1 or any(r < 0 for r in r_values):
        print("error: --epochs must be >= 1 and every --r >= 0", file=sys.stderr)
        return 2
    # checked before the training, so a mistake costs nothing; neither output ever replaces a file of the user's
    from pathlib import Path

    if args.out and Path(args.out).exists():
        print(f"error: --out {args.out} already exists; choose a new file name", file=sys.stderr)
        return 2
    if args.output_dir and Path(args.output_dir).exists() and any(Path(args.output_dir).iterdir()):
        print(f"error: --output_dir {args.output_dir} is not empty; choose a new or empty folder", file=sys.stderr)
        return 2

    import platform

    import torch

    import hf_vit
    from hf_vit import HfViTConfig, HfViTForImageClassification
    from hf_vit.data import digits_arrays
    from hf_vit.fileio import atomic_directory, atomic_write_text

    torch.set_num_threads(args.train_threads)
    torch.manual_seed(args.seed)
    images, labels, train_idx, test_idx = digits_arrays()
    x_train, y_train = digits_32(train_idx, images), torch.from_numpy(labels[train_idx])
    x_test, y_test = digits_32(test_idx, images), torch.from_numpy(labels[test_idx])

    def log(line):
        print(line, file=sys.stderr, flush=True)

    model = HfViTForImageClassification(HfViTConfig(**MODEL))
    train(model, x_train, y_train, args.epochs, args.batch_size, args.seed, log)
    if args.output_dir:
        with atomic_directory(args.output_dir) as staging:
            model.save_pretrained(staging)
    torch.set_num_threads(args.threads)

    # a row: (name, module, r, whether r is set on the module's config before each pass; a static int8 module has
    # its r built in)
    int8, int8_rs = hf_vit.quantize_int8(model), r_values if args.int8_r is None else [args.int8_r]
    rows = [("dense (fp32)", model, 0, True), ("int8", int8, 0, True)]
    rows += [(f"merged r={r}", model, r, True) for r in r_values]
    rows += [(f"merged r={r} + int8", int8, r, True) for r in int8_rs]
    if args.int8_static:
        calibration = calibration_digits(x_train)
        for r in [0, *int8_rs]:
            name = f"merged r={r} + int8 static" if r else "int8 static"
            rows.append((name, static_int8(configure(model, r), calibration), r, False))

    results = {}
    for name, net, r, configurable in rows:
        if configurable:
            configure(net, r)
        with torch.inference_mode():  # the token count: the float model's at the same r
            tokens = configure(model, r)(pixel_values=x_test[:1], output_hidden_states=True).hidden_states[-1].shape[1]
        logits = predict(net, x_test)
        results[name] = dict(
            accuracy=100.0 * (logits.argmax(-1) == y_test).float().mean().item(), tokens=tokens, seconds=[]
        )
    for rep in range(args.timing_reps):  # interleaved, the starting row rotating
        order = rows[rep % len(rows) :] + rows[: rep % len(rows)]
        for name, net, r, configurable in order:
            if configurable:
                configure(net, r)
            start = time.perf_counter()
            predict(net, x_test)
            results[name]["seconds"].append(time.perf_counter() - start)
    configure(model, 0)

    dense = results["dense (fp32)"]
    dense_s = statistics.median(dense["seconds"])
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines = [
        f"hf_vit {MODEL['hidden_size']}-wide, {MODEL['num_hidden_layers']} blocks, trained {args.epochs} epochs on "
        f"{len(x_train)} digits (32x32, 4-px patches: 64 patch tokens + [CLS]); {len(x_test)} held-out digits; "
        f"{cpu}, {args.threads} thread(s), batch 8; torch {torch.__version__}.",
        "",
        "| model | tokens after the last block | held-out accuracy | vs dense | speed vs dense |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, *_ in rows:
        result = results[name]
        speed = dense_s / statistics.median(result["seconds"])
        lines.append(
            f"| {name} | {result['tokens']} | {result['accuracy']:.2f}% | "
            f"{result['accuracy'] - dense['accuracy']:+.2f} | {speed:.2f}× |"
        )
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        atomic_write_text(args.out, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
