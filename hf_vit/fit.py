"""The training loop: data -> model -> optimizer -> loop -> evaluation -> checkpoints -> resume -> final folder.

`fit(model, processor, data, output_dir, settings)` trains with Accelerate (one process, DDP on CPU or GPUs) and
returns a `FitResult`; `scripts/train.py` is a thin command line over it. What it guarantees:

- **Kill-safe, bitwise resume.** The data order depends only on the seed and the epoch; checkpoints hold the model,
  optimizer, scheduler and every RNG state (`hf_vit.checkpoints`), so a run resumed from any checkpoint, mid-epoch
  included, ends with the weights of an uninterrupted one.
- **The user's files are safe** (`hf_vit.output_dir`): the output folder is checked and locked first; the final
  files are written whole and moved in one by one; a failed run leaves the folder as it found it.
- Messages go through `logging` (logger `hf_vit.fit`); nothing is printed but the progress bar.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from . import checkpoints
from . import data as hdata
from .extras import require
from .output_dir import DiskFullError, RunLock, check_output_dir, is_disk_full, write_trained_model
from .training import MetricsLog, param_groups

logger = logging.getLogger(__name__)


class SettingError(ValueError):
    """A training setting with a value that would train nothing or nonsense; `name` is the setting."""

    def __init__(self, name: str, message: str):
        self.name = name
        super().__init__(f"{name} {message}")


@dataclass
class FitSettings:
    """How to train; the names are those of transformers' example scripts (and of `scripts/train.py`'s flags)."""

    num_train_epochs: int = 3
    max_train_steps: int | None = None  # overrides the epochs
    per_device_train_batch_size: int = 32
    per_device_eval_batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    lr_scheduler_type: str = "cosine"  # a transformers.get_scheduler name
    num_warmup_steps: int | None = None  # default: warmup_ratio of the steps
    warmup_ratio: float = 0.1
    layer_decay: float | None = None
    augment: bool = False
    augmentation: str | None = None  # "shift" | "crop_flip" (hf_vit.data.build_transforms); None: the data's default
    label_smoothing: float = 0.1
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0  # 0: no clipping
    mixed_precision: str | None = None  # "no" | "bf16" | "fp16"; None: Accelerate's config
    seed: int = 42
    num_workers: int = 0
    checkpointing_steps: int | str | None = None  # every N steps, or "epoch"
    checkpoints_total_limit: int = 2  # 0: keep all
    resume_from_checkpoint: str | None = None  # a checkpoint folder, or "latest" (none yet: start fresh)
    report_to: str | None = None  # Accelerate trackers, e.g. "tensorboard"
    overwrite_output_dir: bool = False
    skip_bad_images: bool = False
    validation_split: float | None = None  # recorded with checkpoints: it changes the training set
    shuffle_buffer_size: int = 10_000  # streaming data only
    progress: bool = True

    def validate(self) -> None:
        """Raise `SettingError` for the first value that would train nothing or nonsense."""
        rules = [  # (name, ok, what is expected)
            ("num_train_epochs", lambda v: v >= 1, "at least 1"),
            ("max_train_steps", lambda v: v >= 1, "at least 1"),
            ("per_device_train_batch_size", lambda v: v >= 1, "at least 1"),
            ("per_device_eval_batch_size", lambda v: v >= 1, "at least 1"),
            ("gradient_accumulation_steps", lambda v: v >= 1, "at least 1"),
            ("learning_rate", lambda v: v > 0, "a positive number"),
            ("weight_decay", lambda v: v >= 0, "0 or more"),
            ("warmup_ratio", lambda v: 0 <= v <= 1, "between 0 and 1"),
            ("num_warmup_steps", lambda v: v >= 0, "0 or more"),
            ("layer_decay", lambda v: 0 < v <= 1, "in (0, 1]"),
            ("label_smoothing", lambda v: 0 <= v < 1, "in [0, 1)"),
            ("max_grad_norm", lambda v: v >= 0, "0 (off) or more"),
            ("validation_split", lambda v: 0 < v < 1, "a fraction between 0 and 1, e.g. 0.15"),
            ("shuffle_buffer_size", lambda v: v >= 1, "at least 1"),
            ("checkpoints_total_limit", lambda v: v >= 0, "0 (keep all) or more"),
            ("num_workers", lambda v: v >= 0, "0 or more"),
        ]
        for name, ok, expected in rules:
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and ok(value)):
                raise SettingError(name, f"must be {expected}, got {value}")
        steps = self.checkpointing_steps
        if steps is not None and steps != "epoch" and not (isinstance(steps, int) and steps >= 1):
            raise SettingError("checkpointing_steps", f'must be a positive integer or "epoch", got {steps!r}')
        if self.augmentation not in (None, *hdata.AUGMENTATIONS):
            raise SettingError(
                "augmentation", f"must be one of {', '.join(hdata.AUGMENTATIONS)}, got {self.augmentation!r}"
            )
        if self.mixed_precision not in (None, "no", "bf16", "fp16"):
            raise SettingError("mixed_precision", f"must be no, bf16 or fp16, got {self.mixed_precision!r}")


@dataclass
class FitResult:
    output_dir: Path
    eval_split: str
    eval_accuracy: float
    eval_loss: float
    completed_steps: int
    training_time_s: float
    evaluation_time_s: float
    history: list[dict]
    resumed_from: Path | None = None
    skipped_images: list[str] = field(default_factory=list)


def fit(
    model,
    processor,
    data: hdata.ImageData,
    output_dir,
    settings: FitSettings,
    *,
    inputs=None,
    hub_model_id: str | None = None,
) -> FitResult:
    """Train `model` (an `HfViTForImageClassification`, its labels those of `data`) and write the final folder.

    `inputs` names the run's local inputs (label -> path) that the output folder must stay out of. Raises
    `SettingError`, `output_dir.OutputDirNotEmpty`/`OutputDirBusy`, `ValueError` (checkpoint problems),
    `hf_vit.data.DataError` (an unreadable image) and `DiskFullError`; the output folder is then as it was, except
    for checkpoints the run saved before failing."""
    require("train", "`fit`")
    settings.validate()
    output_dir = Path(output_dir)
    resuming = _resumes_in(settings.resume_from_checkpoint, output_dir / "checkpoints")
    check = dict(inputs=inputs or {}, overwrite=settings.overwrite_output_dir, resuming=resuming)
    check_output_dir(output_dir, **check)  # before anything is created
    # one run per output folder; the other processes of a distributed run write only through the main one. (Read
    # from the launcher's environment: Accelerate's state must not be created before the Accelerator below.)
    lock = RunLock(output_dir) if int(os.environ.get("RANK", "0")) == 0 else None
    if lock is not None:
        lock.acquire()
    try:
        if lock is not None:  # again under the lock: another run may have written there since the first check
            check_output_dir(output_dir, **check)
        result = _Run(model, processor, data, output_dir, settings, hub_model_id).train()
    except BaseException:
        if lock is not None:
            lock.release(cleanup=True)
        raise
    if lock is not None:
        lock.release()
    return result


def _resumes_in(resume_from_checkpoint, checkpoint_dir: Path) -> bool:
    """Whether the run resumes from a checkpoint of `checkpoint_dir` (so the folder is its own): "latest", or a path
    there. A checkpoint elsewhere starts this folder afresh."""
    if not resume_from_checkpoint or not checkpoints.list_checkpoints(checkpoint_dir):
        return False
    if resume_from_checkpoint == "latest":
        return True
    return Path(resume_from_checkpoint).resolve().parent == checkpoint_dir.resolve()


class _Run:
    """One training run's state; `train()` runs it. Split into named steps so that each reads on its own."""

    def __init__(self, model, processor, data, output_dir: Path, settings: FitSettings, hub_model_id):
        from accelerate import Accelerator

        self.s, self.data, self.processor, self.hub_model_id = settings, data, processor, hub_model_id
        self.output_dir, self.checkpoint_dir = output_dir, output_dir / "checkpoints"
        # several processes (accelerate launch --multi_gpu / torchrun) on a machine without GPUs: DDP on CPU over gloo
        distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.accelerator = Accelerator(
            cpu=distributed and not torch.cuda.is_available(),
            gradient_accumulation_steps=settings.gradient_accumulation_steps,
            mixed_precision=settings.mixed_precision,
            log_with=settings.report_to,
            project_dir=str(output_dir),
        )
        self.main = self.accelerator.is_main_process
        self.config = model.config
        self.num_params = sum(p.numel() for p in model.parameters())
        self.model = model
        self.completed_steps, self.epoch_sums = 0, {}
        self.metrics = MetricsLog()
        self.last_eval, self.evaluation_time, self.progress = None, 0.0, None

    # ---- setup -----------------------------------------------------------------------------------------------
    def _resume_point(self):
        """(checkpoint path, its state) to resume from, or (None, None); an earlier run's checkpoints are refused
        unless overwriting was allowed."""
        path, state = None, None
        if self.s.resume_from_checkpoint:
            path = checkpoints.resolve_checkpoint(self.s.resume_from_checkpoint, self.checkpoint_dir)
            if path is None:
                logger.info("no intact checkpoint in %s yet: starting from scratch", self.checkpoint_dir)
            else:
                state = checkpoints.read_state(path)
                checkpoints.check_compatible(state, self.config, path)
        # an earlier run's checkpoints (allowed by overwriting), and checkpoints after the resumed one (damaged, or a
        # future this run replaces; rotation would keep them over the run's own), go when this run saves its own, not
        # before: a run that fails first leaves them as they were
        present = checkpoints.list_checkpoints(self.checkpoint_dir)
        if path is not None and _resumes_in(path, self.checkpoint_dir):
            resumed = checkpoints.step_of(path)
            self.earlier_checkpoints = [c for c in present if checkpoints.step_of(c) > resumed]
            if self.earlier_checkpoints and self.main:
                logger.warning(
                    "checkpoints after %s (%s) are replaced when this run saves its first checkpoint",
                    path.name,
                    ", ".join(c.name for c in self.earlier_checkpoints),
                )
        else:
            self.earlier_checkpoints = present
            if present and not self.s.overwrite_output_dir:
                raise ValueError(
                    f"{self.checkpoint_dir} holds checkpoints of an earlier run: resume from the latest one, "
                    "or allow overwriting to start over"
                )
        return path, state

    def _loaders(self):
        s, data, acc = self.s, self.data, self.accelerator
        if data.streaming:
            hdata.stream_for_training(data, s.seed, s.shuffle_buffer_size, acc.process_index, acc.num_processes)
        self.train_set, self.eval_set = hdata.build_datasets(
            data, self.processor, skip_bad_images=s.skip_bad_images, augment=s.augment, augmentation=s.augmentation
        )
        if hasattr(self.train_set, "set_seed"):
            self.train_set.set_seed(s.seed + acc.process_index)
        kwargs = dict(collate_fn=hdata.collate, num_workers=s.num_workers)
        if data.streaming:
            train = torch.utils.data.DataLoader(self.train_set, batch_size=s.per_device_train_batch_size, **kwargs)
        else:
            train = torch.utils.data.DataLoader(
                self.train_set,
                batch_size=s.per_device_train_batch_size,
                sampler=hdata.EpochShuffleSampler(len(self.train_set), s.seed),
                generator=torch.Generator().manual_seed(s.seed),  # keeps the loader's seed draw off the global RNG
                **kwargs,
            )
        evaluation = torch.utils.data.DataLoader(
            self.eval_set, batch_size=s.per_device_eval_batch_size, generator=torch.Generator(), **kwargs
        )
        return train, evaluation

    def _schedule(self):
        s, acc = self.s, self.accelerator
        if self.data.streaming:
            if not s.max_train_steps:
                raise SettingError("max_train_steps", "is needed with streaming data (a stream has no known length)")
            self.steps_per_epoch, self.max_train_steps, self.num_epochs = None, s.max_train_steps, 10**9
        else:
            self.steps_per_epoch = hdata.steps_per_epoch(
                len(self.train_set), s.per_device_train_batch_size, acc.num_processes, s.gradient_accumulation_steps
            )
            self.max_train_steps = s.max_train_steps or s.num_train_epochs * self.steps_per_epoch
            self.num_epochs = math.ceil(self.max_train_steps / self.steps_per_epoch)
        self.warmup = (
            s.num_warmup_steps if s.num_warmup_steps is not None else int(s.warmup_ratio * self.max_train_steps)
        )

    def run_settings(self) -> dict:
        """What fixes the data order and the schedule: a resumed run must have the same, or it resumes another run."""
        s = self.s
        return {
            "per_device_train_batch_size": s.per_device_train_batch_size,
            "num_processes": self.accelerator.num_processes,
            "gradient_accumulation_steps": s.gradient_accumulation_steps,
            "seed": s.seed,
            "dataset": self.data.name,
            "train_examples": None if self.data.streaming else len(self.train_set),
            "validation_split": s.validation_split,
            "augment": s.augment,
            "augmentation": s.augmentation,
            "max_train_steps": self.max_train_steps,
            "warmup_steps": self.warmup,
            "lr_scheduler_type": s.lr_scheduler_type,
            "learning_rate": s.learning_rate,
            "weight_decay": s.weight_decay,
            "layer_decay": s.layer_decay,
        }

    def hyperparameters(self) -> dict:
        s, acc = self.s, self.accelerator
        values = {
            "learning_rate": s.learning_rate,
            "train_batch_size": s.per_device_train_batch_size,
            "total_train_batch_size": s.per_device_train_batch_size * acc.num_processes * s.gradient_accumulation_steps,
            "num_processes": acc.num_processes,
            "gradient_accumulation_steps": s.gradient_accumulation_steps,
            "optimizer": "AdamW",
            "weight_decay": s.weight_decay,
            "lr_scheduler_type": s.lr_scheduler_type,
            "warmup_steps": self.warmup,
            "training_steps": self.max_train_steps,
            "label_smoothing": s.label_smoothing,
            "max_grad_norm": s.max_grad_norm,
            "layer_decay": s.layer_decay,
            "seed": s.seed,
            "mixed_precision": acc.mixed_precision,
        }
        return {k: v for k, v in values.items() if v is not None}

    def _prepare(self, train_loader, eval_loader):
        from transformers import get_scheduler

        s, acc = self.s, self.accelerator
        optimizer = torch.optim.AdamW(
            param_groups(self.model, s.weight_decay, s.learning_rate, s.layer_decay), lr=s.learning_rate
        )
        # Accelerate's scheduler wrapper steps the schedule once per process per update, hence the factor
        try:
            scheduler = get_scheduler(
                s.lr_scheduler_type,
                optimizer=optimizer,
                num_warmup_steps=self.warmup * acc.num_processes,
                num_training_steps=self.max_train_steps * acc.num_processes,
            )
        except (ValueError, KeyError) as error:
            raise SettingError("lr_scheduler_type", f"{s.lr_scheduler_type!r}: {error}") from None
        if self.data.streaming:
            self.model, self.optimizer, self.eval_loader, self.scheduler = acc.prepare(
                self.model, optimizer, eval_loader, scheduler
            )
            self.train_loader = train_loader
        else:
            self.model, self.optimizer, self.train_loader, self.eval_loader, self.scheduler = acc.prepare(
                self.model, optimizer, train_loader, eval_loader, scheduler
            )

    def _restore(self, path, state):
        try:
            self.accelerator.load_state(str(path))
        except Exception as error:  # noqa: BLE001  the model fits (checked before): what fails to load is damaged
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ValueError(checkpoints.damaged_message(path, f"{type(error).__name__}: {first_line}")) from None
        self.completed_steps = state["completed_steps"]
        self.metrics = MetricsLog(state.get("history", []))
        self.epoch_sums = state.get("epoch_sums", {})
        if self.main:
            logger.info("resumed from %s at step %d", path, self.completed_steps)

    def _describe(self) -> None:
        acc = self.accelerator
        logger.info(
            "data: %s (%s train, %s %s, %d classes) | model: %dx%d patch %s at %s, %.2fM params | %d process(es) on %s "
            "| %d steps",
            self.data.name,
            "streaming" if self.data.streaming else len(self.train_set),
            "?" if self.data.streaming else len(self.eval_set),
            self.data.eval_split,
            self.data.num_labels,
            self.config.num_hidden_layers,
            self.config.hidden_size,
            self.config.patch_size,
            self.config.image_size,
            self.num_params / 1e6,
            acc.num_processes,
            acc.device,
            self.max_train_steps,
        )

    # ---- the loop ----------------------------------------------------------------------------------------------
    def evaluate(self) -> dict:
        self.model.eval()
        loss_sum, correct, count = 0.0, 0, 0
        with torch.no_grad():
            for batch in self.eval_loader:
                logits = self.model(pixel_values=batch["pixel_values"]).logits
                losses = F.cross_entropy(logits.float(), batch["labels"], reduction="none")
                gathered = self.accelerator.gather_for_metrics((losses, logits.argmax(-1), batch["labels"]))
                losses, predictions, labels = gathered
                loss_sum += losses.sum().item()
                correct += (predictions == labels).sum().item()
                count += labels.numel()
        self.model.train()
        return {"eval_loss": loss_sum / max(count, 1), "eval_accuracy": correct / max(count, 1), "eval_samples": count}

    def end_of_epoch(self, epoch: int, sums: dict) -> None:
        start = time.perf_counter()
        self.last_eval = self.evaluate()
        self.evaluation_time += time.perf_counter() - start
        train_loss = sums["loss"] / max(sums["count"], 1)
        row = {
            "epoch": epoch + 1,
            "step": self.completed_steps,
            "train_loss": train_loss,
            **self.last_eval,
            "lr": self.scheduler.get_last_lr()[0],
            "elapsed_s": round(time.perf_counter() - self.start, 3),
        }
        if self.main:
            self.metrics.log(row)
            self.progress.set_postfix(loss=f"{train_loss:.3f}", acc=f"{100 * self.last_eval['eval_accuracy']:.2f}%")
        if self.s.report_to:
            self.accelerator.log(
                {k: v for k, v in row.items() if k not in ("epoch", "step")}, step=self.completed_steps
            )

    def discard_earlier_checkpoints(self) -> None:
        if self.main and self.earlier_checkpoints:
            checkpoints.discard(self.earlier_checkpoints)
        self.earlier_checkpoints = []

    def checkpoint(self, epoch_sums: dict) -> None:
        self.discard_earlier_checkpoints()
        state = {
            "completed_steps": self.completed_steps,
            "history": self.metrics.history,
            "epoch_sums": epoch_sums,
            "model": checkpoints.model_signature(self.config),
            "run": self.run_settings(),
        }
        try:
            path = checkpoints.save(
                self.accelerator, self.checkpoint_dir, self.completed_steps, state, self.s.checkpoints_total_limit
            )
        except Exception as error:
            if is_disk_full(error):
                raise DiskFullError(
                    f"disk full while saving checkpoint {self.completed_steps} in {self.checkpoint_dir}; "
                    "nothing half-written was left, earlier checkpoints are intact: free space and "
                    "resume from the latest checkpoint"
                ) from None
            raise
        if self.main:
            logger.info("saved %s", path)

    def train_epoch(self, epoch: int, skip_batches: int) -> None:
        s, acc = self.s, self.accelerator
        for holder in (self.train_loader, self.train_set):
            if hasattr(holder, "set_epoch"):
                holder.set_epoch(epoch)
        loader, sums = self.train_loader, {"loss": 0.0, "count": 0}
        if skip_batches:  # resumed mid-epoch: the same batches as the interrupted run, from where it stopped
            if self.data.streaming:
                import itertools

                loader = itertools.islice(self.train_loader, skip_batches, None)
            else:
                from accelerate import skip_first_batches

                loader = skip_first_batches(self.train_loader, skip_batches)
            sums = dict(self.epoch_sums) or sums
        for batch in loader:
            if self.data.streaming:
                batch = {k: v.to(acc.device) for k, v in batch.items()}
            if batch["labels"].numel() == 0:
                continue
            with acc.accumulate(self.model):
                logits = self.model(pixel_values=batch["pixel_values"]).logits
                loss = F.cross_entropy(logits.float(), batch["labels"], label_smoothing=s.label_smoothing)
                acc.backward(loss)
                if acc.sync_gradients and s.max_grad_norm:
                    acc.clip_grad_norm_(self.model.parameters(), s.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
            sums["loss"] += loss.item()
            sums["count"] += 1
            if acc.sync_gradients:
                self.completed_steps += 1
                self.progress.update(1)
                if isinstance(s.checkpointing_steps, int) and self.completed_steps % s.checkpointing_steps == 0:
                    self.checkpoint(sums)
                if self.completed_steps >= self.max_train_steps:
                    break
        self.end_of_epoch(epoch, sums)
        if s.checkpointing_steps == "epoch":
            self.checkpoint({})

    def train(self) -> FitResult:
        from accelerate.utils import set_seed
        from tqdm.auto import tqdm

        s, acc = self.s, self.accelerator
        set_seed(s.seed)
        resume_path, resume_state = self._resume_point()
        train_loader, eval_loader = self._loaders()
        self._schedule()
        if resume_state is not None:
            checkpoints.check_same_run(resume_state, self.run_settings(), resume_path)
        self._prepare(train_loader, eval_loader)
        if resume_path is not None:
            self._restore(resume_path, resume_state)
        if s.report_to:
            acc.init_trackers("runs", config=self.hyperparameters())
        if self.main:
            self._describe()
        starting_epoch, skip_batches = 0, 0
        if self.steps_per_epoch is not None:
            starting_epoch = self.completed_steps // self.steps_per_epoch
            skip_batches = (self.completed_steps % self.steps_per_epoch) * s.gradient_accumulation_steps
        self.progress = tqdm(
            total=self.max_train_steps,
            initial=self.completed_steps,
            desc="training",
            disable=not self.main or not s.progress,
            dynamic_ncols=True,
        )
        self.model.train()
        self.start = time.perf_counter()
        # a checkpoint taken at the last step of an epoch (or of the run, mid-epoch) comes before that epoch's
        # evaluation: do it now
        if resume_path is not None and self.completed_steps and self.steps_per_epoch:
            if not skip_batches:
                done = starting_epoch
            else:
                done = starting_epoch + 1 if self.completed_steps >= self.max_train_steps else None
            if done and not any(row.get("epoch") == done for row in self.metrics.history):
                self.end_of_epoch(done - 1, self.epoch_sums or {"loss": 0.0, "count": 0})
        for epoch in range(starting_epoch, self.num_epochs):
            if self.completed_steps >= self.max_train_steps:
                break
            self.train_epoch(epoch, skip_batches if epoch == starting_epoch else 0)
        training_time = time.perf_counter() - self.start
        self.progress.close()
        if self.last_eval is None:  # resumed from a checkpoint taken after the last step
            self.last_eval = self.evaluate()
        skipped = sorted(set().union(*(getattr(d, "bad_images", set()) for d in (self.train_set, self.eval_set))))
        if skipped:
            logger.warning("skipped %d unreadable image(s) (per process), e.g. %s", len(skipped), skipped[0])

        acc.wait_for_everyone()
        if s.report_to:
            acc.end_training()
        if self.main:
            self.write_final_folder(training_time)
        acc.wait_for_everyone()
        return FitResult(
            output_dir=self.output_dir,
            eval_split=self.data.eval_split,
            eval_accuracy=self.last_eval["eval_accuracy"],
            eval_loss=self.last_eval["eval_loss"],
            completed_steps=self.completed_steps,
            training_time_s=training_time,
            evaluation_time_s=self.evaluation_time,
            history=self.metrics.history,
            resumed_from=resume_path,
            skipped_images=skipped,
        )

    # ---- the final folder --------------------------------------------------------------------------------------
    def write_final_folder(self, training_time: float) -> None:
        from .model_card import render_model_card

        data, split = self.data, self.data.eval_split
        unwrapped = self.accelerator.unwrap_model(self.model)
        card = render_model_card(
            unwrapped.config,
            num_parameters=self.num_params,
            model_name=self.output_dir.name,
            repo_id=self.hub_model_id,
            datasets=[data.name] if data.from_dataset else None,
            dataset_name=hdata.DIGITS_DESCRIPTION if data.is_digits else data.name,
            results={"accuracy": self.last_eval["eval_accuracy"], "loss": self.last_eval["eval_loss"]},
            hyperparameters=self.hyperparameters(),
        )
        results = {
            f"{split}_accuracy": self.last_eval["eval_accuracy"],
            f"{split}_loss": self.last_eval["eval_loss"],
            "train_steps": self.completed_steps,
            "training_time_s": round(training_time, 2),
            "evaluation_time_s": round(self.evaluation_time, 2),  # part of training_time_s
            "per_device_train_batch_size": self.s.per_device_train_batch_size,
            "num_processes": self.accelerator.num_processes,
            "gradient_accumulation_steps": self.s.gradient_accumulation_steps,
        }
        try:
            write_trained_model(
                self.output_dir,
                unwrapped,
                self.processor,
                card,
                files={"all_results.json": json.dumps(results, indent=1) + "\n"},
                history=self.metrics.history,
            )
        except DiskFullError:
            if checkpoints.list_checkpoints(self.checkpoint_dir):
                raise DiskFullError(
                    f"disk full while writing the trained model to {self.output_dir}; nothing in it "
                    "was changed (its checkpoints are intact, free space and run again)"
                ) from None
            raise
        self.discard_earlier_checkpoints()


__all__ = ["DiskFullError", "FitResult", "FitSettings", "SettingError", "fit"]
