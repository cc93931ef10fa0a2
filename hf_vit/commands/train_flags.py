"""hf-vit-train's flags: the parser (the training flags made from `FitSettings`), and the checks that need no data
or model (`check_args`: a bad value fails in a second). The settings they give: `hf_vit.cli.fit_settings`."""

from __future__ import annotations

import argparse
import os

from ..cli import (
    UserError,
    add_data_arguments,
    add_license_arguments,
    add_logging_arguments,
    add_model_arguments,
    given_settings,
    new_parser,
)
from ..fit import RESUME_HINT, FitSettings


def parse_args(argv=None) -> argparse.Namespace:
    """The flags; the training ones are made from `FitSettings` (`hf_vit.cli.add_settings`)."""
    from ..cli import HelpFormatter, add_hub_arguments, add_num_threads_argument, add_settings, setting_names
    from . import train

    parser = new_parser(prog="hf-vit-train", description=train.__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    add_data_arguments(parser)
    add_model_arguments(parser)
    t = parser.add_argument_group("training (defaults fitted to the data where they say so)")
    t.add_argument(
        "--output_dir",
        default="outputs/hf_vit-digits",
        help="the trained model, its card, metrics.jsonl, training curves and checkpoints/",
    )
    add_settings(t, setting_names("training"))
    add_num_threads_argument(t)
    add_license_arguments(parser)
    add_hub_arguments(parser)
    t.add_argument("--hub_token", help=argparse.SUPPRESS)
    add_logging_arguments(parser)
    return parser.parse_args(argv)


def check_args(args, settings_class=FitSettings, folder_holds: str = "one sub-folder of images per class") -> None:
    """Everything that can be checked before loading data or building a model: bad values fail in a second. For
    every trainer on fit's loop: `settings_class` (`FitSettings`, `PretrainSettings`) checks the settings' flags, and
    `folder_holds` says what an image folder must hold."""
    from pathlib import Path

    from ..cli import check_hub_arguments, check_license_arguments, check_model_flags
    from ..fit import SettingError

    try:  # a bad repo id fails now, not after training
        check_hub_arguments(args)
    except ValueError as error:
        raise UserError(str(error)) from None
    try:
        settings_class(**given_settings(args, settings_class)).validate()
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
            raise UserError(f"--{flag} {folder} is empty: expected {folder_holds}")
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
    """The output folder's check, early: a refused folder fails before any data is loaded."""
    from pathlib import Path

    from .. import checkpoints
    from ..cli import check_training_output_dir

    output = Path(args.output_dir)
    check_training_output_dir(
        args,
        output,
        overwrite=args.overwrite_output_dir,
        resuming=bool(args.resume_from_checkpoint) and bool(checkpoints.list_checkpoints(output / "checkpoints")),
        hint=RESUME_HINT,
    )
