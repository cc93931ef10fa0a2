"""Which model and image processor to train, for both trainers (`hf_vit.fit` and the Trainer command): a checkpoint
to fine-tune, or a fresh model from a config file, a preset, or the recipe that fits the data (`recipe_for_images`:
the input size, patch size, model size, epochs, learning rate and augmentation from the images' typical size).
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .configuration_hf_vit import PRESETS, HfViTConfig

logger = logging.getLogger(__name__)

# The default model for the embedded digits: 8×8 input cut into 2×2 = 4 patches of 4×4 pixels, width 96, depth 6.
# Few tokens keep each step cheap on a CPU, and learn far faster here than patch 2 (16 tokens: 89% after 30 epochs
# where patch 4 is at 97-99%); mean pooling learns faster than [CLS] on so little data. Width 96 rather than 64:
# over seeds 1/3/42, 20 epochs end at 98.1-99.7% test accuracy (width 64: 97.2-99.2% after 15 epochs).
DIGITS_MODEL = dict(
    image_size=8,
    patch_size=4,
    hidden_size=96,
    num_hidden_layers=6,
    num_attention_heads=4,
    intermediate_size=384,
    pooling="mean",
)
DEFAULT_PRESET = "vit-tiny-patch16-224"
FINE_TUNING_LEARNING_RATE = 5e-5  # the trainers' default for a pretrained model (from scratch: the recipe's)

# ---- the recipe that fits the data: a model and its training defaults from the images' typical size ------------
SMALL_MAX_SIDE = 64  # up to 64 px (digits, MNIST, CIFAR, icons, thumbnails): the digits recipe, at most 4x4 patches
SMALL_PATCHES = (4, 8, 16)  # the smallest that keeps the grid at most 4x4: few tokens learn fastest on little data
MAX_IMAGE_SIZE = 224  # larger images are resized to 224 px: the default preset
PRETRAINED_HINT = (
    "for photos, fine-tuning a pretrained ViT (`model_name_or_path`=google/vit-base-patch16-224, or "
    "timm/vit_small_patch16_224.augreg_in21k_ft_in1k) usually beats training from scratch"
)


@dataclass(frozen=True)
class Recipe:
    """A model trained from scratch, and its training defaults, for images of one typical size: see
    `recipe_for_images`. `augmentation` is what augmenting means for these images (when it is on): "shift" (small
    shifts, slight rotation and scale, never a flip: what small images and digits survive) or "crop_flip"
    (RandomResizedCrop + horizontal flip, for photos)."""

    kind: str  # "small" | "photo"
    typical_size: tuple[int, int]  # the median (width, height) of the sampled images
    image_size: int
    patch_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    pooling: str
    num_train_epochs: int
    learning_rate: float
    augment: bool  # on by default (--augment auto)
    augmentation: str  # one of hf_vit.data.AUGMENTATIONS
    num_threads: int | None  # 1 for the small model: its small matmuls gain nothing from more threads (and suffer
    # badly from them on a busy machine)
    reason: str

    def apply(self, settings):
        """`settings` (a `hf_vit.fit.FitSettings`) with this recipe's training defaults: epochs, learning rate,
        whether to augment and how."""
        return replace(
            settings,
            num_train_epochs=self.num_train_epochs,
            learning_rate=self.learning_rate,
            augment=self.augment,
            augmentation=self.augmentation,
        )

    @property
    def model(self) -> dict:
        """The HfViTConfig values of the recipe's model."""
        keys = (
            "image_size",
            "patch_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "pooling",
        )
        return {key: asdict(self)[key] for key in keys}

    @property
    def pretrained_hint(self) -> str | None:
        return PRETRAINED_HINT if self.kind == "photo" else None

    def describe(self) -> str:
        grid = self.image_size // self.patch_size
        kind = {"shift": "small shifts, no flips", "crop_flip": "RandomResizedCrop + horizontal flip"}[
            self.augmentation
        ]
        augmentation = f"augmentation: {kind}" if self.augment else f"no augmentation (`augment`=on: {kind})"
        return (
            f"model chosen from the data: {self.reason}: {self.image_size}x{self.image_size} input, patch "
            f"{self.patch_size} ({grid}x{grid} patches), width {self.hidden_size}, depth {self.num_hidden_layers}, "
            f"{self.num_attention_heads} heads, {self.pooling} pooling; {self.num_train_epochs} epochs at learning "
            f"rate {self.learning_rate:g}; {augmentation}"
        )


def recipe_for_images(sizes: Iterable[tuple[int, int]]) -> Recipe:
    """The model and training defaults for images of these (width, height) sizes (a sample is enough).

    The typical side is the median of sqrt(width * height). Up to SMALL_MAX_SIDE px: the digits recipe
    (`DIGITS_MODEL`'s width 96 and depth 6, 20 epochs, lr 1e-3, no augmentation, one thread; 98-99% on the digits in
    ~30 s on a CPU) with the smallest patch of SMALL_PATCHES that keeps the grid at most 4x4 (8x8 digits: 2x2 patches
    of 4 px; the digits at 24 px: 3x3 of 8 px, 97.4%, where 6x6 patches of 4 px and width 192 reached 85% in 10
    epochs); augmenting them means small shifts. Larger: the default preset (ViT-Tiny, patch 16), the input rounded
    to 16 px and capped at 224, 3 epochs, RandomResizedCrop + flip. Raises `ValueError` for no sizes or a size
    below 1 px."""
    sizes = [(int(w), int(h)) for w, h in sizes]
    if not sizes:
        raise ValueError("no image sizes to choose a model from")
    if min(min(s) for s in sizes) < 1:
        raise ValueError(f"image sizes must be at least 1x1 pixel, got {min(sizes, key=min)}")
    side = statistics.median(math.sqrt(w * h) for w, h in sizes)
    typical = (round(statistics.median(w for w, _ in sizes)), round(statistics.median(h for _, h in sizes)))
    seen = f"the images are typically {typical[0]}x{typical[1]} px (median of {len(sizes)} sampled)"
    if side <= SMALL_MAX_SIDE:
        patch = next(p for p in SMALL_PATCHES if side <= 4 * p)
        image_size = max(math.floor(side / patch + 0.5) * patch, 2 * patch)
        return Recipe(
            kind="small",
            typical_size=typical,
            **{**DIGITS_MODEL, "image_size": image_size, "patch_size": patch},
            num_train_epochs=20,
            learning_rate=1e-3,
            augment=False,
            augmentation="shift",
            num_threads=1,
            reason=f"{seen}, and small images get the digits recipe with {patch}-px patches (a flip or a large crop "
            "can change what a small image shows: augmenting means small shifts)",
        )
    preset = dict(PRESETS[DEFAULT_PRESET])
    patch = preset["patch_size"]
    image_size = min(max(math.floor(side / patch + 0.5) * patch, 4 * patch), MAX_IMAGE_SIZE)
    size_note = "" if image_size == MAX_IMAGE_SIZE else f" at {image_size} px rather than 224"
    return Recipe(
        kind="photo",
        typical_size=typical,
        **{**preset, "image_size": image_size},
        pooling="cls",
        num_train_epochs=3,
        learning_rate=1e-3,
        augment=True,
        augmentation="crop_flip",
        num_threads=None,
        reason=f"{seen}, and photo-sized images get the default {DEFAULT_PRESET}{size_note}",
    )


def recipe_for_data(data, max_images: int = 256) -> Recipe:
    """`recipe_for_images` over a sample of up to `max_images` of `data`'s training images (an `ImageData`)."""
    from .data import sample_image_sizes

    return recipe_for_images(sample_image_sizes(data, max_images))


# set from the data (the labels) or by transformers itself: neither overridable nor read from a config file
_FROM_ELSEWHERE = {
    "model_type",
    "architectures",
    "auto_map",
    "id2label",
    "label2id",
    "num_labels",
    "transformers_version",
}


def config_keys() -> set[str]:
    return {key for key in HfViTConfig().to_dict() if not key.startswith("_")} - _FROM_ELSEWHERE


def check_overrides(overrides: dict) -> None:
    """Unknown keys are refused, with the closest known one: a typo must not silently train another model."""
    known = config_keys()
    for key in overrides:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(sorted(known))}"
            raise ValueError(f"unknown HfViTConfig key {key!r}; {hint}")


def build_model(
    id2label: dict[int, str],
    *,
    model_name_or_path: str | None = None,
    preset: str | None = None,
    config_file: str | None = None,
    config_overrides: dict | None = None,
    digits: bool = False,
    recipe: Recipe | None = None,
    cache_dir: str | None = None,
):
    """(model, image_processor) with the data's labels `id2label`: fine-tune `model_name_or_path` (a new head when
    the labels differ), or a fresh model from `config_file` / `preset` / `recipe` (`recipe_for_data`) / the digits
    model / the default preset, with `config_overrides`. Raises `ValueError` (one line) for what cannot be built."""
    from .data import image_processor_for
    from .modeling_hf_vit import HfViTForImageClassification

    labels = dict(num_labels=len(id2label), id2label=dict(id2label), label2id={v: k for k, v in id2label.items()})
    chosen = [
        name
        for name, value in (
            ("model_name_or_path", model_name_or_path),
            ("preset", preset),
            ("config_file", config_file),
        )
        if value
    ]
    if len(chosen) > 1:
        raise ValueError(f"give one of model_name_or_path, preset, config_file (got {', '.join(chosen)})")
    overrides = dict(config_overrides or {})
    check_overrides(overrides)
    if model_name_or_path:
        if overrides:
            raise ValueError("config overrides apply to models trained from scratch, not to a model to fine-tune")
        return _pretrained(model_name_or_path, labels, cache_dir)
    if preset and preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; known presets: {', '.join(PRESETS)}")
    if config_file:
        settings = _read_config_file(config_file)
        if "num_hidden_layers" in overrides:  # the file's backbone stages are those of its own depth
            settings = {k: v for k, v in settings.items() if k not in ("out_features", "out_indices")}
        config = HfViTConfig(**{**settings, **overrides, **labels})
    elif preset:
        config = HfViTConfig.from_preset(preset, **overrides, **labels)
    elif recipe is not None:
        config = HfViTConfig(**{**recipe.model, **overrides, **labels})
    elif digits:
        config = HfViTConfig(**{**DIGITS_MODEL, **overrides, **labels})
    else:
        config = HfViTConfig.from_preset(DEFAULT_PRESET, **overrides, **labels)
    return HfViTForImageClassification(config), image_processor_for(config.image_size)


def _read_config_file(path: str) -> dict:
    if not Path(path).is_file():
        raise ValueError(f"config file {path} is not a file")
    try:
        settings = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"config file {path} is not valid JSON: {error}") from None
    if not isinstance(settings, dict):
        raise ValueError(f"config file {path} holds no JSON object")
    return {k: v for k, v in settings.items() if k not in _FROM_ELSEWHERE}


def _pretrained(name_or_path: str, labels: dict, cache_dir: str | None):
    from transformers import AutoConfig, AutoModelForImageClassification

    import hf_vit  # noqa: F401  (registers the Auto classes)

    from .checkpoint_io import load_image_processor
    from .convert.pretrained import pretrained_location
    from .data import image_processor_for

    try:  # timm, transformers ViT, DINOv2...: the cached hf_vit conversion (hf_vit.convert.pretrained)
        location = pretrained_location(name_or_path, cache_dir=cache_dir)
        config = AutoConfig.from_pretrained(location, cache_dir=cache_dir)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot load a model from {name_or_path}: {str(error).splitlines()[0]}") from None
    if config.model_type != "hf_vit":
        raise ValueError(f"{name_or_path} is a {config.model_type!r} model, not hf_vit (convert it first)")
    theirs = {int(index): name for index, name in (config.id2label or {}).items()}
    ours = labels["id2label"]
    if theirs == ours:
        model = AutoModelForImageClassification.from_pretrained(location, cache_dir=cache_dir, **labels)
    elif sorted(theirs.values()) == sorted(ours.values()):  # the same classes in another order: keep them, by name
        model = AutoModelForImageClassification.from_pretrained(location, cache_dir=cache_dir)
        _reorder_head(model, theirs, labels)
        logger.info(
            "%s has the data's labels in another order: its classification head's rows are reordered by name",
            name_or_path,
        )
    else:
        model = AutoModelForImageClassification.from_pretrained(
            location, cache_dir=cache_dir, ignore_mismatched_sizes=True, **labels
        )
        _new_head(model)  # a head of the same size still means other classes: a new one, whatever its size
        logger.info("%s has other labels than the data: a new classification head is trained", name_or_path)
    try:
        processor = load_image_processor(location, cache_dir=cache_dir)  # never an auto_map's code
    except OSError:
        processor = image_processor_for(config.image_size)
    return model, processor


def _new_head(model) -> None:
    """A freshly initialised classification head (hf_vit's init: truncated normal weights, zero bias)."""
    import torch

    old = model.classifier
    head = torch.nn.Linear(old.in_features, old.out_features, device=old.weight.device, dtype=old.weight.dtype)
    torch.nn.init.trunc_normal_(head.weight, std=model.config.initializer_range)
    torch.nn.init.zeros_(head.bias)
    model.classifier = head


def _reorder_head(model, theirs: dict[int, str], labels: dict) -> None:
    """Give `model` (whose head's outputs are `theirs`, index -> name) the data's label order: output i becomes the
    row of the class the data calls i, so every output keeps the class it was trained for."""
    import torch

    rows = torch.tensor(
        [{name: index for index, name in theirs.items()}[name] for _, name in sorted(labels["id2label"].items())]
    )
    with torch.no_grad():
        model.classifier.weight.copy_(model.classifier.weight[rows])
        if model.classifier.bias is not None:
            model.classifier.bias.copy_(model.classifier.bias[rows])
    model.config.id2label, model.config.label2id = dict(labels["id2label"]), dict(labels["label2id"])


__all__ = [
    "DEFAULT_PRESET",
    "DIGITS_MODEL",
    "Recipe",
    "build_model",
    "check_overrides",
    "config_keys",
    "recipe_for_data",
    "recipe_for_images",
]
