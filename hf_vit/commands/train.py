"""hf-vit-train: train or fine-tune an hf_vit image classifier with Accelerate — the main job.

    accelerate launch scripts/train.py                      # the embedded digits, a small ViT, ~97.5%+ in < 60 s
    accelerate launch --multi_gpu --num_processes 2 scripts/train.py    # DDP (gloo on a machine without GPUs)
    hf-vit-train --train_dir my_images/ --output_dir out      # a model chosen from the images' size (logged)
    hf-vit-train --train_dir my_images/ --preset vit-small-patch16-224 --output_dir out

Writes to --output_dir: the model (safetensors) + ViTImageProcessor + model card, metrics.jsonl, training_curves.png,
all_results.json; checkpoints/checkpoint-<step>/ (with --checkpointing_steps), runs/ (with --report_to tensorboard).
The loop itself is `hf_vit.fit.fit`; the training flags are made from its `FitSettings`.
"""

from __future__ import annotations

import os
import sys

from ..cli import (
    RunFailure,
    UserError,
    build_model,
    command,
    command_line,
    fit_settings,
    lineage_from_arguments,
    load_data,
    note_cpu_launch,
    print_recipe,
    push_from_arguments,
    show_prediction,
    training_inputs,
)
from ..extras import require
from .train_flags import check_args, parse_args


def train(args) -> int:
    require("train", "hf-vit-train")
    import datasets
    import torch
    from accelerate.utils import set_seed

    from ..fit import DiskFullError, SettingError, fit
    from ..model_setup import recipe_for_data

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    # from the launcher's environment: Accelerate's state is created by fit's Accelerator, with the right options
    main_process = int(os.environ.get("RANK", "0")) == 0
    if main_process:
        note_cpu_launch()
    lineage, _ = lineage_from_arguments(args)  # the base's licence and repo follow the weights into the card
    data = load_data(args, seed=args.seed, streaming=args.streaming)
    if main_process:
        for note in data.notes:
            print(note)
    # the data's recipe: the model when no model flag names one, and the kind of augmentation either way
    recipe = recipe_for_data(data)
    model_from_data = not (args.model_name_or_path or args.preset or args.config_name)
    if model_from_data and main_process:
        print_recipe(recipe)
    settings = fit_settings(args, recipe, model_from_data=model_from_data, digits=data.is_digits)
    if args.num_threads is not None:
        torch.set_num_threads(args.num_threads)
    elif model_from_data and recipe.num_threads:
        torch.set_num_threads(recipe.num_threads)
    set_seed(args.seed)  # the same initial weights on every process
    model, processor = build_model(args, data, recipe=recipe if model_from_data else None)
    inputs = training_inputs(args)
    try:
        result = fit(
            model,
            processor,
            data,
            args.output_dir,
            settings,
            inputs=inputs,
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
    print(f"training time: {result.training_time_s:.1f} s ({result.completed_steps} steps)")
    print(f"saved model, image processor and model card to {result.output_dir}")
    print(f"{result.eval_split} accuracy: {100 * result.eval_accuracy:.2f}%")
    show_prediction(result.output_dir, data)  # a demo: never fails the run
    push_from_arguments(
        args,
        result.output_dir,
        commit_message=f"Train {result.output_dir.name} with hf_vit",
        extra_files=["training_curves.png", "all_results.json"],
    )
    return 0


@command
def main(argv=None) -> int:
    from ..cli import setup_logging

    args = parse_args(argv)
    args.command_line = command_line("hf-vit-train", argv)
    setup_logging(args.verbose, args.quiet)

    from ..data import DataError

    check_args(args)
    try:
        return train(args)
    except (DataError, ValueError) as error:  # the inputs: unreadable images, checkpoints that cannot resume
        raise UserError(str(error)) from None


if __name__ == "__main__":
    sys.exit(main())
