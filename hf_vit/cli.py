"""Shared by the training scripts: the data and model arguments, model construction, and the one-line error exit."""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path

from .configuration_hf_vit import PRESETS, HfViTConfig

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


class UserError(Exception):
    """A mistake in the command line or the inputs: printed as one line, exit status 2, no traceback."""


class RunFailure(Exception):
    """The run itself failed (e.g. the disk is full): printed as one line, exit status 1, no traceback."""


def fail(message: str, code: int = 2) -> "NoReturn":  # noqa: F821
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data (default: the embedded scikit-learn digits)")
    group.add_argument("--dataset_name", help="a datasets.load_dataset name (Hub id or local path)")
    group.add_argument("--dataset_config_name", help="the dataset's configuration name")
    group.add_argument("--train_dir", help="image folder (one sub-folder per class) for training")
    group.add_argument("--validation_dir", help="image folder for evaluation")
    group.add_argument("--image_column", help="image column (default: auto-detected)")
    group.add_argument("--label_column", help="label column (default: auto-detected)")
    group.add_argument("--validation_split", type=float, default=0.15, help="held-out fraction when there is no validation split")
    group.add_argument("--max_train_samples", type=int, help="truncate the training set (debugging)")
    group.add_argument("--max_eval_samples", type=int, help="truncate the evaluation set (debugging)")
    group.add_argument("--streaming", action="store_true", help="stream --dataset_name (needs --max_train_steps)")
    group.add_argument("--shuffle_buffer_size", type=int, default=10_000, help="shuffle buffer for --streaming")
    group.add_argument("--skip_bad_images", action="store_true", help="skip unreadable images (counted) instead of stopping")
    group.add_argument("--cache_dir", help="datasets/transformers cache folder")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model (default: a small ViT for the digits, else " + DEFAULT_PRESET + ")")
    group.add_argument("--model_name_or_path", help="fine-tune an hf_vit folder or Hub repo (a new head if the labels differ)")
    group.add_argument("--preset", help=f"train from scratch with a named size: {', '.join(PRESETS)}")
    group.add_argument("--config_name", help="train from scratch with an HfViTConfig JSON file")
    group.add_argument(
        "--config_overrides",
        help='override config values when training from scratch, e.g. "hidden_size=128,num_hidden_layers=6"',
    )


# set from the data (the labels) or by transformers itself: not for --config_overrides
_NOT_OVERRIDABLE = {"model_type", "architectures", "auto_map", "id2label", "label2id", "num_labels", "transformers_version"}


def _parse_overrides(text: str | None) -> dict:
    overrides = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        if "=" not in item:
            raise UserError(f"--config_overrides item {item!r} is not key=value")
        key, value = (s.strip() for s in item.split("=", 1))
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    known = {key for key in HfViTConfig().to_dict() if not key.startswith("_")} - _NOT_OVERRIDABLE
    for key in overrides:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(sorted(known))}"
            raise UserError(f"--config_overrides: unknown HfViTConfig key {key!r}; {hint}")
    return overrides


def check_config_overrides(text: str | None) -> None:
    """The early check the CLIs run before loading any data."""
    _parse_overrides(text)


def build_model(args, data, processor_factory):
    """(model, image_processor) for the arguments: fine-tune `--model_name_or_path`, or a fresh model from
    `--config_name` / `--preset` / the digits default, with the data's labels."""
    import hf_vit  # noqa: F401  (registers the Auto classes)
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification

    from .modeling_hf_vit import HfViTForImageClassification
    from .convert.pretrained import pretrained_location

    labels = dict(num_labels=data.num_labels, id2label=dict(data.id2label), label2id=dict(data.label2id))
    chosen = [flag for flag in ("model_name_or_path", "preset", "config_name") if getattr(args, flag)]
    if len(chosen) > 1:
        raise UserError(f"give one of --model_name_or_path, --preset, --config_name (got {', '.join('--' + c for c in chosen)})")
    if args.model_name_or_path:
        if args.config_overrides:
            raise UserError("--config_overrides applies to models trained from scratch, not --model_name_or_path")
        try:  # timm, transformers ViT, DINOv2...: the cached hf_vit conversion (hf_vit.convert.pretrained)
            name = pretrained_location(args.model_name_or_path, cache_dir=args.cache_dir)
            config = AutoConfig.from_pretrained(name, cache_dir=args.cache_dir)
        except (OSError, ValueError) as error:
            raise UserError(f"cannot load a model from {args.model_name_or_path}: {str(error).splitlines()[0]}") from None
        if config.model_type != "hf_vit":
            raise UserError(f"{args.model_name_or_path} is a {config.model_type!r} model, not hf_vit (convert it first)")
        same_labels = dict(config.id2label or {}) == {int(k): v for k, v in data.id2label.items()}
        model = AutoModelForImageClassification.from_pretrained(
            name, cache_dir=args.cache_dir, ignore_mismatched_sizes=not same_labels, **labels
        )
        try:
            processor = AutoImageProcessor.from_pretrained(name, cache_dir=args.cache_dir)
        except OSError:
            processor = processor_factory(config.image_size)
        return model, processor
    overrides = _parse_overrides(args.config_overrides)
    try:
        if args.config_name:
            path = Path(args.config_name)
            if not path.is_file():
                raise UserError(f"--config_name {args.config_name} is not a file")
            try:
                settings = json.loads(path.read_text())
            except json.JSONDecodeError as error:
                raise UserError(f"--config_name {args.config_name} is not valid JSON: {error}") from None
            settings = {k: v for k, v in settings.items() if k not in ("model_type", "architectures", "auto_map", "id2label", "label2id", "num_labels", "transformers_version")}
            config = HfViTConfig(**{**settings, **overrides, **labels})
        elif args.preset:
            config = HfViTConfig.from_preset(args.preset, **overrides, **labels)
        elif data.is_digits:
            config = HfViTConfig(**{**DIGITS_MODEL, **overrides, **labels})
        else:
            config = HfViTConfig.from_preset(DEFAULT_PRESET, **overrides, **labels)
        config.check_values()  # configs accept any values: a bad one is a one-line error here, not a traceback
    except (ValueError, TypeError) as error:
        raise UserError(str(error)) from None
    return HfViTForImageClassification(config), processor_factory(config.image_size)


def show_prediction(output_dir, data, max_tries: int = 20):
    """Load the saved folder with pipeline("image-classification") and classify one held-out image: the first readable
    one among the first `max_tries`. A demo only: it prints a note instead of failing the run."""
    from transformers import pipeline

    from hf_vit.data import decode_image

    for index, row in enumerate(data.eval):
        if index >= max_tries:
            break
        try:
            image = decode_image(row[data.image_column])
        except Exception:  # noqa: BLE001  an unreadable held-out image: try the next one
            continue
        truth = data.id2label.get(int(row[data.label_column]), row[data.label_column])
        try:
            classify = pipeline("image-classification", model=str(output_dir), device="cpu")
            top = classify(image, top_k=1)[0]
        except Exception as error:  # noqa: BLE001
            print(f"note: skipped the pipeline demo ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})")
            return
        print(f"pipeline prediction for a held-out {data.eval_split} image (true label {truth}): {top['label']} (score {top['score']:.3f})")
        return
    print(f"note: skipped the pipeline demo (none of the first {max_tries} held-out images could be read)")
