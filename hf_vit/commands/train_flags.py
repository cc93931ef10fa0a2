"""hf-vit-train's flags: the parser, the checks that need no data or model (`check_args`, a bad value fails in a
second), and the fit settings they give (`settings_from`: the recipe's defaults where a flag is not given)."""

from __future__ import annotations

import argparse
import os

from ..cli import UserError, add_data_arguments, add_license_arguments, add_logging_arguments, add_model_arguments
from ..fit import FitSettings


def parse_args(argv=None) -> argparse.Namespace:
    from ..cli import add_hub_arguments
    from . import train

    parser = argparse.ArgumentParser(
        prog="hf-vit-train",
        description=train.__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_data_arguments(parser)
    add_model_arguments(parser)
    t = parser.add_argument_group("training (default values: the digits recipe where it differs)")
    t.add_argument("--output_dir", default="outputs/hf_vit-digits")
    t.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="allow an --output_dir that already holds files. Only what a run writes is replaced: "
        "model.safetensors, config.json, preprocessor_config.json, README.md, the two code files, "
        "metrics.jsonl, training_curves.png, all_results.json, and an earlier run's "
        "checkpoints/checkpoint-* (removed when this run saves its first checkpoint or its model); "
        "nothing else in the folder is touched",
    )
    t.add_argument(
        "--num_train_epochs",
        type=int,
        default=None,
        help="default: the recipe chosen from the images' size (20 for images up to 64 px such as the "
        "digits, 3 for photos); 3 for a given model",
    )
    t.add_argument("--max_train_steps", type=int, help="stop after this many optimizer steps (overrides epochs)")
    t.add_argument("--per_device_train_batch_size", type=int, default=32)
    t.add_argument("--per_device_eval_batch_size", type=int, default=256)
    t.add_argument(
        "--learning_rate", type=float, default=None, help="peak LR; default 1e-3 from scratch, 5e-5 fine-tuning"
    )
    t.add_argument("--weight_decay", type=float, default=0.05)
    t.add_argument("--lr_scheduler_type", default="cosine", help="a transformers.get_scheduler name")
    t.add_argument("--num_warmup_steps", type=int, default=None, help="default: --warmup_ratio of the steps")
    t.add_argument("--warmup_ratio", type=float, default=0.1)
    t.add_argument("--layer_decay", type=float, default=None, help="layer-wise LR decay, e.g. 0.75 for fine-tuning")
    t.add_argument(
        "--augment",
        choices=["auto", "on", "off"],
        default="auto",
        help="training augmentation, of the kind that fits the images: small shifts (no flips) for images "
        "up to 64 px, RandomResizedCrop + flip for photos. auto: the recipe chosen from the images' "
        "size (off for images up to 64 px such as the digits, which reach higher accuracy in their "
        "short budget without it); on for a given model",
    )
    t.add_argument("--label_smoothing", type=float, default=0.1)
    t.add_argument("--gradient_accumulation_steps", type=int, default=1)
    t.add_argument("--max_grad_norm", type=float, default=1.0, help="gradient clipping; 0 turns it off")
    t.add_argument(
        "--mixed_precision", choices=["no", "bf16", "fp16"], default=None, help="default: accelerate config's"
    )
    t.add_argument("--seed", type=int, default=42)
    t.add_argument("--num_workers", type=int, default=0, help="DataLoader worker processes")
    t.add_argument(
        "--num_threads",
        type=int,
        default=None,
        help="torch CPU threads per process; default: 1 for the digits model (tiny matmuls gain nothing "
        "from more and suffer badly on a busy machine), else torch's default",
    )
    t.add_argument("--checkpointing_steps", default=None, help='an integer (every N steps) or "epoch"')
    t.add_argument("--checkpoints_total_limit", type=int, default=2, help="keep this many newest checkpoints (0: all)")
    t.add_argument(
        "--resume_from_checkpoint",
        help='a checkpoint folder, or "latest" (the newest intact one in --output_dir/checkpoints; none: start fresh)',
    )
    t.add_argument("--report_to", default=None, help='Accelerate trackers, e.g. "tensorboard" or "all"')
    t.add_argument("--no_progress", action="store_true", help="no tqdm bar")
    add_license_arguments(parser)
    add_hub_arguments(parser)
    t.add_argument("--hub_token", help=argparse.SUPPRESS)
    add_logging_arguments(parser)
    return parser.parse_args(argv)


def settings_from(
    args, digits_recipe: bool, fine_tuning: bool, recipe=None, augmentation: str | None = None
) -> FitSettings:
    """The fit settings of the flags (same names), with the recipe's defaults where a flag was not given: `recipe`
    (`model_setup.recipe_for_data`) when its model is trained, else the digits' or the general ones."""
    checkpointing = args.checkpointing_steps
    if checkpointing not in (None, "epoch"):
        try:
            checkpointing = int(checkpointing)
        except ValueError:
            raise UserError(f'--checkpointing_steps must be an integer or "epoch", got {checkpointing!r}') from None
    given = {name: getattr(args, name) for name in FitSettings.__dataclass_fields__ if hasattr(args, name)}
    return FitSettings(
        **{
            **given,
            "num_train_epochs": args.num_train_epochs
            if args.num_train_epochs is not None
            else recipe.num_train_epochs
            if recipe
            else 20
            if digits_recipe
            else 3,
            "learning_rate": args.learning_rate
            if args.learning_rate is not None
            else 5e-5
            if fine_tuning
            else recipe.learning_rate
            if recipe
            else 1e-3,
            "augment": args.augment == "on"
            or (args.augment == "auto" and (recipe.augment if recipe else not digits_recipe)),
            "augmentation": augmentation,
            "checkpointing_steps": checkpointing,
            "progress": not args.no_progress,
        }
    )


def check_args(args) -> None:
    """Everything that can be checked before loading data or building a model: bad values fail in a second."""
    from pathlib import Path

    from ..cli import check_hub_arguments, check_license_arguments, check_model_flags
    from ..fit import SettingError

    try:  # a bad repo id fails now, not after training
        check_hub_arguments(args)
    except ValueError as error:
        raise UserError(str(error)) from None
    try:
        settings_from(args, digits_recipe=False, fine_tuning=False).validate()
        if args.num_threads is not None and args.num_threads < 1:
            raise SettingError("num_threads", f"must be at least 1, got {args.num_threads}")
        for name in ("max_train_samples", "max_eval_samples"):
            if getattr(args, name) is not None and getattr(args, name) < 1:
                raise SettingError(name, f"must be at least 1, got {getattr(args, name)}")
    except SettingError as error:
        raise UserError(f"--{error}") from None
    check_model_flags(args)
    check_license_arguments(args)
    for flag in ("train_dir", "validation_dir"):
        folder = getattr(args, flag)
        if folder and not Path(folder).is_dir():
            raise UserError(f"--{flag} {folder} does not exist or is not a folder")
        if folder and not any(p.is_file() for p in Path(folder).rglob("*")):
            raise UserError(f"--{flag} {folder} is empty: expected one sub-folder of images per class")
    if args.streaming and not args.max_train_steps:
        raise UserError("--streaming needs --max_train_steps (a stream has no known length)")
    if args.mixed_precision == "fp16":
        import torch

        if not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true"):
            raise UserError("--mixed_precision fp16 needs a GPU; on CPU use --mixed_precision bf16")
    check_output_dir(args)
    from ..cli import check_hub_access

    check_hub_access(args)  # a token that cannot push fails now, not after training


def check_output_dir(args) -> None:
    from pathlib import Path

    from .. import checkpoints
    from ..cli import check_training_output_dir

    output = Path(args.output_dir)
    check_training_output_dir(
        args,
        output,
        overwrite=args.overwrite_output_dir,
        resuming=bool(args.resume_from_checkpoint) and bool(checkpoints.list_checkpoints(output / "checkpoints")),
        resume_hint="resume its run with --resume_from_checkpoint latest, ",
    )
