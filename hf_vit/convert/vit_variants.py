"""transformers' plain-ViT families beyond `vit` -> hf_vit: MAE (`vit_mae`: the encoder; the pre-training decoder left
out), MSN (`vit_msn`), I-JEPA (`ijepa`: no [CLS], mean pooling over the normed patch tokens) and distilled DeiT (`deit`:
the distillation token, and with `DeiTForImageClassificationWithTeacher` both heads, averaged). Their weights use
transformers ViT's names (v4 or v5) under their own prefix, so the ViT converter's rules do the renaming.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from ..checkpoint_io import strip_wrapper_prefixes
from ..configuration_hf_vit import HfViTConfig
from ..fileio import read_json_object
from .core import IMAGENET_MEAN, IMAGENET_STD, Conversion, _source_processor, lazy_state_dict
from .transformers_vit import config_from_transformers, transformers_state_dict_to_hf_vit

logger = logging.getLogger(__name__)

VIT_VARIANT_MODEL_TYPES = ("vit_mae", "vit_msn", "ijepa", "deit")
_NAMES = {"vit_mae": "MAE", "vit_msn": "MSN", "ijepa": "I-JEPA", "deit": "distilled DeiT"}
_MAE_DECODER = re.compile(r"^decoder\.")


def vit_variant_state_dict_to_hf_vit(state_dict: dict[str, torch.Tensor], model_type: str) -> dict[str, torch.Tensor]:
    """MAE / MSN / I-JEPA / DeiT weights (transformers ViT names under `vit.`, `deit.` or no prefix) -> hf_vit."""
    if model_type == "deit":
        state_dict = {re.sub(r"^deit\.", "vit.", key): value for key, value in state_dict.items()}
        if "classifier.weight" in state_dict:
            raise ValueError(
                "cannot convert a DeiTForImageClassification: its head reads [CLS] only while the model has a "
                "distillation token; convert DeiTForImageClassificationWithTeacher (both heads) or DeiTModel"
            )
    dropped = [key for key in state_dict if _MAE_DECODER.match(key)] if model_type == "vit_mae" else []
    if dropped:
        logger.info("MAE: the pre-training decoder (%d tensors) is left out; the encoder is converted", len(dropped))
    extra, rest = {}, {}  # the distilled DeiT's names that transformers' ViT has not; the rest are ViT's
    for key, value in state_dict.items():
        bare = key.removeprefix("vit.")
        if key in dropped:
            continue
        if bare == "embeddings.distillation_token":
            extra["vit.embeddings.distillation_token"] = value
        elif bare.startswith("cls_classifier."):
            extra["classifier." + bare.removeprefix("cls_classifier.")] = value
        elif bare.startswith("distillation_classifier."):
            extra[bare] = value
        else:
            rest[key] = value
    return {**transformers_state_dict_to_hf_vit(rest), **extra}


def config_from_vit_variant(source_config, converted: dict[str, torch.Tensor]) -> HfViTConfig:
    """The HfViTConfig of a transformers ViTMAE / ViTMSN / IJepa / DeiT config."""
    model_type = source_config.model_type
    fields = {}
    if model_type == "ijepa":  # no [CLS]: the patch tokens, normed, averaged (IJepaForImageClassification)
        fields.update(class_token=False, pooling="mean", final_norm="tokens")
    if model_type == "deit":
        fields.update(distillation_token=True)
    if "vit.embeddings.mask_token" in converted:
        fields.update(use_mask_token=True)
    return config_from_transformers(source_config, **fields)


def convert_vit_variant_folder(path) -> Conversion:
    """A transformers ViTMAE (model or pre-training) / ViTMSN / IJepa / DeiT (distilled) folder -> hf_vit."""
    from transformers import AutoConfig

    path = Path(path)
    model_type = read_json_object(path / "config.json").get("model_type")
    if model_type not in VIT_VARIANT_MODEL_TYPES:
        raise ValueError(
            f"{path / 'config.json'} has model_type {model_type!r}; "
            f"expected one of {', '.join(VIT_VARIANT_MODEL_TYPES)}"
        )
    source_config = AutoConfig.from_pretrained(path)
    converted = vit_variant_state_dict_to_hf_vit(strip_wrapper_prefixes(lazy_state_dict(path)), model_type)
    config = config_from_vit_variant(source_config, converted)
    processor = _source_processor(path)
    has_head = "classifier.weight" in converted
    name = _NAMES[model_type]

    def reference():
        import transformers

        if model_type == "vit_mae":  # the encoder without masking: mask_ratio 0 and the identity shuffle
            source = transformers.ViTMAEModel.from_pretrained(path, mask_ratio=0.0, dtype=torch.float32).eval()

            def forward(x):
                num_patches = (x.shape[-2] // source.config.patch_size) * (x.shape[-1] // source.config.patch_size)
                noise = torch.arange(num_patches, dtype=torch.float32).expand(x.shape[0], -1)
                return {"last_hidden_state": source(x, noise=noise, interpolate_pos_encoding=True).last_hidden_state}

            return forward
        if has_head:
            source = transformers.AutoModelForImageClassification.from_pretrained(path, dtype=torch.float32).eval()
            return lambda x: {"logits": source(x, interpolate_pos_encoding=True).logits}
        source = transformers.AutoModel.from_pretrained(path, dtype=torch.float32).eval()
        return lambda x: {"last_hidden_state": source(x, interpolate_pos_encoding=True).last_hidden_state}

    return Conversion(
        config=config,
        weights=converted,
        source=f"transformers {name}",
        details=f"Converted from a transformers {name} checkpoint with hf_vit's converter (q/k/v fused into one qkv"
        + ("; the pre-training decoder left out" if model_type == "vit_mae" else "")
        + ("; both heads kept, the prediction is their mean" if model_type == "deit" and has_head else "")
        + "). Position embeddings are resized without antialiasing, as transformers does.",
        image_mean=tuple(processor.image_mean) if processor else IMAGENET_MEAN,
        image_std=tuple(processor.image_std) if processor else IMAGENET_STD,
        resample=processor.resample if processor else 3,
        reference=reference,
        reference_name="transformers",
        image_processor=processor,
    )
