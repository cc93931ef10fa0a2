"""hf-vit-train: train or fine-tune an hf_vit image classifier with Accelerate — the main job.

    accelerate launch scripts/train.py                      # the embedded digits, a small ViT, ~97.5%+ in < 60 s
    accelerate launch --multi_gpu --num_processes 2 scripts/train.py    # DDP (gloo on a machine without GPUs)
    hf-vit-train --train_dir my_images/ --output_dir out      # a model chosen from the images' size (logged)
    hf-vit-train --train_dir my_images/ --preset vit-small-patch16-224 --output_dir out

Writes to --output_dir: the model (safetensors) + ViTImageProcessor + model card, metrics.jsonl, training_curves.png,
all_results.json; checkpoints/checkpoint-<step>/ (with --checkpointing_steps), runs/ (with --report_to tensorboard).
The loop itself is `hf_vit.fit.fit`.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..cli import (
    RunFailure,
    UserError,
    add_data_arguments,
    add_logging_arguments,
    add_model_arguments,
    command,
    run_command,
)
from ..fit import FitSettings


def parse_args(argv=None) -> argparse.Namespace:
    from ..cli import add_hub_arguments

    parser = argparse.ArgumentParser(
        prog="hf-vit-train",
        description=__doc__.split("\n\n")[0],
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

    from ..cli import check_hub_arguments, check_model_flags
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

    from .. import checkpoints, output_dir

    output = Path(args.output_dir)
    inputs = {
        f"--{flag}": getattr(args, flag)
        for flag in ("train_dir", "validation_dir", "dataset_name", "model_name_or_path")
    }
    resuming = bool(args.resume_from_checkpoint) and bool(checkpoints.list_checkpoints(output / "checkpoints"))
    try:
        output_dir.check_output_dir(output, inputs=inputs, overwrite=args.overwrite_output_dir, resuming=resuming)
    except output_dir.OutputDirNotEmpty as error:
        raise UserError(
            f"--output_dir {output} already holds files ({', '.join(error.entries[:4])}); choose another folder, "
            "resume its run with --resume_from_checkpoint latest, or pass --overwrite_output_dir to replace the files "
            "a run writes there (nothing else is touched)"
        ) from None
    except ValueError as error:
        raise UserError(f"--output_dir: {error}") from None


def train(args) -> int:
    import datasets
    import torch
    from accelerate.utils import set_seed

    from .. import data as hdata
    from ..cli import build_model, show_prediction
    from ..fit import DiskFullError, SettingError, fit
    from ..model_setup import log_recipe, recipe_for_data
    from ..output_dir import OutputDirBusy, OutputDirNotEmpty

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    # from the launcher's environment: Accelerate's state is created by fit's Accelerator, with the right options
    main_process = int(os.environ.get("RANK", "0")) == 0
    if (
        os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true"
        and "MASTER_ADDR" in os.environ
        and int(os.environ.get("WORLD_SIZE", "1")) == 1
    ):
        print(
            "note: `accelerate launch --cpu --num_processes N` starts one process (N only applies under mpirun); "
            "for CPU DDP use `accelerate launch --multi_gpu --num_processes N` or "
            "--config_file scripts/accelerate_configs/cpu_ddp.yaml",
            file=sys.stderr,
        )
    try:
        data = hdata.load_image_data(
            dataset_name=args.dataset_name,
            dataset_config_name=args.dataset_config_name,
            train_dir=args.train_dir,
            validation_dir=args.validation_dir,
            image_column=args.image_column,
            label_column=args.label_column,
            validation_split=args.validation_split,
            split_seed=args.seed,
            streaming=args.streaming,
            cache_dir=args.cache_dir,
            max_train_samples=args.max_train_samples,
            max_eval_samples=args.max_eval_samples,
        )
    except FileNotFoundError as error:
        raise UserError(f"dataset not found: {error}") from None
    if main_process:
        for note in data.notes:
            print(note)
    # the data's recipe: the model when no model flag names one, and the kind of augmentation either way
    recipe = recipe_for_data(data)
    model_from_data = not (args.model_name_or_path or args.preset or args.config_name)
    if model_from_data and main_process:
        log_recipe(recipe)
    settings = settings_from(
        args,
        digits_recipe=data.is_digits,
        fine_tuning=bool(args.model_name_or_path),
        recipe=recipe if model_from_data else None,
        augmentation=recipe.augmentation,
    )
    if args.num_threads is not None:
        torch.set_num_threads(args.num_threads)
    elif model_from_data and recipe.num_threads:
        torch.set_num_threads(recipe.num_threads)
    set_seed(args.seed)  # the same initial weights on every process
    model, processor = build_model(args, data, recipe=recipe if model_from_data else None)
    inputs = {
        f"--{flag}": getattr(args, flag)
        for flag in ("train_dir", "validation_dir", "dataset_name", "model_name_or_path")
    }
    try:
        result = fit(model, processor, data, args.output_dir, settings, inputs=inputs, hub_model_id=args.hub_model_id)
    except OutputDirNotEmpty:
        check_output_dir(args)  # the CLI's wording, with the flags
        raise
    except SettingError as error:
        raise UserError(f"--{error}") from None
    except DiskFullError as error:
        raise RunFailure(str(error)) from None
    except OutputDirBusy as error:
        raise UserError(str(error)) from None
    if not main_process:
        return 0
    print(f"training time: {result.training_time_s:.1f} s ({result.completed_steps} steps)")
    print(f"saved model, image processor and model card to {result.output_dir}")
    print(f"{result.eval_split} accuracy: {100 * result.eval_accuracy:.2f}%")
    show_prediction(result.output_dir, data)  # a demo: never fails the run
    from ..cli import push_from_arguments
    from ..hub import PushError

    try:
        push_from_arguments(
            args,
            result.output_dir,
            commit_message=f"Train {result.output_dir.name} with hf_vit",
            extra_files=["training_curves.png", "all_results.json"],
        )
    except ValueError as error:  # the folder, the repo id or the token
        raise UserError(str(error)) from None
    except PushError as error:  # the Hub
        raise RunFailure(str(error)) from None
    return 0


@command
def main(argv=None) -> int:
    from ..cli import setup_logging

    args = parse_args(argv)
    setup_logging(args.verbose, args.quiet)

    def body():
        from ..data import DataError

        check_args(args)
        try:
            return train(args)
        except (DataError, ValueError) as error:  # the inputs: unreadable images, checkpoints that cannot resume
            raise UserError(str(error)) from None

    return run_command(body, verbose=args.verbose)


if __name__ == "__main__":
    sys.exit(main())
