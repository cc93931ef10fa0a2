"""The training loop: data -> model -> optimizer -> loop -> evaluation -> checkpoints -> resume -> final folder.

`fit(model, processor, data, output_dir, settings)` trains with Accelerate (one process, DDP on CPU or GPUs) and
returns a `FitResult`; the `hf-vit-train` command (`hf_vit.commands.train`) is a thin command line over it. What it
guarantees:

- **Kill-safe, bitwise resume.** The data order depends only on the random seed and the epoch; checkpoints hold the
  model, optimizer, scheduler, every RNG state and the position in the data (`hf_vit.checkpoints`), so a run resumed
  from any checkpoint, mid-epoch included, ends with the weights of an uninterrupted one.
- **Every checkpoint at an epoch's end holds that epoch's evaluation**: the epoch is evaluated first, then saved.
- **The user's files are safe** (`hf_vit.output_dir`): the output folder is checked and locked first; the final
  files are written whole and moved in one by one; a failed run leaves the folder as it found it.
- Messages go through `logging` (logger `hf_vit.fit`); nothing is printed but the progress bar.

Reading order: `FitSettings` (every setting, with its help: the command line's flags are made from it), `fit`, the
run's loop (`_Run.train`) and its steps, then the three small objects it stands on: `_Plan` (steps, warm-up, what a
resume must match), `_ResumePoint` (the checkpoint a run starts from) and `_Batches` (the data, epoch by epoch).
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
from .model_card import Lineage, license_id_problem, resolve_license
from .output_dir import DiskFullError, RunLock, check_output_dir, is_disk_full, write_trained_model
from .training import param_groups

logger = logging.getLogger(__name__)


class SettingError(ValueError):
    """A training setting with a value that would train nothing or nonsense; `name` is the setting."""

    def __init__(self, name: str, message: str):
        self.name = name
        super().__init__(f"{name} {message}")


def _accelerate_trackers() -> tuple[str, ...]:
    """Accelerate's tracker names (`accelerate.utils.LoggerType`, without "all"); () without the train extra (then
    training itself asks for it)."""
    try:
        from accelerate.utils import LoggerType
    except ImportError:
        return ()
    return tuple(t.value for t in LoggerType if t.value != "all")


def setting(default, help: str, **flag):
    """A `FitSettings` field: its default and its help (other settings named in backticks), and what its
    command-line flag needs to know (`hf_vit.cli.add_settings`): `choices`; `fitted` (the trainers choose the default
    from the data, as `help` says); `flag` (another name, `no_progress` for `progress`; None: no flag); `group`
    ("data": a flag of the data group)."""
    return field(default=default, metadata={"help": help, **flag})


@dataclass
class FitSettings:
    """How to train: every setting, its default and its help, in one place. The names are those of transformers'
    example scripts; the flags of `hf-vit-train` (and the shared ones of `hf-vit-finetune`) are made from these
    fields."""

    num_train_epochs: int = setting(
        3,
        "passes over the training data; default: chosen from the images' size (20 for images up to 64 px such as the "
        "digits, 3 for photos); 3 for a given model (20 on the digits)",
        fitted=True,
    )
    max_train_steps: int | None = setting(None, "stop after this many optimizer steps (overrides the epochs)")
    per_device_train_batch_size: int = setting(32, "training images per batch and process")
    per_device_eval_batch_size: int = setting(256, "evaluation images per batch and process")
    learning_rate: float = setting(1e-3, "peak learning rate; default 1e-3 from scratch, 5e-5 fine-tuning", fitted=True)
    weight_decay: float = setting(0.05, "AdamW weight decay (none on norms, biases, positions, [CLS], registers)")
    lr_scheduler_type: str = setting("cosine", "a transformers.get_scheduler name (cosine, linear, constant, ...)")
    num_warmup_steps: int | None = setting(None, "learning-rate warm-up steps; default: `warmup_ratio` of the steps")
    warmup_ratio: float = setting(0.1, "warm-up as a fraction of the optimizer steps")
    layer_decay: float | None = setting(None, "layer-wise learning-rate decay, e.g. 0.75 for fine-tuning")
    augment: bool = setting(
        False,
        "training augmentation, of the kind that fits the images: small shifts (no flips) for images up to 64 px, "
        "RandomResizedCrop + flip for photos. auto: chosen from the images' size (off for images up to 64 px such "
        "as the digits, which reach higher accuracy in their short budget without it); on for a given model (off on "
        "the digits)",
        fitted=True,
    )
    augmentation: str | None = setting(
        None,
        'the kind of augmentation (hf_vit.data.build_transforms): "shift" (small shifts, no flips) or "crop_flip" '
        "(RandomResizedCrop + flip, e.g. for small images that are not digits); giving it turns `augment` on unless "
        "`augment` is off; default: the kind that fits the images' size",
        choices=hdata.AUGMENTATIONS,
        fitted=True,
    )
    label_smoothing: float = setting(0.1, "label smoothing of the cross-entropy loss")
    gradient_accumulation_steps: int = setting(1, "batches per optimizer step")
    max_grad_norm: float = setting(1.0, "gradient clipping; 0 turns it off")
    mixed_precision: str | None = setting(None, "default: the accelerate config's", choices=("no", "bf16", "fp16"))
    seed: int = setting(42, "seed of the weights, the data order, the held-out split and augmentation")
    num_workers: int = setting(0, "DataLoader worker processes")
    checkpointing_steps: int | str | None = setting(
        None, 'save a checkpoint every N optimizer steps (an integer), or at each epoch\'s end ("epoch")'
    )
    checkpoints_total_limit: int = setting(2, "keep this many newest checkpoints (0: all)")
    resume_from_checkpoint: str | None = setting(
        None,
        'a checkpoint folder, or "latest" (the newest intact one in `output_dir`/checkpoints; none: start fresh)',
    )
    report_to: str | None = setting(
        None, 'Accelerate trackers: "none", "all" or a comma list of accelerate\'s LoggerType names ("tensorboard")'
    )
    overwrite_output_dir: bool = setting(
        False,
        "allow an `output_dir` that already holds files. Only what a run writes is replaced: the model "
        "(model.safetensors, config.json, preprocessor_config.json, README.md, the two code files) and, with "
        "hf_vit.fit, metrics.jsonl, training_curves.png, all_results.json and an earlier run's "
        "checkpoints/checkpoint-* (removed when the run saves its first checkpoint or its model); nothing else in "
        "the folder is touched",
    )
    skip_bad_images: bool = setting(False, "skip unreadable images (counted) instead of stopping", group="data")
    validation_split: float = setting(
        0.15,
        "held-out fraction when the data has no validation split (recorded with checkpoints: it changes the "
        "training set)",
        group="data",
    )
    shuffle_buffer_size: int = setting(10_000, "shuffle buffer of a stream (`streaming`)", group="data")
    progress: bool = setting(True, "no tqdm progress bar", flag="no_progress")
    license: str | None = setting(
        None,
        "the licence of the trained weights, a Hub licence id (default: apache-2.0 from scratch; a fine-tune keeps "
        "its base model's licence, and a different one is refused unless `override_base_license`)",
        group="license",
    )
    override_base_license: bool = setting(
        False,
        "with `license`: relabel a fine-tune whose base model's licence is known (the card says so)",
        group="license",
    )

    def __post_init__(self):
        # "5" (a command line's, a JSON file's) is 5 steps
        if isinstance(self.checkpointing_steps, str) and self.checkpointing_steps.strip().lstrip("-").isdigit():
            self.checkpointing_steps = int(self.checkpointing_steps)

    @property
    def trackers(self) -> list[str] | None:
        """The Accelerate trackers `report_to` names (None for "none" or not given)."""
        names = [name.strip() for name in (self.report_to or "").split(",") if name.strip()]
        return None if names in ([], ["none"]) else names

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
        trackers = _accelerate_trackers()
        if self.report_to is not None and (
            not self.report_to.strip() or (trackers and not set(self.trackers or []) <= {"all", *trackers})
        ):
            raise SettingError(
                "report_to", f'must be "none", "all" or a comma list of {", ".join(trackers)}, got {self.report_to!r}'
            )
        if self.mixed_precision not in (None, "no", "bf16", "fp16"):
            raise SettingError("mixed_precision", f"must be no, bf16 or fp16, got {self.mixed_precision!r}")
        if self.license is not None and license_id_problem(self.license):
            raise SettingError("license", license_id_problem(self.license))
        if self.override_base_license and self.license is None:
            raise SettingError("override_base_license", "needs `license`: the licence to apply instead of the base's")


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
    lineage: Lineage | None = None,
    command: str | None = None,
) -> FitResult:
    """Train `model` (an `HfViTForImageClassification`, its labels those of `data`) and write the final folder.

    `inputs` names the run's local inputs (label -> path, e.g. "`train_dir`") that the output folder must stay out
    of. `data` is not changed: a second `fit` on it sees the same data. `lineage`: the base model a fine-tune starts
    from (`hf_vit.convert.pretrained.base_lineage`; None: trained from scratch), whose licence the card keeps unless
    `settings.license` overrides it (`model_card.resolve_license`); `command`: what started the run, for the card.
    Raises `SettingError`, `output_dir.OutputDirRefused` (`OutputDirNotEmpty`, `OutputDirBusy`), `ValueError`
    (checkpoint problems, a licence that would relabel the base model's), `hf_vit.data.DataError` (an unreadable
    image) and `DiskFullError`; the output folder is then as it was, except for checkpoints the run saved before
    failing."""
    require("train", "`fit`")
    settings.validate()
    card = card_values(data, settings, hub_model_id=hub_model_id, lineage=lineage, command=command)
    return run_guarded(
        output_dir, settings, inputs, lambda: _Run(model, processor, data, Path(output_dir), settings, card).train()
    )


def card_values(data, settings: FitSettings, *, hub_model_id, lineage: Lineage | None, command) -> dict:
    """What a run's model card says besides its results (`render_model_card`'s other values), for every trainer on
    this loop: the repo, the licence (the base model's unless `settings.license` overrides it), the lineage, the
    command and the evaluation data."""
    license, license_note = resolve_license(
        lineage.license if lineage else None, settings.license, settings.override_base_license
    )
    return dict(
        repo_id=hub_model_id,
        license=license,
        license_note=license_note,
        lineage=lineage,
        command=command,
        **hdata.card_evaluation(data),
    )


def run_guarded(output_dir, settings, inputs, train):
    """Run `train()` (a training run writing to `output_dir`) under the output folder's rules, for every trainer
    built on this loop (`fit`, `hf_vit.pretrain`): the folder is checked before anything is created and again under
    its lock, which one run holds at a time (the main process); a failed run leaves the folder as it found it, except
    for checkpoints it saved. `settings` gives `resume_from_checkpoint` and `overwrite_output_dir`."""
    output_dir = Path(output_dir)
    resuming = _resumes_in(settings.resume_from_checkpoint, output_dir / "checkpoints")
    check = dict(
        inputs=inputs or {},
        overwrite=settings.overwrite_output_dir,
        resuming=resuming,
        overwrite_name="overwrite_output_dir",
        hint=RESUME_HINT,
    )
    check_output_dir(output_dir, **check)  # before anything is created
    # one run per output folder; the other processes of a distributed run write only through the main one. (Read
    # from the launcher's environment: Accelerate's state must not be created before the Accelerator below.)
    lock = RunLock(output_dir) if int(os.environ.get("RANK", "0")) == 0 else None
    if lock is not None:
        lock.acquire()
    try:
        if lock is not None:  # again under the lock: another run may have written there since the first check
            check_output_dir(output_dir, **check)
        result = train()
    except BaseException:
        if lock is not None:
            lock.release(cleanup=True)
        raise
    if lock is not None:
        lock.release()
    return result


RESUME_HINT = "resume its run with `resume_from_checkpoint` latest, "


def _resumes_in(resume_from_checkpoint, checkpoint_dir: Path) -> bool:
    """Whether the run resumes from a checkpoint of `checkpoint_dir` (so the folder is its own): "latest", or a path
    there. A checkpoint elsewhere starts this folder afresh."""
    if not resume_from_checkpoint or not checkpoints.list_checkpoints(checkpoint_dir):
        return False
    if resume_from_checkpoint == "latest":
        return True
    return Path(resume_from_checkpoint).resolve().parent == checkpoint_dir.resolve()


class _Run:
    """One training run: `__init__` sets it up (everything it holds is set there), `train()` is the loop."""

    def train(self) -> FitResult:
        """Epochs of batches; an optimizer step every `gradient_accumulation_steps` batches; at an epoch's end an
        evaluation, then the checkpoint if one is due (so it holds the epoch's metrics); the final folder."""
        s, acc, plan = self.s, self.accelerator, self.plan
        first_epoch, skip = self.resume.position(plan)
        for epoch in range(first_epoch, plan.num_epochs):
            if self.step >= plan.total_steps:
                break
            for batch in self.batches.epoch(epoch, skip=skip if epoch == first_epoch else 0):
                with acc.accumulate(self.model):
                    logits = self.model(pixel_values=batch["pixel_values"]).logits
                    loss = F.cross_entropy(logits.float(), batch["labels"], label_smoothing=s.label_smoothing)
                    acc.backward(loss)
                    if acc.sync_gradients and s.max_grad_norm:
                        acc.clip_grad_norm_(self.model.parameters(), s.max_grad_norm)
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                self.epoch_loss["loss"] += loss.item()
                self.epoch_loss["count"] += 1
                if not acc.sync_gradients:
                    continue
                self.step += 1
                self.progress.update(1)
                if plan.checkpoint_due(self.step) and not plan.ends_epoch(self.step):
                    self.checkpoint(position=(epoch, self.batches.taken))
                if self.step >= plan.total_steps:
                    break
            self.end_epoch(epoch)
            if plan.checkpoint_due(self.step, epoch_ended=True) and self.saved_step != self.step:
                self.checkpoint(position=(epoch + 1, 0))
        return self.finish()

    def __init__(self, model, processor, data, output_dir: Path, settings: FitSettings, card: dict):
        from accelerate.utils import set_seed
        from tqdm.auto import tqdm

        self.s, self.processor, self.card = settings, processor, card  # card: render_model_card's other values
        self.eval_split, self.dataset_name = data.eval_split, data.name
        self.output_dir, self.checkpoint_dir = output_dir, output_dir / "checkpoints"
        self.accelerator = acc = make_accelerator(settings, output_dir)
        self.main = acc.is_main_process
        self.config, self.num_params = model.config, sum(p.numel() for p in model.parameters())
        set_seed(settings.seed)

        self.resume = _ResumePoint.find(settings, self.checkpoint_dir, self.config, log=self.main)
        self.batches = _Batches(data, processor, settings, acc)
        self.plan = _Plan.make(settings, data.name, self.batches.train_examples, acc.num_processes)
        self.resume.check_same_run(self.plan)
        optimizer, scheduler = self._optimizer(model)
        self.model, self.optimizer, self.scheduler = acc.prepare(model, optimizer, scheduler)
        self.batches.prepare(acc)
        self.resume.restore(acc, log=self.main)  # the weights, optimizer, scheduler and RNG states

        self.step = self.resume.step
        self.history = self.resume.history  # one row per evaluation
        self.epoch_loss = {"loss": 0.0, "count": 0, **self.resume.epoch_loss}  # the epoch's training loss so far
        self.saved_step = self.resume.step if self.resume.path else None  # the step of the newest checkpoint
        self.evaluation_time = 0.0
        if settings.trackers:
            acc.init_trackers("runs", config=self.plan.hyperparameters(acc.mixed_precision))
        if self.main:
            self._describe()
        self.progress = tqdm(
            total=self.plan.total_steps,
            initial=self.step,
            desc="training",
            disable=not self.main or not settings.progress,
            dynamic_ncols=True,
        )
        self.model.train()
        self.start = time.perf_counter()

    # ---- the loop's steps ------------------------------------------------------------------------------------------
    def end_epoch(self, epoch: int) -> None:
        """Evaluate, and log the epoch's row; its training loss starts again from zero."""
        start = time.perf_counter()
        evaluation = self.evaluate()
        self.evaluation_time += time.perf_counter() - start
        train_loss = self.epoch_loss["loss"] / max(self.epoch_loss["count"], 1)
        row = {
            "epoch": epoch + 1,
            "step": self.step,
            "train_loss": train_loss,
            **evaluation,
            "lr": self.scheduler.get_last_lr()[0],
            "elapsed_s": round(time.perf_counter() - self.start, 3),
        }
        self.history.append(row)
        self.epoch_loss = {"loss": 0.0, "count": 0}
        if self.main:
            self.progress.set_postfix(loss=f"{train_loss:.3f}", acc=f"{100 * evaluation['eval_accuracy']:.2f}%")
        if self.s.trackers:
            self.accelerator.log({k: v for k, v in row.items() if k not in ("epoch", "step")}, step=self.step)

    def evaluate(self) -> dict:
        self.model.eval()
        loss_sum, correct, count = 0.0, 0, 0
        with torch.no_grad():
            for batch in self.batches.eval_loader:
                logits = self.model(pixel_values=batch["pixel_values"]).logits
                losses = F.cross_entropy(logits.float(), batch["labels"], reduction="none")
                gathered = self.accelerator.gather_for_metrics((losses, logits.argmax(-1), batch["labels"]))
                losses, predictions, labels = gathered
                loss_sum += losses.sum().item()
                correct += (predictions == labels).sum().item()
                count += labels.numel()
        self.model.train()
        return {"eval_loss": loss_sum / max(count, 1), "eval_accuracy": correct / max(count, 1), "eval_samples": count}

    def checkpoint(self, position: tuple[int, int]) -> None:
        """Save a checkpoint at this step; `position` is (epoch, batches of it trained): where a resumed run goes on."""
        self.discard_stale_checkpoints()
        state = {
            "completed_steps": self.step,
            "position": list(position),
            "history": self.history,
            "epoch_sums": self.epoch_loss,
            "model": checkpoints.model_signature(self.config),
            "run": self.plan.run_settings(),
        }
        try:
            path = checkpoints.save(
                self.accelerator, self.checkpoint_dir, self.step, state, self.s.checkpoints_total_limit
            )
        except Exception as error:
            if is_disk_full(error):
                raise DiskFullError(
                    f"disk full while saving checkpoint {self.step} in {self.checkpoint_dir}; "
                    "nothing half-written was left, earlier checkpoints are intact: free space and "
                    "resume from the latest checkpoint"
                ) from None
            raise
        self.saved_step = self.step
        if self.main:
            logger.info("saved %s", path)

    def discard_stale_checkpoints(self) -> None:
        """Remove the checkpoints this run replaces (`_ResumePoint.stale`), once it has saved something of its own."""
        if self.main and self.resume.stale:
            checkpoints.discard(self.resume.stale)
        self.resume.stale = []

    def finish(self) -> FitResult:
        """After the last step: the final folder (the main process), and the result of the last evaluation."""
        acc = self.accelerator
        training_time = time.perf_counter() - self.start
        self.progress.close()
        skipped = self.batches.skipped_images()
        if skipped:
            logger.warning("skipped %d unreadable image(s) (per process), e.g. %s", len(skipped), skipped[0])
        acc.wait_for_everyone()
        if self.s.trackers:
            acc.end_training()
        if self.main:
            self.write_final_folder(training_time)
        acc.wait_for_everyone()
        last = self.history[-1]
        return FitResult(
            output_dir=self.output_dir,
            eval_split=self.eval_split,
            eval_accuracy=last["eval_accuracy"],
            eval_loss=last["eval_loss"],
            completed_steps=self.step,
            training_time_s=training_time,
            evaluation_time_s=self.evaluation_time,
            history=self.history,
            resumed_from=self.resume.path,
            skipped_images=skipped,
        )

    def write_final_folder(self, training_time: float) -> None:
        from .model_card import render_model_card

        last, split = self.history[-1], self.eval_split
        unwrapped = self.accelerator.unwrap_model(self.model)
        card = render_model_card(
            unwrapped.config,
            num_parameters=self.num_params,
            model_name=self.output_dir.name,
            results={"accuracy": last["eval_accuracy"], "loss": last["eval_loss"]},
            hyperparameters=self.plan.hyperparameters(self.accelerator.mixed_precision),
            **self.card,
        )
        results = {
            f"{split}_accuracy": last["eval_accuracy"],
            f"{split}_loss": last["eval_loss"],
            "train_steps": self.step,
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
                history=self.history,
            )
        except DiskFullError:
            if checkpoints.list_checkpoints(self.checkpoint_dir):
                raise DiskFullError(
                    f"disk full while writing the trained model to {self.output_dir}; nothing in it "
                    "was changed (its checkpoints are intact, free space and run again)"
                ) from None
            raise
        self.discard_stale_checkpoints()

    # ---- set-up ----------------------------------------------------------------------------------------------------
    def _optimizer(self, model):
        """AdamW over the parameter groups (no decay on norms, biases, ...; layer decay) and the LR schedule."""
        from transformers import get_scheduler

        s, plan, processes = self.s, self.plan, self.accelerator.num_processes
        optimizer = torch.optim.AdamW(
            param_groups(model, s.weight_decay, s.learning_rate, s.layer_decay), lr=s.learning_rate
        )
        try:  # Accelerate's scheduler wrapper steps the schedule once per process per update, hence the factor
            scheduler = get_scheduler(
                s.lr_scheduler_type,
                optimizer=optimizer,
                num_warmup_steps=plan.warmup_steps * processes,
                num_training_steps=plan.total_steps * processes,
            )
        except (ValueError, KeyError) as error:
            raise SettingError("lr_scheduler_type", f"{s.lr_scheduler_type!r}: {error}") from None
        return optimizer, scheduler

    def _describe(self) -> None:
        batches, config = self.batches, self.config
        logger.info(
            "data: %s (%s train, %s %s, %d classes) | model: %dx%d patch %s at %s, %.2fM params | %d process(es) on %s "
            "| %d steps",
            self.dataset_name,
            "streaming" if batches.train_examples is None else batches.train_examples,
            "?" if batches.eval_examples is None else batches.eval_examples,
            self.eval_split,
            config.num_labels,
            config.num_hidden_layers,
            config.hidden_size,
            config.patch_size,
            config.image_size,
            self.num_params / 1e6,
            self.accelerator.num_processes,
            self.accelerator.device,
            self.plan.total_steps,
        )


def make_accelerator(settings: FitSettings, output_dir: Path):
    """The run's Accelerator: its settings' accumulation, precision and trackers; several processes (accelerate
    launch --multi_gpu / torchrun) on a machine without GPUs run DDP on CPU over gloo."""
    from accelerate import Accelerator

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return Accelerator(
        cpu=distributed and not torch.cuda.is_available(),
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        mixed_precision=settings.mixed_precision,
        log_with=settings.trackers,
        project_dir=str(output_dir),
    )


@dataclass(frozen=True)
class _Plan:
    """The shape of a run, fixed before its first step: optimizer steps per epoch (None for a stream, whose length
    is unknown), total steps, epochs, warm-up steps; and `run_settings`, what a resumed run must share with the run
    that saved its checkpoint."""

    settings: FitSettings
    dataset: str
    train_examples: int | None  # None: a stream
    num_processes: int
    steps_per_epoch: int | None
    total_steps: int
    num_epochs: int
    warmup_steps: int

    @classmethod
    def make(cls, settings: FitSettings, dataset: str, train_examples: int | None, num_processes: int) -> _Plan:
        s = settings
        if train_examples is None:  # a stream: as many passes as max_train_steps takes
            if not s.max_train_steps:
                raise SettingError("max_train_steps", "is needed with streaming data (a stream has no known length)")
            steps_per_epoch, total_steps, num_epochs = None, s.max_train_steps, 10**9
        else:
            steps_per_epoch = hdata.steps_per_epoch(
                train_examples, s.per_device_train_batch_size, num_processes, s.gradient_accumulation_steps
            )
            total_steps = s.max_train_steps or s.num_train_epochs * steps_per_epoch
            num_epochs = math.ceil(total_steps / steps_per_epoch)
        warmup = s.num_warmup_steps if s.num_warmup_steps is not None else int(s.warmup_ratio * total_steps)
        return cls(s, dataset, train_examples, num_processes, steps_per_epoch, total_steps, num_epochs, warmup)

    def ends_epoch(self, step: int) -> bool:
        """Whether optimizer step `step` is the last of its epoch, or of the run. (A pass over a stream ends when the
        stream runs out.)"""
        return step >= self.total_steps or (self.steps_per_epoch is not None and step % self.steps_per_epoch == 0)

    def checkpoint_due(self, step: int, epoch_ended: bool = False) -> bool:
        every = self.settings.checkpointing_steps
        return (every == "epoch" and epoch_ended) or (isinstance(every, int) and step % every == 0)

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, batches of it trained) after `step` optimizer steps, for a checkpoint that does not record it."""
        accumulation = self.settings.gradient_accumulation_steps
        if self.steps_per_epoch is None:
            return 0, step * accumulation
        epoch, steps = divmod(step, self.steps_per_epoch)
        return epoch, steps * accumulation

    def run_settings(self) -> dict:
        """What fixes the data order and the schedule: a resumed run must have the same, or it resumes another run."""
        s = self.settings
        return {
            "per_device_train_batch_size": s.per_device_train_batch_size,
            "num_processes": self.num_processes,
            "gradient_accumulation_steps": s.gradient_accumulation_steps,
            "seed": s.seed,
            "dataset": self.dataset,
            "train_examples": self.train_examples,
            "validation_split": s.validation_split,
            "augment": s.augment,
            "augmentation": s.augmentation,
            "max_train_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "lr_scheduler_type": s.lr_scheduler_type,
            "learning_rate": s.learning_rate,
            "weight_decay": s.weight_decay,
            "layer_decay": s.layer_decay,
        }

    def hyperparameters(self, mixed_precision: str | None) -> dict:
        """For the trackers and the model card."""
        s = self.settings
        batch = s.per_device_train_batch_size
        values = {
            "learning_rate": s.learning_rate,
            "train_batch_size": batch,
            "total_train_batch_size": batch * self.num_processes * s.gradient_accumulation_steps,
            "num_processes": self.num_processes,
            "gradient_accumulation_steps": s.gradient_accumulation_steps,
            "optimizer": "AdamW",
            "weight_decay": s.weight_decay,
            "lr_scheduler_type": s.lr_scheduler_type,
            "warmup_steps": self.warmup_steps,
            "training_steps": self.total_steps,
            "label_smoothing": s.label_smoothing,
            "max_grad_norm": s.max_grad_norm,
            "layer_decay": s.layer_decay,
            "seed": s.seed,
            "mixed_precision": mixed_precision,
        }
        return {k: v for k, v in values.items() if v is not None}


@dataclass
class _ResumePoint:
    """Where a run starts: a checkpoint (`path`, its `state`) or none; and `stale`, the checkpoints the run replaces
    (an earlier run's, allowed by overwriting; those after the resumed one, damaged or a future this run replaces,
    which rotation would otherwise keep over the run's own). Stale checkpoints go when the run saves its first
    checkpoint or its model, not before: a run that fails first leaves them as they were."""

    path: Path | None = None
    state: dict = field(default_factory=dict)
    stale: list[Path] = field(default_factory=list)

    @classmethod
    def find(cls, settings: FitSettings, checkpoint_dir: Path, config, log: bool = True) -> _ResumePoint:
        """The checkpoint `settings.resume_from_checkpoint` names, checked against the model. An earlier run's
        checkpoints in `checkpoint_dir` are refused (`ValueError`) unless overwriting was allowed."""
        point = cls()
        if settings.resume_from_checkpoint:
            point.path = checkpoints.resolve_checkpoint(settings.resume_from_checkpoint, checkpoint_dir)
            if point.path is None:
                logger.info("no intact checkpoint in %s yet: starting from scratch", checkpoint_dir)
            else:
                point.state = checkpoints.read_state(point.path)
                checkpoints.check_compatible(point.state, config, point.path)
        present = checkpoints.list_checkpoints(checkpoint_dir)
        if point.path is not None and _resumes_in(point.path, checkpoint_dir):
            point.stale = [c for c in present if checkpoints.step_of(c) > checkpoints.step_of(point.path)]
            if point.stale and log:
                logger.warning(
                    "checkpoints after %s (%s) are replaced when this run saves its first checkpoint",
                    point.path.name,
                    ", ".join(c.name for c in point.stale),
                )
        else:
            point.stale = present
            if present and not settings.overwrite_output_dir:
                raise ValueError(
                    f"{checkpoint_dir} holds checkpoints of an earlier run: resume from the latest one, "
                    "or allow overwriting to start over"
                )
        return point

    @property
    def step(self) -> int:
        return self.state.get("completed_steps", 0)

    @property
    def history(self) -> list[dict]:
        return list(self.state.get("history", []))

    @property
    def epoch_loss(self) -> dict:
        return dict(self.state.get("epoch_sums") or {})

    def position(self, plan: _Plan) -> tuple[int, int]:
        """(epoch, batches of it already trained): where the run goes on."""
        return tuple(self.state.get("position") or plan.position(self.step))

    def check_same_run(self, plan: _Plan) -> None:
        if self.path is not None:
            checkpoints.check_same_run(self.state, plan.run_settings(), self.path)

    def restore(self, accelerator, log: bool = True) -> None:
        """Load the checkpoint's model, optimizer, scheduler and RNG states into the prepared objects."""
        if self.path is None:
            return
        try:
            accelerator.load_state(str(self.path))
        except Exception as error:  # noqa: BLE001  the model fits (checked before): what fails to load is damaged
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ValueError(checkpoints.damaged_message(self.path, f"{type(error).__name__}: {first_line}")) from None
        if log:
            logger.info("resumed from %s at step %d", self.path, self.step)


class _Batches:
    """The run's data as batches. Training: epoch by epoch, each epoch's order fixed by (seed, epoch) alone
    (`hdata.EpochShuffleSampler`, and augmentation seeded per sample), the first `skip` batches left out when a run
    resumes mid-epoch. A stream is the one case decided here: each process reads its own shuffled shard, which
    Accelerate wraps for one process (no second sharding) and which is skipped by reading past its batches."""

    def __init__(self, data: hdata.ImageData, processor, settings: FitSettings, accelerator):
        s, acc = settings, accelerator
        self.streaming = data.streaming
        if data.streaming:
            data = hdata.stream_for_training(data, s.seed, s.shuffle_buffer_size, acc.process_index, acc.num_processes)
        self.train_set, self.eval_set = hdata.build_datasets(
            data, processor, skip_bad_images=s.skip_bad_images, augment=s.augment, augmentation=s.augmentation
        )
        if hasattr(self.train_set, "set_seed"):
            self.train_set.set_seed(s.seed + acc.process_index)
        self.train_examples = None if self.streaming else len(self.train_set)
        self.eval_examples = None if self.streaming else len(self.eval_set)
        loader = dict(collate_fn=hdata.collate, num_workers=s.num_workers)
        order = (
            {}
            if self.streaming
            else dict(
                sampler=hdata.EpochShuffleSampler(len(self.train_set), s.seed),
                generator=torch.Generator().manual_seed(s.seed),  # keeps the loader's seed draw off the global RNG
            )
        )
        self.train_loader = torch.utils.data.DataLoader(
            self.train_set, batch_size=s.per_device_train_batch_size, **order, **loader
        )
        self.eval_loader = torch.utils.data.DataLoader(
            self.eval_set, batch_size=s.per_device_eval_batch_size, generator=torch.Generator(), **loader
        )
        self.taken = 0  # batches of the current epoch read so far, skipped ones included

    def prepare(self, accelerator) -> None:
        """Accelerate's loaders: sharded across processes, on the device. A stream is sharded already: its loader is
        Accelerate's for this one process, which still tells `accumulate` where a pass ends, so that a pass's last,
        partial accumulation group is an optimizer step as with map-style data (and no gradient is pending when an
        epoch's checkpoint is saved: a resumed run trains bitwise as the uninterrupted one)."""
        if self.streaming:
            from accelerate.data_loader import prepare_data_loader

            self.train_loader = prepare_data_loader(
                self.train_loader,
                accelerator.device,
                num_processes=1,
                process_index=0,
                put_on_device=True,
                dispatch_batches=False,
            )
        else:
            self.train_loader = accelerator.prepare_data_loader(self.train_loader)
        self.eval_loader = accelerator.prepare_data_loader(self.eval_loader)

    def epoch(self, epoch: int, skip: int = 0):
        """The training batches of `epoch`, after the first `skip`; batches that lost every image to
        `skip_bad_images` are left out."""
        for holder in (self.train_loader, self.train_set):
            if hasattr(holder, "set_epoch"):
                holder.set_epoch(epoch)
        if not skip:
            batches = self.train_loader
        elif self.streaming:
            import itertools

            batches = itertools.islice(self.train_loader, skip, None)
        else:
            from accelerate import skip_first_batches

            batches = skip_first_batches(self.train_loader, skip)
        self.taken = skip
        for batch in batches:
            self.taken += 1
            if batch["labels"].numel():
                yield batch

    def skipped_images(self) -> list[str]:
        return sorted(set().union(*(getattr(d, "bad_images", set()) for d in (self.train_set, self.eval_set))))


__all__ = ["DiskFullError", "FitResult", "FitSettings", "SettingError", "fit"]
