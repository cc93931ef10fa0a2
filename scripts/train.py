#!/usr/bin/env python
"""Train or fine-tune an hf_vit image classifier with Accelerate — the main job.

    accelerate launch scripts/train.py                      # the embedded digits, a small ViT, ~97.5%+ in < 60 s
    accelerate launch --num_processes 2 --cpu scripts/train.py ...      # DDP over gloo
    python scripts/train.py --train_dir my_images/ --preset vit-small-patch16-224 --output_dir out

Writes to --output_dir: the model (safetensors) + ViTImageProcessor + model card, metrics.jsonl, training_curves.png,
checkpoints/checkpoint-<step>/ (with --checkpointing_steps), runs/ (with --report_to tensorboard).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing



def parse_args(argv=None):
    from hf_vit.cli import add_data_arguments, add_model_arguments

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_data_arguments(parser)
    add_model_arguments(parser)
    t = parser.add_argument_group("training")
    t.add_argument("--output_dir", default="outputs/hf_vit-digits")
    t.add_argument("--overwrite_output_dir", action="store_true",
                   help="allow an --output_dir that already holds files. Only what a run writes is replaced: "
                        "model.safetensors, config.json, preprocessor_config.json, README.md, the two code files, "
                        "metrics.jsonl, training_curves.png, all_results.json, and an earlier run's "
                        "checkpoints/checkpoint-* (removed when this run saves its first checkpoint or its model); "
                        "nothing else in the folder is touched")
    t.add_argument("--num_train_epochs", type=int, default=None, help="default: 20 for the digits, else 3")
    t.add_argument("--max_train_steps", type=int, help="stop after this many optimizer steps (overrides epochs)")
    t.add_argument("--per_device_train_batch_size", type=int, default=32)
    t.add_argument("--per_device_eval_batch_size", type=int, default=256)
    t.add_argument("--learning_rate", type=float, default=None, help="peak LR; default 1e-3 from scratch, 5e-5 fine-tuning")
    t.add_argument("--weight_decay", type=float, default=0.05)
    t.add_argument("--lr_scheduler_type", default="cosine", help="a transformers.get_scheduler name")
    t.add_argument("--num_warmup_steps", type=int, default=None, help="default: --warmup_ratio of the steps")
    t.add_argument("--warmup_ratio", type=float, default=0.1)
    t.add_argument("--layer_decay", type=float, default=None, help="layer-wise LR decay, e.g. 0.75 for fine-tuning")
    t.add_argument("--augment", choices=["auto", "on", "off"], default="auto",
                   help="training augmentation (RandomResizedCrop + flip; small shifts for digits). auto: on, except "
                        "for the digits recipe, which reaches higher accuracy in its short budget without it")
    t.add_argument("--label_smoothing", type=float, default=0.1)
    t.add_argument("--gradient_accumulation_steps", type=int, default=1)
    t.add_argument("--max_grad_norm", type=float, default=1.0, help="gradient clipping; 0 turns it off")
    t.add_argument("--mixed_precision", choices=["no", "bf16", "fp16"], default=None, help="default: accelerate config's")
    t.add_argument("--seed", type=int, default=42)
    t.add_argument("--num_workers", type=int, default=0, help="DataLoader worker processes")
    t.add_argument("--num_threads", type=int, default=None,
                   help="torch CPU threads per process; default: 1 for the digits model (tiny matmuls gain nothing "
                        "from more and suffer badly on a busy machine), else torch's default")
    t.add_argument("--checkpointing_steps", default=None, help='an integer (every N steps) or "epoch"')
    t.add_argument("--checkpoints_total_limit", type=int, default=2, help="keep this many newest checkpoints (0: all)")
    t.add_argument("--resume_from_checkpoint", help='a checkpoint folder, or "latest" (the newest in --output_dir/checkpoints; none: start fresh)')
    t.add_argument("--report_to", default=None, help='Accelerate trackers, e.g. "tensorboard" or "all"')
    t.add_argument("--no_progress", action="store_true", help="no tqdm bar")
    from hf_vit.hub import add_hub_arguments

    add_hub_arguments(parser)
    t.add_argument("--hub_token", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def check_args(args):
    from hf_vit.cli import UserError
    from hf_vit.hub import check_hub_arguments

    try:  # a bad repo id fails now, not after training
        check_hub_arguments(args)
    except ValueError as error:
        raise UserError(str(error)) from None

    if args.checkpointing_steps not in (None, "epoch"):
        try:
            args.checkpointing_steps = int(args.checkpointing_steps)
        except ValueError:
            raise UserError(f'--checkpointing_steps must be an integer or "epoch", got {args.checkpointing_steps!r}') from None
        if args.checkpointing_steps <= 0:
            raise UserError("--checkpointing_steps must be positive")
    # cheap checks first, before the heavy imports and the data
    if args.preset:
        from hf_vit.configuration_hf_vit import PRESETS

        if args.preset not in PRESETS:
            raise UserError(f"Unknown preset {args.preset!r}; known presets: {', '.join(PRESETS)}")
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
    check_numbers(args)
    from hf_vit.cli import check_config_overrides

    check_config_overrides(args.config_overrides)
    check_output_dir(args)


def check_numbers(args):
    """Values that would train nothing, or nonsense, are refused before any work."""
    from hf_vit.cli import UserError

    rules = [  # (flag, value, ok, what is expected)
        ("num_train_epochs", args.num_train_epochs, lambda v: v >= 1, "at least 1"),
        ("max_train_steps", args.max_train_steps, lambda v: v >= 1, "at least 1"),
        ("per_device_train_batch_size", args.per_device_train_batch_size, lambda v: v >= 1, "at least 1"),
        ("per_device_eval_batch_size", args.per_device_eval_batch_size, lambda v: v >= 1, "at least 1"),
        ("gradient_accumulation_steps", args.gradient_accumulation_steps, lambda v: v >= 1, "at least 1"),
        ("learning_rate", args.learning_rate, lambda v: v > 0, "a positive number"),
        ("weight_decay", args.weight_decay, lambda v: v >= 0, "0 or more"),
        ("warmup_ratio", args.warmup_ratio, lambda v: 0 <= v <= 1, "between 0 and 1"),
        ("num_warmup_steps", args.num_warmup_steps, lambda v: v >= 0, "0 or more"),
        ("layer_decay", args.layer_decay, lambda v: 0 < v <= 1, "in (0, 1]"),
        ("label_smoothing", args.label_smoothing, lambda v: 0 <= v < 1, "in [0, 1)"),
        ("max_grad_norm", args.max_grad_norm, lambda v: v >= 0, "0 (off) or more"),
        ("validation_split", args.validation_split, lambda v: 0 < v < 1, "a fraction between 0 and 1, e.g. 0.15"),
        ("max_train_samples", args.max_train_samples, lambda v: v >= 1, "at least 1"),
        ("max_eval_samples", args.max_eval_samples, lambda v: v >= 1, "at least 1"),
        ("shuffle_buffer_size", args.shuffle_buffer_size, lambda v: v >= 1, "at least 1"),
        ("checkpoints_total_limit", args.checkpoints_total_limit, lambda v: v >= 0, "0 (keep all) or more"),
        ("num_workers", args.num_workers, lambda v: v >= 0, "0 or more"),
        ("num_threads", args.num_threads, lambda v: v >= 1, "at least 1"),
    ]
    for flag, value, ok, expected in rules:
        if value is not None and not (math.isfinite(value) and ok(value)):
            raise UserError(f"--{flag} must be {expected}, got {value}")


def check_output_dir(args):
    from hf_vit import output_dir, training
    from hf_vit.cli import UserError

    output = Path(args.output_dir)
    inputs = {f"--{flag}": getattr(args, flag) for flag in ("train_dir", "validation_dir", "dataset_name", "model_name_or_path")}
    resuming = bool(args.resume_from_checkpoint) and bool(training.list_checkpoints(output / "checkpoints"))
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


def main(argv=None):
    from hf_vit.cli import RunFailure, UserError, fail

    args = parse_args(argv)
    try:
        check_args(args)
        from hf_vit.data import DataError
        from hf_vit.output_dir import OutputDirBusy, RunLock

        # one run per output folder; the other processes of a distributed run write only through the main one
        lock = RunLock(args.output_dir) if int(os.environ.get("RANK", "0")) == 0 else contextlib.nullcontext()
        try:
            with lock:
                return train(args)
        except OutputDirBusy as error:
            raise UserError(str(error)) from None
        except DataError as error:  # e.g. an unreadable image met during training
            raise UserError(str(error)) from None
    except UserError as error:
        fail(str(error))
    except RunFailure as error:
        fail(str(error), code=1)
    except KeyboardInterrupt:
        fail("interrupted", code=130)


def train(args):
    import datasets
    import torch
    import torch.nn.functional as F
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    import hf_vit  # noqa: F401
    from hf_vit import data as hdata
    from hf_vit import training
    from hf_vit.cli import RunFailure, UserError, build_model
    from hf_vit.output_dir import is_disk_full

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    output_dir = Path(args.output_dir)
    checkpoint_dir = output_dir / "checkpoints"

    # Launched as several processes (accelerate launch --multi_gpu / torchrun) on a machine without GPUs: DDP on CPU
    # over gloo. (accelerate's own `--cpu --num_processes N` starts a single process unless it runs under mpirun.)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true" and "MASTER_ADDR" in os.environ and not distributed:
        print("note: `accelerate launch --cpu --num_processes N` starts one process (N only applies under mpirun); "
              "for CPU DDP use `accelerate launch --multi_gpu --num_processes N` or "
              "--config_file scripts/accelerate_configs/cpu_ddp.yaml", file=sys.stderr)
    accelerator = Accelerator(
        cpu=distributed and not torch.cuda.is_available(),
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=args.report_to,
        project_dir=str(output_dir),
    )
    main_process = accelerator.is_main_process

    def say(message):
        if main_process:
            print(message, flush=True)

    # ---- data -------------------------------------------------------------------------------------------------
    try:
        data = hdata.load_image_data(
            dataset_name=args.dataset_name, dataset_config_name=args.dataset_config_name, train_dir=args.train_dir,
            validation_dir=args.validation_dir, image_column=args.image_column, label_column=args.label_column,
            validation_split=args.validation_split, split_seed=args.seed, streaming=args.streaming,
            cache_dir=args.cache_dir, max_train_samples=args.max_train_samples, max_eval_samples=args.max_eval_samples,
        )
    except hdata.DataError as error:
        raise UserError(str(error)) from None
    except FileNotFoundError as error:
        raise UserError(f"dataset not found: {error}") from None
    for note in data.notes:
        say(note)

    # recipe defaults: the digits recipe is tuned for the 60 s target; others are the usual ViT fine-tuning values
    fine_tuning = bool(args.model_name_or_path)
    if args.num_train_epochs is None:
        args.num_train_epochs = 20 if data.is_digits else 3
    if args.learning_rate is None:
        args.learning_rate = 5e-5 if fine_tuning else 1e-3

    if args.num_threads is not None:
        torch.set_num_threads(args.num_threads)
    elif data.is_digits and not (args.model_name_or_path or args.preset or args.config_name):
        torch.set_num_threads(1)

    # ---- model --------------------------------------------------------------------------------------------------
    set_seed(args.seed)  # the same initial weights on every process
    model, processor = build_model(args, data, hdata.image_processor_for)
    config = model.config

    # ---- resume: which checkpoint, and does it fit this model? ----------------------------------------------------
    resume_path, resume_state = None, None
    if args.resume_from_checkpoint:
        try:
            resume_path = training.resolve_checkpoint(args.resume_from_checkpoint, checkpoint_dir)
        except ValueError as error:
            raise UserError(str(error)) from None
        if resume_path is None:
            say(f"no intact checkpoint in {checkpoint_dir} yet: starting from scratch")
        else:
            newest = training.list_checkpoints(checkpoint_dir)
            if args.resume_from_checkpoint == "latest" and newest and newest[-1] != resume_path:
                say(f"note: passing over damaged checkpoint(s) newer than {resume_path.name}")
            resume_state = training.read_checkpoint_state(resume_path)
            try:
                training.check_compatible(resume_state, config, resume_path)
            except ValueError as error:
                raise UserError(str(error)) from None
    # an earlier run's checkpoints (allowed by --overwrite_output_dir) go when this run saves its own, not before:
    # a run that fails first leaves them as they were
    earlier_checkpoints = training.list_checkpoints(checkpoint_dir) if resume_path is None else []
    if earlier_checkpoints and not args.overwrite_output_dir:
        raise UserError(
            f"{checkpoint_dir} holds checkpoints of an earlier run: resume with --resume_from_checkpoint latest, "
            "or pass --overwrite_output_dir to start over"
        )

    def discard_earlier_checkpoints():
        if main_process and earlier_checkpoints:
            training.discard_checkpoints(earlier_checkpoints)
        earlier_checkpoints.clear()

    # ---- batches --------------------------------------------------------------------------------------------------
    if data.streaming:
        hdata.stream_for_training(data, args.seed, args.shuffle_buffer_size, accelerator.process_index, accelerator.num_processes)
    train_set, eval_set = hdata.build_datasets(data, processor, skip_bad_images=args.skip_bad_images, augment=args.augment == "on" or (args.augment == "auto" and not data.is_digits))
    if hasattr(train_set, "set_seed"):
        train_set.set_seed(args.seed + accelerator.process_index)
    loader_kwargs = dict(collate_fn=hdata.collate, num_workers=args.num_workers)
    if data.streaming:
        train_loader = torch.utils.data.DataLoader(train_set, batch_size=args.per_device_train_batch_size, **loader_kwargs)
        eval_loader = torch.utils.data.DataLoader(eval_set, batch_size=args.per_device_eval_batch_size, **loader_kwargs)
    else:
        train_loader = torch.utils.data.DataLoader(
            train_set, batch_size=args.per_device_train_batch_size,
            sampler=hdata.EpochShuffleSampler(len(train_set), args.seed),
            generator=torch.Generator().manual_seed(args.seed),  # keeps the loader's seed draw off the global RNG
            **loader_kwargs,
        )
        eval_loader = torch.utils.data.DataLoader(
            eval_set, batch_size=args.per_device_eval_batch_size, generator=torch.Generator(), **loader_kwargs
        )

    if data.streaming:
        num_update_steps_per_epoch = None
        max_train_steps = args.max_train_steps
        num_epochs = 10**9
    else:
        num_update_steps_per_epoch = hdata.steps_per_epoch(
            len(train_set), args.per_device_train_batch_size, accelerator.num_processes, args.gradient_accumulation_steps
        )
        max_train_steps = args.max_train_steps or args.num_train_epochs * num_update_steps_per_epoch
        num_epochs = math.ceil(max_train_steps / num_update_steps_per_epoch)
    warmup = args.num_warmup_steps if args.num_warmup_steps is not None else int(args.warmup_ratio * max_train_steps)
    # what fixes the data order and the schedule: a resumed run must have the same, or it resumes another run
    run_settings = {
        "per_device_train_batch_size": args.per_device_train_batch_size, "num_processes": accelerator.num_processes,
        "gradient_accumulation_steps": args.gradient_accumulation_steps, "seed": args.seed, "dataset": data.name,
        "train_examples": None if data.streaming else len(train_set), "validation_split": args.validation_split,
        "augment": args.augment == "on" or (args.augment == "auto" and not data.is_digits),
        "max_train_steps": max_train_steps, "warmup_steps": warmup, "lr_scheduler_type": args.lr_scheduler_type,
    }
    if resume_state is not None:
        try:
            training.check_same_run(resume_state, run_settings, resume_path)
        except ValueError as error:
            raise UserError(str(error)) from None

    optimizer = torch.optim.AdamW(
        training.param_groups(model, args.weight_decay, args.learning_rate, args.layer_decay), lr=args.learning_rate
    )
    # Accelerate's scheduler wrapper steps the schedule once per process per update, hence the factor
    try:
        lr_scheduler = get_scheduler(
            args.lr_scheduler_type, optimizer=optimizer,
            num_warmup_steps=warmup * accelerator.num_processes,
            num_training_steps=max_train_steps * accelerator.num_processes,
        )
    except (ValueError, KeyError) as error:
        raise UserError(f"--lr_scheduler_type {args.lr_scheduler_type!r}: {error}") from None

    if data.streaming:
        model, optimizer, eval_loader, lr_scheduler = accelerator.prepare(model, optimizer, eval_loader, lr_scheduler)
    else:
        model, optimizer, train_loader, eval_loader, lr_scheduler = accelerator.prepare(
            model, optimizer, train_loader, eval_loader, lr_scheduler
        )

    # ---- restore --------------------------------------------------------------------------------------------------
    completed_steps, history, epoch_sums = 0, [], {}
    if resume_path is not None:
        try:
            accelerator.load_state(str(resume_path))
        except Exception as error:  # noqa: BLE001  the model fits (checked above): what fails to load is damaged
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise UserError(training.damaged_message(resume_path, f"{type(error).__name__}: {first_line}")) from None
        completed_steps = resume_state["completed_steps"]
        history = resume_state.get("history", [])
        epoch_sums = resume_state.get("epoch_sums", {})
        say(f"resumed from {resume_path} at step {completed_steps}")
    metrics = training.MetricsLog(history)

    hyperparameters = {
        "learning_rate": args.learning_rate, "train_batch_size": args.per_device_train_batch_size,
        "total_train_batch_size": args.per_device_train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps,
        "num_processes": accelerator.num_processes, "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "optimizer": "AdamW", "weight_decay": args.weight_decay, "lr_scheduler_type": args.lr_scheduler_type,
        "warmup_steps": warmup, "training_steps": max_train_steps, "label_smoothing": args.label_smoothing,
        "max_grad_norm": args.max_grad_norm, "layer_decay": args.layer_decay, "seed": args.seed,
        "mixed_precision": accelerator.mixed_precision,
    }
    if args.report_to:
        accelerator.init_trackers("runs", config={k: v for k, v in hyperparameters.items() if v is not None})

    num_params = sum(p.numel() for p in accelerator.unwrap_model(model).parameters())
    say(
        f"data: {data.name} ({len(train_set) if not data.streaming else 'streaming'} train, "
        f"{len(eval_set) if not data.streaming else '?'} {data.eval_split}, {data.num_labels} classes) | model: "
        f"{config.num_hidden_layers}x{config.hidden_size} patch {config.patch_size} at {config.image_size}, "
        f"{num_params / 1e6:.2f}M params | {accelerator.num_processes} process(es) on {accelerator.device} | "
        f"{max_train_steps} steps"
    )

    def evaluate():
        model.eval()
        loss_sum, correct, count = 0.0, 0, 0
        with torch.no_grad():
            for batch in eval_loader:
                logits = model(pixel_values=batch["pixel_values"]).logits
                losses = F.cross_entropy(logits.float(), batch["labels"], reduction="none")
                predictions = logits.argmax(-1)
                losses, predictions, labels = accelerator.gather_for_metrics((losses, predictions, batch["labels"]))
                loss_sum += losses.sum().item()
                correct += (predictions == labels).sum().item()
                count += labels.numel()
        model.train()
        return {"eval_loss": loss_sum / max(count, 1), "eval_accuracy": correct / max(count, 1), "eval_samples": count}

    def state_for_checkpoint(epoch_sums):
        return {
            "completed_steps": completed_steps, "history": metrics.history, "epoch_sums": epoch_sums,
            "model": training.model_signature(config), "run": run_settings,
        }

    def checkpoint(epoch_sums):
        discard_earlier_checkpoints()
        try:
            path = training.save_checkpoint(accelerator, checkpoint_dir, completed_steps, state_for_checkpoint(epoch_sums),
                                            args.checkpoints_total_limit)
        except Exception as error:
            if is_disk_full(error):
                raise RunFailure(f"disk full while saving checkpoint {completed_steps} in {checkpoint_dir}; nothing "
                                 "half-written was left, earlier checkpoints are intact: free space and resume "
                                 "with --resume_from_checkpoint latest") from None
            raise
        if main_process and progress is not None:
            progress.write(f"saved {path}")

    # ---- train ----------------------------------------------------------------------------------------------------
    starting_epoch = 0
    resume_batches = 0
    if num_update_steps_per_epoch is not None:
        starting_epoch = completed_steps // num_update_steps_per_epoch
        resume_batches = (completed_steps % num_update_steps_per_epoch) * args.gradient_accumulation_steps
    progress = tqdm(total=max_train_steps, initial=completed_steps, disable=not main_process or args.no_progress,
                    desc="training", dynamic_ncols=True)
    model.train()
    start = time.perf_counter()
    epoch = starting_epoch
    last_eval = None
    evaluation_time = 0.0

    def end_of_epoch(epoch, sums):
        nonlocal last_eval, evaluation_time
        eval_start = time.perf_counter()
        last_eval = evaluate()
        evaluation_time += time.perf_counter() - eval_start
        train_loss = sums["loss"] / max(sums["count"], 1)
        row = {"epoch": epoch + 1, "step": completed_steps, "train_loss": train_loss, **last_eval,
               "lr": lr_scheduler.get_last_lr()[0], "elapsed_s": round(time.perf_counter() - start, 3)}
        if main_process:
            metrics.log(row)
            progress.set_postfix(loss=f"{train_loss:.3f}", acc=f"{100 * last_eval['eval_accuracy']:.2f}%")
        if args.report_to:
            accelerator.log({k: v for k, v in row.items() if k not in ("epoch", "step")}, step=completed_steps)

    # a checkpoint taken at the last step of an epoch comes before that epoch's evaluation: do it now
    if resume_path is not None and completed_steps and num_update_steps_per_epoch and not resume_batches:
        if not any(row.get("epoch") == starting_epoch for row in metrics.history):
            end_of_epoch(starting_epoch - 1, epoch_sums or {"loss": 0.0, "count": 0})
    for epoch in range(starting_epoch, num_epochs):
        if completed_steps >= max_train_steps:
            break
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        loader = train_loader
        sums = {"loss": 0.0, "count": 0}
        if epoch == starting_epoch and resume_batches:
            if data.streaming:
                import itertools

                loader = itertools.islice(train_loader, resume_batches, None)
            else:
                from accelerate import skip_first_batches

                loader = skip_first_batches(train_loader, resume_batches)
            sums = dict(epoch_sums) or sums
        for batch in loader:
            if data.streaming:
                batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            if batch["labels"].numel() == 0:
                continue
            with accelerator.accumulate(model):
                logits = model(pixel_values=batch["pixel_values"]).logits
                loss = F.cross_entropy(logits.float(), batch["labels"], label_smoothing=args.label_smoothing)
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            sums["loss"] += loss.item()
            sums["count"] += 1
            if accelerator.sync_gradients:
                completed_steps += 1
                progress.update(1)
                if isinstance(args.checkpointing_steps, int) and completed_steps % args.checkpointing_steps == 0:
                    checkpoint(sums)
                if completed_steps >= max_train_steps:
                    break
        end_of_epoch(epoch, sums)
        if args.checkpointing_steps == "epoch":
            checkpoint({})
    training_time = time.perf_counter() - start
    progress.close()
    if last_eval is None:  # resumed from a checkpoint taken after the last step
        last_eval = evaluate()

    bad = set()
    for dataset in (train_set, eval_set):
        bad |= getattr(dataset, "bad_images", set())
    if bad:
        say(f"skipped {len(bad)} unreadable image(s) (per process), e.g. {sorted(bad)[0]}")

    # ---- final folder: model + processor + card + curves, written atomically -------------------------------------
    accelerator.wait_for_everyone()
    if args.report_to:
        accelerator.end_training()
    exit_code = 0
    if main_process:
        from hf_vit.model_card import render_model_card, write_model_card
        from hf_vit.output_dir import final_files

        unwrapped = accelerator.unwrap_model(model)
        results = {"accuracy": last_eval["eval_accuracy"], "loss": last_eval["eval_loss"]}
        try:
            # written whole into a hidden folder first, then moved in file by file: a failure (a full disk) leaves the
            # files of an earlier run as they were; nothing but the run's own files is replaced
            with final_files(output_dir) as staging:
                unwrapped.save_pretrained(staging, safe_serialization=True)
                processor.save_pretrained(staging)
                card = render_model_card(
                    unwrapped.config, num_parameters=num_params, model_name=output_dir.name, repo_id=args.hub_model_id,
                    datasets=[data.name] if args.dataset_name else None,
                    dataset_name=hdata.DIGITS_DESCRIPTION if data.is_digits else data.name,
                    results=results, hyperparameters={k: v for k, v in hyperparameters.items() if v is not None},
                )
                write_model_card(staging, card)
                training.plot_curves(metrics.history, staging / "training_curves.png")
                (staging / "metrics.jsonl").write_text(metrics.jsonl())
                (staging / "all_results.json").write_text(json.dumps(
                    {f"{data.eval_split}_accuracy": last_eval["eval_accuracy"], f"{data.eval_split}_loss": last_eval["eval_loss"],
                     "train_steps": completed_steps, "training_time_s": round(training_time, 2),
                     "evaluation_time_s": round(evaluation_time, 2),  # part of training_time_s
                     "per_device_train_batch_size": args.per_device_train_batch_size,
                     "num_processes": accelerator.num_processes,
                     "gradient_accumulation_steps": args.gradient_accumulation_steps}, indent=1) + "\n")
                discard_earlier_checkpoints()
        except Exception as error:
            if is_disk_full(error):
                kept = "its checkpoints are intact, " if training.list_checkpoints(checkpoint_dir) else ""
                raise RunFailure(f"disk full while writing the trained model to {output_dir}; nothing in it was "
                                 f"changed ({kept}free space and run again)") from None
            raise

        print(f"training time: {training_time:.1f} s ({completed_steps} steps)")
        print(f"saved model, image processor and model card to {output_dir}")
        print(f"{data.eval_split} accuracy: {100 * last_eval['eval_accuracy']:.2f}%")
        from hf_vit.cli import show_prediction

        show_prediction(output_dir, data)  # a demo: never fails the run

        from hf_vit.hub import PushError, push_from_arguments

        try:
            push_from_arguments(args, output_dir, commit_message=f"Train {output_dir.name} with hf_vit",
                                extra_files=["training_curves.png", "all_results.json"])
        except (ValueError, PushError) as error:
            print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
            exit_code = 1
    accelerator.wait_for_everyone()
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
