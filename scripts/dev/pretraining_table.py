#!/usr/bin/env python
"""The measured table of docs/pretraining.md: how good the features of a DINO-pretrained ViT are on the embedded
digits, against raw pixels, a random-init ViT and the supervised default model, and what fine-tuning with 10 labels
per class gains from the DINO checkpoint.

    python scripts/dev/pretraining_table.py --out table.md [--work_dir DIR] [--seeds 5] [--finetune_seeds 3]
        [--pretrain_args "..."] [--train_args "..."] [--finetune_args "..."] [--no_dino] [--quick]

The digits' fixed stratified split (1,437 training / 360 held-out images), the tools run as a user runs them:

1. features (`hf_vit.evaluate`, each model's own pooled feature): raw pixels; a random-init ViT (the default digits
   model, `hf_vit.model_setup.DIGITS_MODEL`, seed 0); the DINO-pretrained ViT (`hf-vit-pretrain --output_dir DIR`,
   its defaults, timed); the supervised default model (`hf-vit-train --output_dir DIR`, its defaults, timed). Each by
   DINO's weighted k-NN (k=20, T=0.07) with every training label, and by a linear probe (logistic regression) with
   1 and 10 labelled images per class (`--seeds` draws, mean ± std) and with every label;
2. fine-tuning with 10 labels per class: `--finetune_seeds` draws of 10 training images per class, each written as an
   image folder (the 360 held-out digits as its validation folder), trained with `hf-vit-train` from scratch and
   from the DINO checkpoint (`--model_name_or_path`) on one schedule, the epochs, learning rate and augmentation of
   hf-vit-train's recipe for 8x8 images (`same_finetuning`); held-out accuracy, mean ± std.

Writes the markdown (with the date, the CPU's lscpu model name and ISA flags, torch's thread count and the commands)
to --out and prints it. The models and image folders go to --work_dir (default: a temporary folder, removed).
--no_dino leaves out what needs `hf-vit-pretrain`; --quick runs every step at toy size (a few training steps, two
seeds) to check the script, not to measure. Extra flags for the tools: --pretrain_args, --train_args (the supervised
run) and --finetune_args (both fine-tunes), each one shell-quoted string.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile")
QUICK_STEPS = ["--max_train_steps", "2"]


def cpu_description() -> str:
    """lscpu's model name, CPU count and the ISA flags that matter to torch on a CPU."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    isa = " ".join(f"{flag}:{'yes' if flag in flags else 'no'}" for flag in ISA_FLAGS)
    return f"{fields.get('Model name', '?').strip()}, {fields.get('CPU(s)', '?').strip()} CPUs; {isa}"


def tool(name: str) -> list[str]:
    """The command line of an hf_vit tool: its entry point beside this Python, else `python -m` its module."""
    entry = Path(sys.executable).parent / f"hf-vit-{name}"
    if entry.exists():
        return [str(entry)]
    return [sys.executable, "-c", f"import sys; from hf_vit.commands.{name} import main; sys.exit(main())"]


def run_tool(name: str, args: list[str], log: Path) -> float:
    """Run `hf-vit-NAME args` (its output to `log`), fail loudly on a non-zero exit; returns the wall seconds."""
    command = tool(name) + [str(a) for a in args]
    start = time.perf_counter()
    with open(log, "w") as handle:
        result = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        tail = log.read_text()[-2000:]
        raise SystemExit(f"hf-vit-{name} {shlex.join(map(str, args))} exited {result.returncode}:\n{tail}")
    return seconds


def has_pretrain() -> bool:
    import importlib.util

    return importlib.util.find_spec("hf_vit.commands.pretrain") is not None


def save_random_init(folder: Path) -> None:
    """The default digits model with random weights (seed 0), as a feature-extraction folder."""
    import torch

    from hf_vit import HfViTConfig, HfViTModel
    from hf_vit.data import image_processor_for
    from hf_vit.model_setup import DIGITS_MODEL

    torch.manual_seed(0)
    config = HfViTConfig(**DIGITS_MODEL)
    HfViTModel(config).save_pretrained(folder)
    image_processor_for(config.image_size).save_pretrained(folder)


def write_digits_folders(root: Path, per_class: int, seed: int) -> tuple[Path, Path]:
    """`per_class` training digits of each class (drawn by `seed` from the fixed training split) and all the held-out
    digits, as image folders (one sub-folder per class, 8x8 grey PNGs)."""
    from PIL import Image

    from hf_vit.data import digits_arrays
    from hf_vit.evaluation import sample_per_class

    images, labels, train_idx, test_idx = digits_arrays()
    chosen = train_idx[sample_per_class(labels[train_idx], per_class, seed)]
    folders = (root / "train", root / "validation")
    for folder, indices in zip(folders, (chosen, test_idx), strict=True):
        for index in indices:
            (folder / str(labels[index])).mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[index], mode="L").save(folder / str(labels[index]) / f"{index}.png")
    return folders


def same_finetuning() -> list[str]:
    """hf-vit-train's flags that give both 10-per-class fine-tunes one schedule: the epochs, learning rate and
    augmentation of its recipe for 8x8 images (what a from-scratch run on the folder uses by default; a run from a
    checkpoint would otherwise default to 3 epochs at the fine-tuning learning rate, 12 steps on 100 images)."""
    from hf_vit.model_setup import recipe_for_images

    recipe = recipe_for_images([(8, 8)])
    return [
        *("--num_train_epochs", str(recipe.num_train_epochs), "--learning_rate", f"{recipe.learning_rate:g}"),
        *("--augment", "on" if recipe.augment else "off"),
    ]


def held_out_accuracy(run_dir: Path) -> float:
    results = json.loads((run_dir / "all_results.json").read_text())
    return next(value for key, value in results.items() if key.endswith("_accuracy"))


def spread(values) -> str:
    import numpy as np

    return f"{100 * np.mean(values):.1f} ± {100 * np.std(values):.1f} %"


def features_table(evaluation, counts) -> str:
    lines = [
        "| features | k-NN (k=20) | "
        + " | ".join(f"linear probe, {n} label{'s' if n > 1 else ''} per class" for n in counts)
        + " | linear probe, all labels |",
        "|---|---:|" + "---:|" * (len(counts) + 1),
    ]
    for result in evaluation.results:
        cells = [f"{100 * result.knn:.1f} %"] + [spread(result.few_labels[n]["probe"]) for n in counts]
        lines.append(f"| {result.name} | " + " | ".join(cells) + f" | {100 * result.probe:.1f} % |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="markdown file to write (refused if it exists)")
    parser.add_argument("--work_dir", help="folder for the models and image folders (default: a temporary one)")
    parser.add_argument("--seeds", type=int, default=5, help="draws of each few-label probe (default 5)")
    parser.add_argument("--finetune_seeds", type=int, default=3, help="draws of the 10-per-class fine-tunes")
    parser.add_argument("--pretrain_args", default="", help="extra hf-vit-pretrain flags, one quoted string")
    parser.add_argument("--train_args", default="", help="extra flags for the supervised hf-vit-train run")
    parser.add_argument("--finetune_args", default="", help="extra hf-vit-train flags for both fine-tunes")
    parser.add_argument("--no_dino", action="store_true", help="leave out the rows that need hf-vit-pretrain")
    parser.add_argument("--quick", action="store_true", help="toy sizes: checks the script, measures nothing")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists():
        parser.error(f"--out {out} exists; choose another file")
    if not args.no_dino and not has_pretrain():
        parser.error("hf-vit-pretrain is not installed (hf_vit.commands.pretrain); pass --no_dino to leave it out")
    seeds, finetune_seeds = (2, 1) if args.quick else (args.seeds, args.finetune_seeds)
    quick = QUICK_STEPS if args.quick else []
    extra = {name: shlex.split(getattr(args, f"{name}_args")) for name in ("pretrain", "train", "finetune")}

    import torch
    from transformers.utils import logging as hf_logging

    import hf_vit

    hf_logging.set_verbosity_error()  # a classifier folder loaded as a backbone: its head is left out on purpose
    hf_logging.disable_progress_bar()
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="pretraining_table-"))
    work.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    commands, timings = [], {}
    try:
        save_random_init(work / "random_init")
        models = [(work / "random_init", "random-init ViT (default digits model)")]
        if not args.no_dino:
            pretrain = ["--output_dir", work / "dino", *quick, *extra["pretrain"]]
            timings["hf-vit-pretrain"] = run_tool("pretrain", pretrain, work / "pretrain.log")
            commands.append("hf-vit-pretrain " + shlex.join(map(str, pretrain)).replace(str(work), "DIR"))
            models.append((work / "dino", "DINO-pretrained ViT (hf-vit-pretrain defaults)"))
        train = ["--output_dir", work / "supervised", *quick, *extra["train"]]
        timings["hf-vit-train (supervised, all labels)"] = run_tool("train", train, work / "train.log")
        commands.append("hf-vit-train " + shlex.join(map(str, train)).replace(str(work), "DIR"))
        models.append((work / "supervised", "supervised default model (hf-vit-train defaults, all labels)"))

        counts = [1, 10]
        start = time.perf_counter()
        evaluation = hf_vit.evaluate(
            [str(path) for path, _ in models],
            names=[name for _, name in models],
            raw_pixels=True,
            labels_per_class=counts,
            seeds=seeds,
        )
        timings["hf_vit.evaluate (all rows)"] = time.perf_counter() - start

        finetunes = {"from scratch": []} | ({} if args.no_dino else {"from the DINO checkpoint": []})
        for seed in range(finetune_seeds):
            train_dir, validation_dir = write_digits_folders(work / f"ten_per_class_{seed}", 10, seed)
            for label in finetunes:
                run = work / f"finetune_{seed}_{'dino' if 'DINO' in label else 'scratch'}"
                flags = ["--train_dir", train_dir, "--validation_dir", validation_dir, "--output_dir", run]
                flags += ["--model_name_or_path", work / "dino"] if "DINO" in label else []
                flags += [*same_finetuning(), *quick, *extra["finetune"]]
                seconds = run_tool("train", flags, work / f"{run.name}.log")
                timings.setdefault(f"hf-vit-train, 10 per class, {label} (each)", []).append(seconds)
                finetunes[label].append(held_out_accuracy(run))
                if seed == 0:
                    commands.append("hf-vit-train " + shlex.join(map(str, flags)).replace(str(work), "DIR"))
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)

    lines = [
        f"Measured {started:%Y-%m-%d} on {cpu_description()}, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, by `python scripts/dev/pretraining_table.py "
        f"{shlex.join(sys.argv[1:] if argv is None else argv)}`"
        + (" (--quick: toy sizes, not a measurement)" if args.quick else "")
        + ".",
        "",
        f"Embedded digits, fixed stratified split ({evaluation.data['train_images']} training / "
        f"{evaluation.data['eval_images']} held-out images); accuracy on the held-out images. Each model's own "
        f"pooled feature; k-NN: DINO's weighted vote (T=0.07) over every training image; linear probe: logistic "
        "regression on features standardised with all training images' statistics, N labelled images per class drawn "
        f"by {seeds} seeds (mean ± std).",
        "",
        features_table(evaluation, counts),
        "",
        f"Fine-tuning with 10 labelled images per class ({finetune_seeds} draws, each trained from scratch and from "
        "the DINO checkpoint with one schedule: hf-vit-train's recipe for these images, "
        f"`{shlex.join(same_finetuning())}`), accuracy on the 360 held-out digits:",
        "",
        "| fine-tuning, 10 labels per class | held-out accuracy |",
        "|---|---:|",
        *[f"| {label} | {spread(values)} |" for label, values in finetunes.items()],
        "",
        "| step | wall time |",
        "|---|---:|",
        *[
            f"| {name} | {(sum(value) / len(value) if isinstance(value, list) else value):.0f} s |"
            for name, value in timings.items()
        ],
        "",
        "Commands (DIR: the work folder):",
        "",
        "```bash",
        *commands,
        "```",
        "",
    ]
    text = "\n".join(lines)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
