"""Train or fine-tune an hf_vit image classifier with transformers.Trainer, on the same data path as train.py.

    python scripts/finetune_trainer.py                                       # the embedded digits, from scratch
    python scripts/finetune_trainer.py --model_name_or_path outputs/hf_vit-digits --train_dir my_images \\
        --output_dir out --num_train_epochs 3 --learning_rate 5e-5

Data and model flags are train.py's; every other flag is a `transformers.TrainingArguments` field
(--num_train_epochs, --per_device_train_batch_size, --learning_rate, --eval_strategy, --save_steps, --bf16, ...).
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from hf_vit.cli import command, new_parser


def from_scratch_defaults() -> dict:
    """The TrainingArguments values of hf-vit-train's defaults for a model trained from scratch (the digits, or the
    model chosen from the data): given unless on the command line. With the model chosen from the data, the epochs
    and learning rate are then the recipe's (hf_vit.model_setup.recipe_for_data) unless given."""
    from hf_vit.fit import FitSettings
    from hf_vit.model_setup import recipe_for_images

    s = recipe_for_images([(8, 8)]).apply(FitSettings())  # the digits'
    values = {
        "--num_train_epochs": s.num_train_epochs,
        "--per_device_train_batch_size": s.per_device_train_batch_size,
        "--per_device_eval_batch_size": s.per_device_eval_batch_size,
        "--learning_rate": s.learning_rate,
        "--weight_decay": s.weight_decay,
        "--warmup_steps": s.warmup_ratio,  # TrainingArguments: a float below 1 is a ratio
        "--lr_scheduler_type": s.lr_scheduler_type,
        "--label_smoothing_factor": s.label_smoothing,
    }
    return {flag: str(value) for flag, value in values.items()}


COMMON_DEFAULTS = {
    "--eval_strategy": "epoch",
    "--save_strategy": "no",
    "--logging_strategy": "epoch",
    "--report_to": "none",
}


def parse_args(argv=None):
    from hf_vit.cli import (
        HelpFormatter,
        add_data_arguments,
        add_license_arguments,
        add_logging_arguments,
        add_model_arguments,
        add_num_threads_argument,
        add_settings,
        hf_argument_parser,
    )
    from hf_vit.extras import require

    parser = new_parser(description=__doc__.split("\n\n")[0], add_help=False, formatter_class=HelpFormatter)
    parser.add_argument("-h", "--help", action="store_true")
    add_logging_arguments(parser)
    add_data_arguments(parser)
    add_model_arguments(parser)
    add_license_arguments(parser)
    shared = parser.add_argument_group("as hf-vit-train's")
    add_settings(shared, ["augment", "augmentation", "overwrite_output_dir"])
    add_num_threads_argument(shared)
    args, rest = parser.parse_known_args(argv)
    if args.help:
        parser.print_help()
        print("\nand any transformers.TrainingArguments flag")
        sys.exit(0)
    require("train", "hf-vit-finetune")  # after --help, which needs no extra: TrainingArguments needs accelerate
    from transformers import TrainingArguments

    given = {item.split("=")[0] for item in rest if item.startswith("--")}
    defaults = dict(COMMON_DEFAULTS)
    args.given_flags = given
    if not (args.dataset_name or args.train_dir or args.model_name_or_path) or not (
        args.model_name_or_path or args.preset or args.config_name
    ):
        defaults.update(from_scratch_defaults())
    if "--output_dir" not in given:
        defaults["--output_dir"] = "outputs/hf_vit-trainer"
    for flag, value in defaults.items():
        if flag not in given:
            rest += [flag, value]
    (training_args,) = hf_argument_parser(TrainingArguments, also=[parser]).parse_args_into_dataclasses(rest)
    check_report_to(training_args.report_to)
    return args, training_args


def check_report_to(report_to) -> None:
    """--report_to's names, checked now against transformers' integrations (Trainer would refuse them only after the
    data and the model are loaded)."""
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    unknown = [name for name in names if name not in ("none", "all", *INTEGRATION_TO_CALLBACK)]
    if unknown:
        from hf_vit.cli import UserError

        raise UserError(
            f"--report_to {', '.join(unknown)}: expected none, all or one or more of "
            f"{', '.join(sorted(INTEGRATION_TO_CALLBACK))}"
        )


@command
def main(argv=None) -> int:
    from hf_vit.cli import UserError, check_license_arguments, check_model_flags, command_line, fail, setup_logging
    from hf_vit.output_dir import RunLock

    try:
        args, training_args = parse_args(argv)
    except ValueError as error:  # TrainingArguments' own validation (e.g. fp16 without a GPU)
        fail(str(error).splitlines()[0])
    setup_logging(args.verbose, args.quiet)
    args.command_line = command_line("hf-vit-finetune", argv)

    from hf_vit.data import DataError

    check_model_flags(args)
    check_license_arguments(args)
    resolve_resume(training_args)
    check_output_dir(args, training_args)  # before anything is created
    # one run per output folder; the other processes of a distributed run write only through the main one
    main_process = int(os.environ.get("RANK", "0")) == 0
    try:
        with RunLock(training_args.output_dir) if main_process else contextlib.nullcontext():
            if main_process:  # again under the lock: another run may have written there since the first check
                check_output_dir(args, training_args)
            return run(args, training_args)
    except DataError as error:
        raise UserError(str(error)) from None


def resolve_resume(training_args) -> None:
    """--resume_from_checkpoint as in train.py: "latest" is the newest checkpoint-N folder in --output_dir (none yet:
    a fresh start); any other value must be a checkpoint folder of Trainer, else the checkpoints there are named."""
    from transformers.trainer_utils import get_last_checkpoint

    from hf_vit.cli import fail

    value = training_args.resume_from_checkpoint
    if not value:
        return
    output = Path(training_args.output_dir)
    if value == "latest":
        training_args.resume_from_checkpoint = get_last_checkpoint(output) if output.is_dir() else None
        if training_args.resume_from_checkpoint is None:
            print(f"no checkpoint in {output} yet: starting fresh")
        return
    if not (Path(value) / "trainer_state.json").is_file():
        found = sorted(
            (p.name for p in output.glob("checkpoint-*") if p.is_dir()),
            key=lambda name: int(name.rsplit("-", 1)[1]) if name.rsplit("-", 1)[1].isdigit() else -1,
        )
        fail(
            f"--resume_from_checkpoint {value} is not a checkpoint folder of this command (checkpoint-N with "
            f"trainer_state.json); {output} holds "
            + (", ".join(found) if found else "no checkpoints")
            + ' (or pass "latest": the newest one, or a fresh start when there is none)'
        )


def check_output_dir(args, training_args):
    from hf_vit.cli import check_training_output_dir

    output = Path(training_args.output_dir)
    resuming = bool(training_args.resume_from_checkpoint) and any(output.glob("checkpoint-*"))
    check_training_output_dir(args, output, overwrite=args.overwrite_output_dir, resuming=resuming)


def run(args, training_args):
    import numpy as np
    import torch
    from transformers import Trainer, TrainerCallback

    from hf_vit import data as hdata
    from hf_vit.cli import (
        RunFailure,
        UserError,
        build_model,
        fit_settings,
        lineage_from_arguments,
        load_data,
        print_recipe,
        push_from_arguments,
        show_prediction,
    )
    from hf_vit.model_card import render_model_card
    from hf_vit.model_setup import recipe_for_data
    from hf_vit.output_dir import DiskFullError, write_trained_model

    push_to_hub = training_args.push_to_hub
    if push_to_hub:
        from hf_vit.cli import check_hub_arguments

        try:  # a bad repo id fails now, not after training
            check_hub_arguments(training_args)
        except ValueError as error:
            raise UserError(str(error)) from None
        from hf_vit.cli import check_hub_access

        check_hub_access(training_args)  # a token that cannot push fails now, not after training
    # Trainer pickles its arguments into every checkpoint (training_args.bin): the token stays out of them
    hub_token, training_args.hub_token = training_args.hub_token, None
    training_args.push_to_hub = False  # Trainer would create the repo at start-up; the push happens at the end
    training_args.remove_unused_columns = False  # our batches are already {"pixel_values", "labels"}
    training_args.label_names = ["labels"]
    # the base's licence and repo follow the weights into the card; a relabelling is refused before any data is loaded
    lineage, (license, license_note) = lineage_from_arguments(args)
    data = load_data(args, seed=training_args.seed)
    if args.streaming:
        raise UserError("--streaming is supported by scripts/train.py; Trainer here uses map-style data")
    # the data's recipe: the model (and its epochs, learning rate) when no model flag names one; the augmentation kind
    recipe = recipe_for_data(data)
    model_from_data = not (args.model_name_or_path or args.preset or args.config_name)
    if model_from_data:
        if int(os.environ.get("RANK", "0")) == 0:
            print_recipe(recipe)
        for name in ("num_train_epochs", "learning_rate"):
            if f"--{name}" not in args.given_flags:
                setattr(training_args, name, getattr(recipe, name))
    if args.num_threads is not None:
        torch.set_num_threads(args.num_threads)
    elif model_from_data and recipe.num_threads:
        torch.set_num_threads(recipe.num_threads)
    torch.manual_seed(training_args.seed)
    model, processor = build_model(args, data, recipe=recipe if model_from_data else None)
    settings = fit_settings(args, recipe, model_from_data=model_from_data, digits=data.is_digits)
    train_set, eval_set = hdata.build_datasets(
        data,
        processor,
        skip_bad_images=settings.skip_bad_images,
        augment=settings.augment,
        augmentation=settings.augmentation,
    )

    def compute_metrics(eval_pred):
        logits, labels = eval_pred
        return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}

    class AugmentationEpoch(TrainerCallback):  # new augmentation draws each epoch (see hf_vit.data)
        def on_epoch_begin(self, args, state, control, **kwargs):
            train_set.set_epoch(int(state.epoch or 0))

    train_set.set_seed(training_args.seed)
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=hdata.collate,
        compute_metrics=compute_metrics,
        callbacks=[AugmentationEpoch()],
    )
    try:
        train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    except hdata.BadImageError as error:
        raise UserError(str(error)) from None
    metrics = trainer.evaluate()
    output_dir = Path(training_args.output_dir)
    if trainer.is_world_process_zero():
        card = render_model_card(
            model.config,
            num_parameters=sum(p.numel() for p in model.parameters()),
            model_name=output_dir.name,
            repo_id=training_args.hub_model_id if push_to_hub else None,
            license=license,
            license_note=license_note,
            lineage=lineage,
            command=args.command_line,
            results={"accuracy": metrics["eval_accuracy"], "loss": metrics["eval_loss"]},
            hyperparameters={
                "learning_rate": training_args.learning_rate,
                "train_batch_size": training_args.per_device_train_batch_size,
                "num_epochs": training_args.num_train_epochs,
                "lr_scheduler_type": str(training_args.lr_scheduler_type),
                "weight_decay": training_args.weight_decay,
                "label_smoothing": training_args.label_smoothing_factor,
                "seed": training_args.seed,
                "trainer": "transformers.Trainer",
            },
            **hdata.card_evaluation(data),
        )
        try:  # the same final folder as hf-vit-train's (no training_args.bin: outputs are safetensors only)
            write_trained_model(output_dir, trainer.accelerator.unwrap_model(trainer.model), processor, card)
        except DiskFullError as error:
            raise RunFailure(str(error)) from None
        print(f"training time: {train_result.metrics.get('train_runtime', 0):.1f} s ({train_result.global_step} steps)")
        print(f"saved model, image processor and model card to {output_dir}")
        print(f"{data.eval_split} accuracy: {100 * metrics['eval_accuracy']:.2f}%")
        show_prediction(output_dir, data)

        training_args.push_to_hub = push_to_hub  # off while Trainer ran: it would have made the repo at start-up
        training_args.hub_token = hub_token
        push_from_arguments(
            training_args, output_dir, commit_message=f"Fine-tune {output_dir.name} with hf_vit and Trainer"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
