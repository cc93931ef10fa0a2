"""Which model and image processor to train, for both trainers (`hf_vit.fit` and the Trainer command): a checkpoint
to fine-tune, or a fresh model from a config file, a preset, or the recipe that fits the data.
"""

from __future__ import annotations

import difflib
import json
import logging
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
# set from the data (the labels) or by transformers itself: neither overridable nor read from a config file
_FROM_ELSEWHERE = {"model_type", "architectures", "auto_map", "id2label", "label2id", "num_labels", "transformers_version"}


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


def build_model(id2label: dict[int, str], *, model_name_or_path: str | None = None, preset: str | None = None,
                config_file: str | None = None, config_overrides: dict | None = None, digits: bool = False,
                cache_dir: str | None = None):
    """(model, image_processor) with the data's labels `id2label`: fine-tune `model_name_or_path` (a new head when
    the labels differ), or a fresh model from `config_file` / `preset` / the digits recipe / the default preset,
    with `config_overrides`. Raises `ValueError` (one line) for what cannot be built."""
    from .data import image_processor_for
    from .modeling_hf_vit import HfViTForImageClassification

    labels = dict(num_labels=len(id2label), id2label=dict(id2label), label2id={v: k for k, v in id2label.items()})
    chosen = [name for name, value in (("model_name_or_path", model_name_or_path), ("preset", preset),
                                       ("config_file", config_file)) if value]
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
        config = HfViTConfig(**{**settings, **overrides, **labels})
    elif preset:
        config = HfViTConfig.from_preset(preset, **overrides, **labels)
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
    import hf_vit  # noqa: F401  (registers the Auto classes)
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification

    from .convert.pretrained import pretrained_location
    from .data import image_processor_for

    try:  # timm, transformers ViT, DINOv2...: the cached hf_vit conversion (hf_vit.convert.pretrained)
        location = pretrained_location(name_or_path, cache_dir=cache_dir)
        config = AutoConfig.from_pretrained(location, cache_dir=cache_dir)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot load a model from {name_or_path}: {str(error).splitlines()[0]}") from None
    if config.model_type != "hf_vit":
        raise ValueError(f"{name_or_path} is a {config.model_type!r} model, not hf_vit (convert it first)")
    same_labels = dict(config.id2label or {}) == labels["id2label"]
    if not same_labels:
        logger.info("%s has other labels than the data: a new classification head is trained", name_or_path)
    model = AutoModelForImageClassification.from_pretrained(
        location, cache_dir=cache_dir, ignore_mismatched_sizes=not same_labels, **labels)
    try:
        processor = AutoImageProcessor.from_pretrained(location, cache_dir=cache_dir)
    except OSError:
        processor = image_processor_for(config.image_size)
    return model, processor


__all__ = ["DEFAULT_PRESET", "DIGITS_MODEL", "build_model", "check_overrides", "config_keys"]
