"""DINO self-supervised pretraining of an hf_vit backbone on unlabelled images: `pretrain(data, output_dir, ...)`.

A student and an EMA teacher (the same backbone, each with a DINO head, `hf_vit.dino`) see multi-crop views of each
image; the student learns to predict the teacher's centred, sharpened output of the other views. Labels are never
used for training: when the data has them (the embedded digits, a class-folder), each epoch ends with a k-NN
evaluation of the teacher's features on the held-out images, for the curves and the model card.

The run stands on `hf_vit.fit`'s machinery: the same settings (`PretrainSettings` extends `FitSettings`), output
folder rules and lock (`fit.run_guarded`), Accelerator (DDP on CPU or GPUs, bf16), plan, checkpoints and kill-safe
bitwise resume (`fit._Run`, `_Plan`, `_ResumePoint`, `_Batches`): checkpoints also hold the teacher and the loss
centres, and the views are drawn from a generator seeded by (seed, epoch, batch, process), so that a run resumed from
any checkpoint ends with the weights of an uninterrupted one. It writes an hf_vit folder of the TEACHER backbone
(`HfViTModel`, task "feature-extraction") with its image processor and a model card carrying the lineage; it loads
with `hf_vit.from_pretrained(..., task="feature-extraction")`, fine-tunes with `hf-vit-train --model_name_or_path`
and pushes with `hf-vit-push`.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from . import data as hdata
from . import dino
from .extras import require
from .fit import (
    FitSettings,
    SettingError,
    _Batches,
    _Plan,
    _ResumePoint,
    _Run,
    card_values,
    make_accelerator,
    run_guarded,
    setting,
)
from .model_card import Lineage
from .training import no_weight_decay

logger = logging.getLogger(__name__)


@dataclass
class PretrainSettings(FitSettings):
    """How to pretrain: `FitSettings`' run settings (batch, epochs, learning rate and its warm-up, precision,
    checkpoints, resume, output folder, licence) with DINO's defaults, and DINO's own settings. Settings marked
    fitted are chosen from the images' size by `pretrain_recipe`."""

    num_train_epochs: int = setting(
        40, "passes over the training data; default: chosen from the images' size (40 for the digits)", fitted=True
    )
    per_device_train_batch_size: int = setting(64, "training images per batch and process")
    learning_rate: float = setting(
        2e-3,
        "peak learning rate (cosine decay to `min_lr` after the warm-up); default: chosen from the images' size",
        fitted=True,
    )
    min_lr: float = setting(1e-6, "the learning rate at the end of the cosine decay")
    weight_decay: float = setting(0.04, "AdamW weight decay at the start; cosine to `weight_decay_end`")
    weight_decay_end: float = setting(0.4, "AdamW weight decay at the end")
    warmup_ratio: float = setting(0.1, "learning-rate warm-up as a fraction of the optimizer steps")
    max_grad_norm: float = setting(3.0, "gradient clipping of the student; 0 turns it off")
    out_dim: int = setting(
        4096, "prototypes of the DINO head (its output size); default: chosen from the images", fitted=True
    )
    head_hidden_dim: int = setting(2048, "hidden width of the DINO head's MLP", fitted=True)
    head_bottleneck_dim: int = setting(256, "bottleneck width of the DINO head (before its last layer)", fitted=True)
    head_layers: int = setting(3, "linear layers of the DINO head's MLP")
    head_batch_norm: bool = setting(
        False,
        "batch norm in the DINO head's MLP (DINO's use_bn): on small data it keeps the teacher's targets from being "
        "uniform at the start; default: chosen from the images (on for small images)",
        fitted=True,
    )
    norm_last_layer: bool = setting(
        True, "fix the norm of the head's last layer (stabler training)", flag="no_norm_last_layer"
    )
    freeze_last_layer: int = setting(1, "epochs during which the head's last layer is kept fixed")
    momentum_teacher: float = setting(
        0.996, "EMA momentum of the teacher at the start; cosine to 1; default: chosen from the images", fitted=True
    )
    teacher_temp: float = setting(
        0.07, "teacher temperature after its warm-up; default: chosen from the images", fitted=True
    )
    warmup_teacher_temp: float = setting(
        0.04, "teacher temperature at the start; default: chosen from the images", fitted=True
    )
    warmup_teacher_temp_epochs: int | None = setting(
        None, "epochs of the teacher temperature's linear warm-up; default: 30 as DINO's, at most a third of the run"
    )
    student_temp: float = setting(0.1, "student temperature")
    center_momentum: float = setting(0.9, "EMA momentum of the teacher outputs' centre")
    local_crops_number: int = setting(6, "local views per image (besides the 2 global ones)", fitted=True)
    local_crops_size: int | None = setting(
        None,
        "side of the local views in px (a multiple of the patch size); default: chosen from the model",
        fitted=True,
    )
    global_crops_scale: tuple[float, float] = setting(
        (0.4, 1.0), "range of the image's area a global view covers", fitted=True
    )
    local_crops_scale: tuple[float, float] = setting(
        (0.05, 0.4), "range of the image's area a local view covers", fitted=True
    )
    view_rotation: float = setting(0.0, "largest rotation of a view, in degrees", fitted=True)
    view_flip: bool = setting(True, "flip views horizontally (never for small images such as digits)", fitted=True)
    view_jitter: float = setting(0.4, "brightness and contrast jitter of the views", fitted=True)
    ibot: bool = setting(
        False, "add iBOT's masked-token loss (DINOv2): the student sees masked patches of the global views"
    )
    ibot_loss_weight: float = setting(1.0, "weight of the iBOT loss")
    mask_ratio: tuple[float, float] = setting((0.1, 0.5), "range of the fraction of patches masked for iBOT")
    mask_probability: float = setting(0.5, "fraction of the global views that get masked patches for iBOT")
    koleo_loss_weight: float = setting(
        0.0,
        "weight of DINOv2's KoLeo regulariser on the student's [CLS] (0: off); default: chosen from the images",
        fitted=True,
    )
    knn_eval: bool = setting(
        True,
        "each epoch, the k-NN accuracy (k=20, T=0.07) of the teacher's features on the held-out images (labelled data "
        "only)",
        flag="no_knn_eval",
    )

    def validate(self) -> None:
        super().validate()
        rules = [
            ("min_lr", lambda v: v >= 0, "0 or more"),
            ("weight_decay_end", lambda v: v >= 0, "0 or more"),
            ("out_dim", lambda v: v >= 2, "at least 2"),
            ("head_hidden_dim", lambda v: v >= 1, "at least 1"),
            ("head_bottleneck_dim", lambda v: v >= 1, "at least 1"),
            ("head_layers", lambda v: v >= 1, "at least 1"),
            ("freeze_last_layer", lambda v: v >= 0, "0 or more"),
            ("momentum_teacher", lambda v: 0 <= v <= 1, "in [0, 1]"),
            ("teacher_temp", lambda v: v > 0, "a positive number"),
            ("warmup_teacher_temp", lambda v: v > 0, "a positive number"),
            ("warmup_teacher_temp_epochs", lambda v: v >= 0, "0 or more"),
            ("student_temp", lambda v: v > 0, "a positive number"),
            ("center_momentum", lambda v: 0 <= v < 1, "in [0, 1)"),
            ("local_crops_number", lambda v: v >= 0, "0 or more"),
            ("local_crops_size", lambda v: v >= 1, "at least 1"),
            ("view_rotation", lambda v: 0 <= v <= 180, "between 0 and 180 degrees"),
            ("view_jitter", lambda v: 0 <= v < 1, "in [0, 1)"),
            ("ibot_loss_weight", lambda v: v >= 0, "0 or more"),
            ("mask_probability", lambda v: 0 <= v <= 1, "in [0, 1]"),
            ("koleo_loss_weight", lambda v: v >= 0, "0 or more"),
        ]
        for name, ok, expected in rules:
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and ok(value)):
                raise SettingError(name, f"must be {expected}, got {value}")
        for name, low, high in (
            ("global_crops_scale", 0.0, 1.0),
            ("local_crops_scale", 0.0, 1.0),
            ("mask_ratio", 0.0, 1.0),
        ):
            pair = tuple(getattr(self, name))
            if len(pair) != 2 or not (low < pair[0] <= pair[1] <= high):
                raise SettingError(name, f"must be two numbers 0 < low <= high <= 1, got {pair}")


# ---- the recipe that fits the images -------------------------------------------------------------------------------
# Small images (up to 64 px, e.g. the 8x8 digits): the supervised recipe's patches (8x8: 2x2 patches of 4 px) on a
# narrower, shallower ViT; crops, slight rotations and jitter but no flips. On the digits, DINO's own temperatures,
# momentum and head left the teacher's targets uniform (its [CLS] varies little between images at the start) and the
# features collapsed; a constant teacher temperature of 0.04, momentum 0.99, a small head and KoLeo (0.3) keep them
# apart; 60 epochs and 1,024 prototypes do better than 30 and 256 (docs/pretraining.md has the measurements).
SMALL_PRETRAIN_MODEL = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256)


@dataclass(frozen=True)
class PretrainRecipe:
    """A backbone to pretrain from scratch and its DINO defaults, for images of one typical size
    (`pretrain_recipe`). `model`: HfViTConfig values; `settings`: `PretrainSettings` values; `num_threads`: 1 for
    the small model (its small matmuls gain nothing from more threads); `reason`: what was chosen and why."""

    kind: str
    model: dict
    settings: dict
    num_threads: int | None
    reason: str

    def apply(self, settings: PretrainSettings) -> PretrainSettings:
        return replace(settings, **self.settings)

    def describe(self) -> str:
        m, s = self.model, self.settings
        return (
            f"pretraining recipe chosen from the data: {self.reason}: {m['image_size']}x{m['image_size']} input, "
            f"patch {m['patch_size']}, width {m['hidden_size']}, depth {m['num_hidden_layers']}; "
            f"{s['num_train_epochs']} epochs at learning rate {s['learning_rate']:g}; 2 global views + "
            f"{s['local_crops_number']} local views of {s['local_crops_size']} px; {s['out_dim']} prototypes"
        )


def pretrain_recipe(sizes) -> PretrainRecipe:
    """The backbone and DINO defaults for images of these (width, height) sizes: `model_setup.recipe_for_images`'
    input size and patch size, then for small images (up to 64 px) `SMALL_PRETRAIN_MODEL`, local views of half the
    side and the settings above it; for photos its ViT-Tiny/16 with DINO's own settings and views (global 224 px over
    40-100 % of the image, local 96 px over 5-40 %, flips)."""
    from .model_setup import recipe_for_images

    base = recipe_for_images(sizes)
    if base.kind == "small":
        image_size, patch = base.image_size, base.patch_size
        model = dict(SMALL_PRETRAIN_MODEL, image_size=image_size, patch_size=patch, pooling="cls")
        settings = dict(
            num_train_epochs=60,  # 30 left the k-NN at 93.6 %, still rising (docs/pretraining.md)
            learning_rate=1e-3,
            momentum_teacher=0.99,
            warmup_teacher_temp=0.04,
            teacher_temp=0.04,
            koleo_loss_weight=0.3,
            out_dim=1024,
            head_hidden_dim=256,
            head_bottleneck_dim=64,
            head_batch_norm=False,
            local_crops_number=4,
            local_crops_size=max(image_size // 2, patch),
            global_crops_scale=(0.4, 1.0),
            local_crops_scale=(0.1, 0.4),
            view_rotation=10.0,
            view_flip=False,
            view_jitter=0.2,
        )
        return PretrainRecipe("small", model, settings, 1, f"{base.reason.split(', and')[0]}: small images")
    model = dict(base.model, pooling="cls")
    patch = model["patch_size"]
    local = max(round(model["image_size"] * 96 / 224 / patch), 1) * patch
    settings = dict(
        num_train_epochs=10,
        learning_rate=5e-4 * PretrainSettings.per_device_train_batch_size / 256,
        out_dim=4096,
        head_hidden_dim=2048,
        head_bottleneck_dim=256,
        momentum_teacher=0.996,
        warmup_teacher_temp=0.04,
        teacher_temp=0.07,
        koleo_loss_weight=0.0,
        head_batch_norm=False,
        local_crops_number=6,
        local_crops_size=local,
        global_crops_scale=(0.4, 1.0),
        local_crops_scale=(0.05, 0.4),
        view_rotation=0.0,
        view_flip=True,
        view_jitter=0.4,
    )
    return PretrainRecipe("photo", model, settings, None, f"{base.reason.split(', and')[0]}: photos")


def local_crops_size_for(config) -> int:
    """Local views of about 96/224 of the input side (DINO's), a multiple of the patch size: for a given model."""
    side = config.image_size if isinstance(config.image_size, int) else min(config.image_size)
    return max(round(side * 96 / 224 / config.patch_size), 1) * config.patch_size


# ---- results -------------------------------------------------------------------------------------------------------
@dataclass
class PretrainResult:
    output_dir: Path
    completed_steps: int
    training_time_s: float
    evaluation_time_s: float
    history: list[dict]
    knn_accuracy: float | None  # the teacher's k-NN accuracy on the held-out images after the last epoch
    eval_split: str | None
    resumed_from: Path | None = None


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """The accuracy of DINO's weighted k-NN (`hf_vit.evaluation.knn_predict`, what `hf-vit-eval` reports): cosine
    similarity of L2-normalised features; each of the `k` nearest training images votes for its class with weight
    exp(similarity / `temperature`)."""
    from .evaluation import knn_predict

    classes = int(max(train_labels.max(), test_labels.max())) + 1
    predicted = knn_predict(
        train_features.float().cpu(),
        train_labels.cpu(),
        test_features.float().cpu(),
        k=k,
        temperature=temperature,
        num_classes=classes,
    )
    return float((torch.as_tensor(predicted) == test_labels.cpu()).float().mean())


# ---- the entry point -----------------------------------------------------------------------------------------------
def pretrain(
    data: hdata.ImageData,
    output_dir,
    settings: PretrainSettings | None = None,
    *,
    model=None,
    processor=None,
    inputs=None,
    hub_model_id: str | None = None,
    lineage: Lineage | None = None,
    command: str | None = None,
) -> PretrainResult:
    """DINO-pretrain a backbone on `data`'s training images (labels ignored) and write the teacher's folder.

    `model`: the `HfViTModel` to start from (e.g. `hf_vit.from_pretrained(name, task="feature-extraction")`, with its
    `processor`, and `lineage` from `hf_vit.convert.pretrained.base_lineage`); None: a fresh backbone from the
    recipe that fits the images (`pretrain_recipe`), whose defaults also fill the fitted settings left at
    `PretrainSettings`' defaults only when `settings` is None. `inputs`, `hub_model_id`, `command`: as `fit`.
    Raises `SettingError`, `output_dir.OutputDirRefused`, `ValueError` (checkpoints, licence, a model that is not a
    backbone), `hf_vit.data.DataError` and `DiskFullError`; a failed run leaves the output folder as it found it,
    except for checkpoints it saved."""
    require("train", "`pretrain`")
    from .data import image_processor_for
    from .modeling_hf_vit import HfViTModel

    recipe = pretrain_recipe(hdata.sample_image_sizes(data)) if model is None or settings is None else None
    if settings is None:
        settings = recipe.apply(PretrainSettings()) if model is None else PretrainSettings()
    if model is None:
        from .configuration_hf_vit import HfViTConfig

        model = HfViTModel(HfViTConfig(**recipe.model))
        processor = processor or image_processor_for(recipe.model["image_size"])
    if not isinstance(model, HfViTModel):
        raise ValueError(
            f'`model` must be an HfViTModel backbone (hf_vit.from_pretrained(..., task="feature-extraction")), '
            f"got {type(model).__name__}"
        )
    if processor is None:
        processor = image_processor_for(model.config.image_size)
    if settings.local_crops_size is None:
        settings = replace(settings, local_crops_size=local_crops_size_for(model.config))
    settings.validate()
    card = card_values(data, settings, hub_model_id=hub_model_id, lineage=lineage, command=command)
    # the views and the data are the model's input as it is: no training augmentation of the supervised kind
    settings = replace(settings, augment=False)
    return run_guarded(
        output_dir,
        settings,
        inputs,
        lambda: _PretrainRun(model, processor, data, Path(output_dir), settings, card).train(),
    )


class _PretrainPlan(_Plan):
    """`fit._Plan` with what else a resumed DINO run must share with the one that saved its checkpoint."""

    def run_settings(self) -> dict:
        s = self.settings
        names = (
            "min_lr",
            "weight_decay_end",
            "momentum_teacher",
            "teacher_temp",
            "warmup_teacher_temp",
            "warmup_teacher_temp_epochs",
            "freeze_last_layer",
            "local_crops_number",
            "local_crops_size",
            "global_crops_scale",
            "local_crops_scale",
            "view_rotation",
            "view_flip",
            "view_jitter",
            "ibot",
            "mask_ratio",
            "mask_probability",
            "koleo_loss_weight",
            "ibot_loss_weight",
            "out_dim",
            "head_batch_norm",
        )
        values = {name: getattr(s, name) for name in names}
        return {**super().run_settings(), **{k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}}

    def hyperparameters(self, mixed_precision: str | None) -> dict:
        s = self.settings
        values = super().hyperparameters(mixed_precision)
        for name in ("label_smoothing", "layer_decay", "lr_scheduler_type"):
            values.pop(name, None)
        values.update(
            objective="DINO" + (" + iBOT" if s.ibot else "") + (" + KoLeo" if s.koleo_loss_weight else ""),
            lr_schedule=f"linear warm-up, cosine to {s.min_lr:g}",
            weight_decay=f"{s.weight_decay:g} -> {s.weight_decay_end:g} (cosine)",
            momentum_teacher=f"{s.momentum_teacher:g} -> 1 (cosine)",
            teacher_temp=f"{s.warmup_teacher_temp:g} -> {s.teacher_temp:g}",
            student_temp=s.student_temp,
            out_dim=s.out_dim,
            views=f"2 global ({list(s.global_crops_scale)}) + {s.local_crops_number} local of {s.local_crops_size} px "
            f"({list(s.local_crops_scale)})",
        )
        return values


class _PretrainRun(_Run):
    """One DINO run: `fit._Run`'s set-up, checkpoints and final folder with a student, an EMA teacher and the DINO
    loss in place of a classifier and its cross-entropy."""

    def __init__(self, backbone, processor, data, output_dir: Path, settings: PretrainSettings, card: dict):
        from accelerate.utils import set_seed
        from tqdm.auto import tqdm

        s = settings
        self.s, self.processor, self.card = s, processor, card
        self.eval_split, self.dataset_name = data.eval_split, data.name
        self.labelled = data.num_labels >= 2 and data.eval is not None and not data.streaming
        self.output_dir, self.checkpoint_dir = output_dir, output_dir / "checkpoints"
        self.accelerator = acc = make_accelerator(s, output_dir)
        self.main = acc.is_main_process
        set_seed(s.seed)  # the same head weights on every process
        if s.ibot and not backbone.config.use_mask_token:  # a backbone without one (e.g. DINO's): a new mask token
            backbone.config.use_mask_token = True
            backbone.embeddings.mask_token = nn.Parameter(torch.zeros(1, backbone.config.hidden_size))
        self.config = backbone.config
        head = dino.DINOHead(
            self.config.hidden_size,
            s.out_dim,
            hidden_dim=s.head_hidden_dim,
            bottleneck_dim=s.head_bottleneck_dim,
            num_layers=s.head_layers,
            norm_last_layer=s.norm_last_layer,
            batch_norm=s.head_batch_norm,
        )
        student = dino.DINONetwork(backbone, head)
        self.teacher = copy.deepcopy(student)  # the teacher starts as the student, and learns only by EMA
        for param in self.teacher.parameters():
            param.requires_grad = False
        self.num_params = sum(p.numel() for p in backbone.parameters())
        self.dino_loss = dino.DINOLoss(s.out_dim, s.student_temp, s.center_momentum)
        self.ibot_loss = dino.IBOTPatchLoss(s.out_dim, s.student_temp, s.center_momentum) if s.ibot else None
        self.views = dino.MultiCropViews(
            dino.ViewSettings(
                global_size=_side(self.config.image_size),
                local_size=s.local_crops_size,
                num_local=s.local_crops_number,
                global_scale=tuple(s.global_crops_scale),
                local_scale=tuple(s.local_crops_scale),
                max_rotation=s.view_rotation,
                flip=s.view_flip,
                jitter=s.view_jitter,
            )
        )

        self.resume = _ResumePoint.find(s, self.checkpoint_dir, self.config, log=self.main)
        self.batches = _Batches(data, processor, s, acc)
        self.plan = _PretrainPlan.make(s, data.name, self.batches.train_examples, acc.num_processes)
        self.resume.check_same_run(self.plan)
        total = self.plan.total_steps
        self.lr_at = dino.cosine_schedule(s.learning_rate, s.min_lr, total, self.plan.warmup_steps)
        self.weight_decay_at = dino.cosine_schedule(s.weight_decay, s.weight_decay_end, total)
        self.momentum_at = dino.cosine_schedule(s.momentum_teacher, 1.0, total)
        warmup_epochs = s.warmup_teacher_temp_epochs
        if warmup_epochs is None:
            warmup_epochs = min(30, max(self.plan.num_epochs // 3, 1))
        self.teacher_temp_warmup_epochs = warmup_epochs
        optimizer = torch.optim.AdamW(_param_groups(student), lr=s.learning_rate)
        self.model, self.optimizer = acc.prepare(student, optimizer)
        self.teacher.to(acc.device)
        self.dino_loss.to(acc.device)
        # checkpoints hold the teacher and the centres besides the student, optimizer and RNG states
        for extra in (self.teacher, self.dino_loss, self.ibot_loss):
            if extra is not None:
                acc.register_for_checkpointing(extra)
        self.batches.prepare(acc)
        self.resume.restore(acc, log=self.main)

        self.step = self.resume.step
        self.history = self.resume.history
        self.epoch_loss = {"loss": 0.0, "count": 0, **self.resume.epoch_loss}
        self.saved_step = self.resume.step if self.resume.path else None
        self.evaluation_time = 0.0
        if s.report_to:
            acc.init_trackers("runs", config=self.plan.hyperparameters(acc.mixed_precision))
        if self.main:
            self._describe()
        self.progress = tqdm(
            total=total,
            initial=self.step,
            desc="pretraining",
            disable=not self.main or not s.progress,
            dynamic_ncols=True,
        )
        self.model.train()
        self.start = time.perf_counter()

    def train(self) -> PretrainResult:
        """As `fit._Run.train`, with DINO's step (`dino_step`), the teacher's EMA after each optimizer step, and the
        head's last layer fixed during the first `freeze_last_layer` epochs."""
        s, acc, plan = self.s, self.accelerator, self.plan
        first_epoch, skip = self.resume.position(plan)
        for epoch in range(first_epoch, plan.num_epochs):
            if self.step >= plan.total_steps:
                break
            teacher_temp = dino.teacher_temperature(
                epoch, s.warmup_teacher_temp, s.teacher_temp, self.teacher_temp_warmup_epochs
            )
            for batch in self.batches.epoch(epoch, skip=skip if epoch == first_epoch else 0):
                with acc.accumulate(self.model):
                    loss = self.dino_step(batch["pixel_values"], epoch, teacher_temp)
                    acc.backward(loss)
                    if acc.sync_gradients:
                        if s.max_grad_norm:
                            acc.clip_grad_norm_(self.model.parameters(), s.max_grad_norm)
                        if epoch < s.freeze_last_layer:
                            dino.cancel_last_layer_gradients(acc.unwrap_model(self.model).head)
                        for group in self.optimizer.param_groups:
                            group["lr"] = self.lr_at(self.step)
                            group["weight_decay"] = self.weight_decay_at(self.step) if group["decay"] else 0.0
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                self.epoch_loss["loss"] += loss.item()
                self.epoch_loss["count"] += 1
                if not acc.sync_gradients:
                    continue
                dino.update_teacher(acc.unwrap_model(self.model), self.teacher, self.momentum_at(self.step))
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

    def dino_step(self, images: torch.Tensor, epoch: int, teacher_temp: float) -> torch.Tensor:
        """The loss of one batch: its views (drawn from a generator seeded by the seed, epoch, batch and process),
        the teacher's outputs of the global views, the student's of all, DINO's loss (and iBOT's, KoLeo's)."""
        s, acc = self.s, self.accelerator
        generator = torch.Generator().manual_seed(
            (s.seed * 1_000_003 + epoch * 7_919 + self.batches.taken * 104_729 + acc.process_index) % (2**63)
        )
        views = [v.to(acc.device) for v in self.views(images.cpu().float(), generator)]
        views = [v.to(images.dtype) for v in views]
        num_global, batch = 2, images.shape[0]
        masks = None
        if s.ibot:
            masks = dino.random_patch_masks(
                num_global * batch,
                self.config.grid_size[0] * self.config.grid_size[1],
                tuple(s.mask_ratio),
                s.mask_probability,
                generator,
            ).to(acc.device)
        with torch.no_grad(), acc.autocast():
            teacher_cls, teacher_patches, _ = self.teacher(views[:num_global], with_patches=s.ibot)
        student_cls, student_patches, embeddings = self.model(views, masks=masks, with_patches=s.ibot)
        loss = self.dino_loss(student_cls, teacher_cls, teacher_temp)
        if s.ibot:
            loss = loss + s.ibot_loss_weight * self.ibot_loss(student_patches, teacher_patches, masks, teacher_temp)
        if s.koleo_loss_weight:
            loss = loss + s.koleo_loss_weight * sum(
                dino.koleo_loss(part) for part in embeddings[: num_global * batch].chunk(num_global)
            )
        return loss

    # ---- evaluation: k-NN of the teacher's features -----------------------------------------------------------------
    def evaluate(self) -> dict:
        """The teacher's k-NN accuracy on the held-out images (labelled data, `knn_eval`): {} otherwise. Every process
        computes it alike (no communication), on the whole sets."""
        if not (self.labelled and self.s.knn_eval):
            return {}
        train_features, train_labels = self._features(self.batches.train_set)
        eval_features, eval_labels = self._features(self.batches.eval_set)
        accuracy = knn_accuracy(train_features, train_labels, eval_features, eval_labels)
        return {"eval_knn_accuracy": accuracy, "eval_samples": len(eval_labels)}

    @torch.no_grad()
    def _features(self, dataset) -> tuple[torch.Tensor, torch.Tensor]:
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=self.s.per_device_eval_batch_size, collate_fn=hdata.collate
        )
        features, labels = [], []
        self.teacher.eval()
        with torch.random.fork_rng(devices=[]):  # a dataset's augmentation must not move the run's RNG
            for batch in loader:
                pixels = batch["pixel_values"].to(self.accelerator.device)
                with self.accelerator.autocast():
                    features.append(self.teacher.backbone(pixel_values=pixels).pooler_output.float().cpu())
                labels.append(batch["labels"])
        self.teacher.train()
        return torch.cat(features), torch.cat(labels)

    def end_epoch(self, epoch: int) -> None:
        start = time.perf_counter()
        evaluation = self.evaluate()
        self.evaluation_time += time.perf_counter() - start
        train_loss = self.epoch_loss["loss"] / max(self.epoch_loss["count"], 1)
        row = {
            "epoch": epoch + 1,
            "step": self.step,
            "train_loss": train_loss,
            **evaluation,
            "lr": self.optimizer.param_groups[0]["lr"],
            "elapsed_s": round(time.perf_counter() - self.start, 3),
        }
        if "eval_knn_accuracy" in row:  # the curves' accuracy panel
            row["eval_accuracy"] = row["eval_knn_accuracy"]
        self.history.append(row)
        self.epoch_loss = {"loss": 0.0, "count": 0}
        if self.main:
            shown = {"loss": f"{train_loss:.3f}"}
            if "eval_knn_accuracy" in evaluation:
                shown["knn"] = f"{100 * evaluation['eval_knn_accuracy']:.2f}%"
            self.progress.set_postfix(**shown)
        if self.s.report_to:
            self.accelerator.log({k: v for k, v in row.items() if k not in ("epoch", "step")}, step=self.step)

    # ---- the end -------------------------------------------------------------------------------------------------
    def finish(self) -> PretrainResult:
        acc = self.accelerator
        training_time = time.perf_counter() - self.start
        self.progress.close()
        acc.wait_for_everyone()
        if self.s.report_to:
            acc.end_training()
        if self.main:
            self.write_final_folder(training_time)
        acc.wait_for_everyone()
        last = self.history[-1] if self.history else {}
        return PretrainResult(
            output_dir=self.output_dir,
            completed_steps=self.step,
            training_time_s=training_time,
            evaluation_time_s=self.evaluation_time,
            history=self.history,
            knn_accuracy=last.get("eval_knn_accuracy"),
            eval_split=self.eval_split if "eval_knn_accuracy" in last else None,
            resumed_from=self.resume.path,
        )

    def write_final_folder(self, training_time: float) -> None:
        import json

        from .checkpoints import list_checkpoints
        from .model_card import render_model_card
        from .output_dir import DiskFullError, write_trained_model

        teacher = self.teacher.backbone
        last = self.history[-1] if self.history else {}
        knn = last.get("eval_knn_accuracy")
        card = render_model_card(
            teacher.config,
            num_parameters=self.num_params,
            model_name=self.output_dir.name,
            results={"knn_accuracy": knn} if knn is not None else None,
            hyperparameters=self.plan.hyperparameters(self.accelerator.mixed_precision),
            description=PRETRAINED_DESCRIPTION,
            pipeline_tag="image-feature-extraction",
            **self.card,
        )
        results = {
            "train_steps": self.step,
            "training_time_s": round(training_time, 2),
            "evaluation_time_s": round(self.evaluation_time, 2),
            "per_device_train_batch_size": self.s.per_device_train_batch_size,
            "num_processes": self.accelerator.num_processes,
            "gradient_accumulation_steps": self.s.gradient_accumulation_steps,
            "final_train_loss": last.get("train_loss"),
        }
        if knn is not None:
            results[f"{self.eval_split}_knn_accuracy"] = knn
        try:
            write_trained_model(
                self.output_dir,
                teacher,
                self.processor,
                card,
                files={"all_results.json": json.dumps(results, indent=1) + "\n"},
                history=self.history,
            )
        except DiskFullError:
            if list_checkpoints(self.checkpoint_dir):
                raise DiskFullError(
                    f"disk full while writing the pretrained model to {self.output_dir}; nothing in it was changed "
                    "(its checkpoints are intact, free space and run again)"
                ) from None
            raise
        self.discard_stale_checkpoints()

    def _describe(self) -> None:
        config = self.config
        logger.info(
            "data: %s (%s train images, labels unused) | backbone: %dx%d patch %s at %s, %.2fM params | %d view(s) "
            "per image | %d process(es) on %s | %d steps",
            self.dataset_name,
            self.batches.train_examples,
            config.num_hidden_layers,
            config.hidden_size,
            config.patch_size,
            config.image_size,
            self.num_params / 1e6,
            2 + self.s.local_crops_number,
            self.accelerator.num_processes,
            self.accelerator.device,
            self.plan.total_steps,
        )


PRETRAINED_DESCRIPTION = (
    "Pretrained without labels with DINO (self-distillation: a student learns to match an EMA teacher's output "
    "across views of an image); these are the teacher's backbone weights, a feature extractor (`HfViTModel`: "
    '`hf_vit.from_pretrained(path, task="feature-extraction")`). Fine-tune them into a classifier with '
    "`hf-vit-train --model_name_or_path`: the classification head is then new."
)


def _side(size) -> int:
    return size if isinstance(size, int) else int(size[0])


def _param_groups(student: nn.Module) -> list[dict]:
    """AdamW groups: weight decay (scheduled) on weights, none on biases, norms, positions, [CLS] (`no_weight_decay`)
    nor on the head's last-layer norm; `decay` marks which."""
    decay, other = [], []
    for name, param in student.named_parameters():
        if param.requires_grad:
            (other if no_weight_decay(name, param) else decay).append(param)
    return [
        {"params": decay, "weight_decay": 0.0, "decay": True},
        {"params": other, "weight_decay": 0.0, "decay": False},
    ]


__all__ = [
    "PretrainRecipe",
    "PretrainResult",
    "PretrainSettings",
    "knn_accuracy",
    "pretrain",
    "pretrain_recipe",
]
