"""hf-vit-pretrain: pretrain an hf_vit backbone without labels (DINO self-distillation) with Accelerate.

    hf-vit-pretrain --output_dir dino-digits                     # the embedded digits, labels ignored
    hf-vit-pretrain --train_dir my_images/ --output_dir dino-mine  # a folder of images (sub-folders or not)
    hf-vit-pretrain --model_name_or_path facebook/dino-vits16 --train_dir my_images/ --output_dir dino-more
    accelerate launch --multi_gpu --num_processes 2 -m hf_vit.commands.pretrain --output_dir out   # DDP

Writes to --output_dir: the teacher's backbone (HfViTModel, safetensors) + ViTImageProcessor + model card,
metrics.jsonl (loss and, for labelled data, the k-NN accuracy of each epoch), training_curves.png, all_results.json;
checkpoints/checkpoint-<step>/ (with --checkpointing_steps). Fine-tune it with `hf-vit-train --model_name_or_path`.
The loop is `hf_vit.pretrain.pretrain`; the flags are made from its `PretrainSettings`.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..cli import RunFailure, UserError, command, command_line

# FitSettings fields that mean nothing without labels or under DINO's own schedules: not flags of this command
_NOT_FLAGS = ("label_smoothing", "lr_scheduler_type", "layer_decay", "augment")


def parse_args(argv=None) -> argparse.Namespace:
    from ..cli import (
        HelpFormatter,
        add_data_arguments,
        add_hub_arguments,
        add_license_arguments,
        add_logging_arguments,
        add_num_threads_argument,
        add_settings,
        new_parser,
        setting_names,
    )
    from ..pretrain import PretrainSettings

    parser = new_parser(prog="hf-vit-pretrain", description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    add_data_arguments(parser)
    model = parser.add_argument_group(
        "model (default: chosen from the images' size, a small ViT for tiny images such as the digits, "
        "ViT-Tiny/16 for photos)"
    )
    model.add_argument(
        "--model_name_or_path",
        help="continue pretraining a backbone: any hf_vit.from_pretrained source (hf_vit folder or Hub repo, timm, "
        "transformers ViT/DINO/DINOv2)",
    )
    model.add_argument("--preset", help="pretrain from scratch with a named size (hf_vit.PRESETS)")
    model.add_argument(
        "--config_overrides", help='override config values of the model from scratch, e.g. "hidden_size=128"'
    )
    t = parser.add_argument_group("pretraining (defaults fitted to the data where they say so)")
    t.add_argument(
        "--output_dir",
        default="outputs/hf_vit-dino-digits",
        help="the teacher backbone, its card, metrics.jsonl, training curves and checkpoints/",
    )
    names = [n for n in setting_names("training", PretrainSettings) if n not in _NOT_FLAGS]
    add_settings(t, names, PretrainSettings)
    add_num_threads_argument(t)
    add_license_arguments(parser)
    add_hub_arguments(parser)
    t.add_argument("--hub_token", help=argparse.SUPPRESS)
    add_logging_arguments(parser)
    # the data group's settings and the model flags that hf-vit-train has and this command does not
    parser.set_defaults(config_name=None)
    return parser.parse_args(argv)


def check_args(args) -> None:
    """What can be checked before loading data or building a model: hf-vit-train's checks, with this command's
    settings (a folder of images needs no class sub-folders)."""
    from ..pretrain import PretrainSettings
    from .train_flags import check_args as check_training_args

    check_training_args(args, PretrainSettings, folder_holds="images")


def pretrain_from_arguments(args) -> int:
    from ..extras import require

    require("train", "hf-vit-pretrain")
    from dataclasses import replace

    import datasets
    import torch
    from accelerate.utils import set_seed

    from ..cli import (
        as_flags,
        given_settings,
        lineage_from_arguments,
        parse_overrides,
        push_from_arguments,
        training_inputs,
    )
    from ..configuration_hf_vit import HfViTConfig
    from ..data import image_processor_for
    from ..fit import DiskFullError, SettingError
    from ..modeling_hf_vit import HfViTModel
    from ..pretrain import PretrainSettings, local_crops_size_for, pretrain, pretrain_recipe

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    main_process = int(os.environ.get("RANK", "0")) == 0
    lineage, _ = lineage_from_arguments(args)
    data = load_unlabelled_data(args)
    if main_process:
        for note in data.notes:
            print(note)
    from ..data import sample_image_sizes

    recipe = pretrain_recipe(sample_image_sizes(data))
    from_data = not (args.model_name_or_path or args.preset)
    settings = recipe.apply(PretrainSettings())
    overrides = parse_overrides(args.config_overrides)
    set_seed(args.seed)  # the same initial weights on every process
    if args.model_name_or_path:
        import hf_vit

        try:
            model = hf_vit.from_pretrained(args.model_name_or_path, task="feature-extraction", cache_dir=args.cache_dir)
        except (OSError, ValueError) as error:
            raise UserError(
                f"cannot load a model from {args.model_name_or_path}: {str(error).splitlines()[0]}"
            ) from None
        from ..checkpoint_io import load_image_processor
        from ..convert.pretrained import pretrained_location

        try:
            processor = load_image_processor(pretrained_location(args.model_name_or_path, cache_dir=args.cache_dir))
        except (OSError, ValueError):
            processor = image_processor_for(model.config.image_size)
        settings = replace(settings, local_crops_size=local_crops_size_for(model.config))
    else:
        try:
            if args.preset:
                config = HfViTConfig.from_preset(args.preset, **{"pooling": "cls", **overrides})
            else:
                config = HfViTConfig(**{**recipe.model, **overrides})
        except (ValueError, TypeError) as error:
            raise UserError(f"--config_overrides: {error}") from None
        model, processor = HfViTModel(config), image_processor_for(config.image_size)
        if args.preset or "image_size" in overrides or "patch_size" in overrides:
            settings = replace(settings, local_crops_size=local_crops_size_for(config))
    settings = replace(settings, **given_settings(args, PretrainSettings))
    if from_data and main_process:  # what the run trains: the recipe, with the flags given
        shown = replace(
            recipe,
            model={**recipe.model, **overrides},
            settings={name: getattr(settings, name) for name in recipe.settings},
        )
        print(as_flags(shown.describe()))
    if args.num_threads is not None:
        torch.set_num_threads(args.num_threads)
    elif from_data and recipe.num_threads:
        torch.set_num_threads(recipe.num_threads)
    try:
        result = pretrain(
            data,
            args.output_dir,
            settings,
            model=model,
            processor=processor,
            inputs=training_inputs(args),
            hub_model_id=args.hub_model_id,
            lineage=lineage,
            command=args.command_line,
        )
    except SettingError as error:
        raise UserError(f"--{error}") from None
    except DiskFullError as error:
        raise RunFailure(str(error)) from None
    if not main_process:
        return 0
    print(f"pretraining time: {result.training_time_s:.1f} s ({result.completed_steps} steps)")
    print(f"saved the teacher backbone, image processor and model card to {result.output_dir}")
    if result.knn_accuracy is not None:
        print(f"{result.eval_split} k-NN accuracy (k=20) of the teacher's features: {100 * result.knn_accuracy:.2f}%")
    push_from_arguments(
        args,
        result.output_dir,
        commit_message=f"Pretrain {result.output_dir.name} with hf_vit (DINO)",
        extra_files=["training_curves.png", "all_results.json"],
    )
    return 0


def load_unlabelled_data(args):
    """The data flags' images (`cli.load_data`): labels are not needed, so a folder of images without class
    sub-folders is read as one class (`hf_vit.data.load_image_data`'s `labels=False`)."""
    from .. import data as hdata
    from ..cli import load_data

    if args.train_dir and not hdata.has_class_folders(args.train_dir):
        try:
            return hdata.load_image_data(
                train_dir=args.train_dir,
                validation_split=args.validation_split,
                split_seed=args.seed,
                cache_dir=args.cache_dir,
                max_train_samples=args.max_train_samples,
                max_eval_samples=args.max_eval_samples,
                labels=False,
            )
        except hdata.DataError as error:
            raise UserError(str(error)) from None
    return load_data(args, seed=args.seed, streaming=args.streaming)


@command
def main(argv=None) -> int:
    from ..cli import setup_logging

    args = parse_args(argv)
    args.command_line = command_line("hf-vit-pretrain", argv)
    setup_logging(args.verbose, args.quiet)

    from ..data import DataError

    check_args(args)
    try:
        return pretrain_from_arguments(args)
    except (DataError, ValueError) as error:
        raise UserError(str(error)) from None


if __name__ == "__main__":
    sys.exit(main())
