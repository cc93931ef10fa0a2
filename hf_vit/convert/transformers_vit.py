"""transformers ViT (`model_type: vit`: google/vit-*, facebook/dino-vit*, non-distilled facebook/deit-*) -> hf_vit,
v4 or v5 weight names; `ViTForMaskedImageModeling` (mask token and SimMIM decoder) -> `HfViTForMaskedImageModeling`."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from ..checkpoint_io import strip_wrapper_prefixes
from ..configuration_hf_vit import HfViTConfig
from ..fileio import read_json_object
from ..modeling_hf_vit import HfViTForImageClassification, HfViTForMaskedImageModeling, HfViTModel
from .core import (
    GOOGLE_MEAN,
    GOOGLE_STD,
    Conversion,
    _build,
    _masked_image_modeling_outputs,
    _rename,
    _source_processor,
    cat,
    lazy_state_dict,
)
from .dinov2 import DINOV2_MODEL_TYPES, convert_dinov2_folder
from .dinov3 import DINOV3_MODEL_TYPE, convert_dinov3_folder

# ---------------------------------------------------------------------------------------------------------------
# transformers ViT
# ---------------------------------------------------------------------------------------------------------------
TRANSFORMERS_TO_HF_VIT = [
    (r"^(vit\.)?embeddings\.cls_token$", "vit.embeddings.cls_token"),
    (r"^(vit\.)?embeddings\.position_embeddings$", "vit.embeddings.position_embeddings"),
    (r"^(vit\.)?embeddings\.mask_token$", "vit.embeddings.mask_token"),  # (1, 1, D) -> hf_vit's (1, D) below
    (r"^(vit\.)?embeddings\.patch_embeddings\.projection\.", "vit.embeddings.patch_embeddings.projection."),
    # transformers v5 names
    (r"^(vit\.)?layers\.(\d+)\.layernorm_before\.", r"vit.encoder.layers.\2.norm1."),
    (r"^(vit\.)?layers\.(\d+)\.attention\.o_proj\.", r"vit.encoder.layers.\2.attention.proj."),
    (r"^(vit\.)?layers\.(\d+)\.layernorm_after\.", r"vit.encoder.layers.\2.norm2."),
    (r"^(vit\.)?layers\.(\d+)\.mlp\.fc1\.", r"vit.encoder.layers.\2.mlp.fc1."),
    (r"^(vit\.)?layers\.(\d+)\.mlp\.fc2\.", r"vit.encoder.layers.\2.mlp.fc2."),
    # transformers v4 names (checkpoints on the Hub, e.g. google/vit-base-patch16-224)
    (r"^(vit\.)?encoder\.layer\.(\d+)\.layernorm_before\.", r"vit.encoder.layers.\2.norm1."),
    (r"^(vit\.)?encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"vit.encoder.layers.\2.attention.proj."),
    (r"^(vit\.)?encoder\.layer\.(\d+)\.layernorm_after\.", r"vit.encoder.layers.\2.norm2."),
    (r"^(vit\.)?encoder\.layer\.(\d+)\.intermediate\.dense\.", r"vit.encoder.layers.\2.mlp.fc1."),
    (r"^(vit\.)?encoder\.layer\.(\d+)\.output\.dense\.", r"vit.encoder.layers.\2.mlp.fc2."),
    (r"^(vit\.)?layernorm\.", "vit.layernorm."),
    (r"^classifier\.", "classifier."),
    (r"^decoder\.0\.", "decoder.0."),  # ViTForMaskedImageModeling: the 1x1 conv before PixelShuffle
]


# q/k/v projections, v5 (`layers.N.attention.q_proj`) and v4 (`encoder.layer.N.attention.attention.query`)
_QKV_PATTERN = re.compile(
    r"^(vit\.)?(?:layers\.(\d+)\.attention\.([qkv])_proj|encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value))"
    r"\.(weight|bias)$"
)


# The part of transformers' ViT with no hf_vit counterpart, dropped on purpose: the tanh pooler of `ViTModel` (unused
# by the classifier).
_TRANSFORMERS_DROPPED = re.compile(r"^(vit\.)?pooler\.")


TRANSFORMERS_EXPECTED = (
    "[vit.]embeddings.{cls_token,position_embeddings,[mask_token],patch_embeddings.projection.*}, "
    "[vit.]layers.N.{layernorm_before,attention.{q,k,v,o}_proj,layernorm_after,mlp.fc1,mlp.fc2}.* (v5) or "
    "[vit.]encoder.layer.N.{attention.attention.{query,key,value},attention.output.dense,intermediate.dense,"
    "output.dense,...}.* (v4), [vit.]layernorm.*, [classifier.* | decoder.0.*]"
)


def transformers_state_dict_to_hf_vit(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers ViT names (v5 or v4) -> hf_vit; the separate q/k/v projections are fused into one qkv
    (q, k, v order)."""
    qkv_parts: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    rest = {}
    for key, tensor in state_dict.items():
        if _TRANSFORMERS_DROPPED.match(key):
            continue
        match = _QKV_PATTERN.match(key)
        if match:
            layer = match.group(2) or match.group(4)
            part = match.group(3) or match.group(5)[0]  # "query" -> "q"
            qkv_parts.setdefault((layer, match.group(6)), {})[part] = tensor
        else:
            rest[key] = tensor
    converted = _rename(rest, TRANSFORMERS_TO_HF_VIT, "transformers ViT", TRANSFORMERS_EXPECTED)
    for (layer, kind), parts in qkv_parts.items():
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"layer {layer} has {kind} tensors for {sorted(parts)} only; expected q, k and v")
        converted[f"vit.encoder.layers.{layer}.attention.qkv.{kind}"] = cat([parts[n] for n in "qkv"])
    if "vit.embeddings.mask_token" in converted:  # transformers' ViT keeps it as (1, 1, D), DINOv2 and hf_vit (1, D)
        converted["vit.embeddings.mask_token"] = converted["vit.embeddings.mask_token"].reshape(1, -1)
    return converted


def masked_image_modeling_fields(vit_config, converted: dict[str, torch.Tensor]) -> dict:
    """Config fields the converted weights imply: the mask token kept (`use_mask_token`), and for a
    `ViTForMaskedImageModeling` decoder the source's `encoder_stride` (otherwise hf_vit's default, the patch size)."""
    fields = {}
    if "vit.embeddings.mask_token" in converted:
        fields["use_mask_token"] = True
    if "decoder.0.weight" in converted:
        fields["encoder_stride"] = vit_config.encoder_stride
    return fields


def config_from_transformers(vit_config, **overrides) -> HfViTConfig:
    """The HfViTConfig of a transformers `ViTConfig`."""
    patch_size = vit_config.patch_size
    if not isinstance(patch_size, int):
        if patch_size[0] != patch_size[1]:
            raise ValueError(f"hf_vit needs square patches, the transformers model has {patch_size}")
        patch_size = patch_size[0]
    fields = dict(
        image_size=vit_config.image_size if isinstance(vit_config.image_size, int) else list(vit_config.image_size),
        patch_size=patch_size,
        num_channels=vit_config.num_channels,
        hidden_size=vit_config.hidden_size,
        num_hidden_layers=vit_config.num_hidden_layers,
        num_attention_heads=vit_config.num_attention_heads,
        intermediate_size=vit_config.intermediate_size,
        hidden_act=vit_config.hidden_act,
        hidden_dropout_prob=vit_config.hidden_dropout_prob,
        attention_probs_dropout_prob=vit_config.attention_probs_dropout_prob,
        layer_norm_eps=vit_config.layer_norm_eps,
        qkv_bias=vit_config.qkv_bias,
        initializer_range=vit_config.initializer_range,
        interpolate_antialias=False,  # transformers' interpolate_pos_encoding does not antialias
        id2label=dict(vit_config.id2label or {}) or None,
        label2id=dict(vit_config.label2id or {}) or None,
        problem_type=vit_config.problem_type,
    )
    fields.update(overrides)
    return HfViTConfig(**fields)


def from_transformers(vit_model: nn.Module) -> HfViTModel | HfViTForImageClassification | HfViTForMaskedImageModeling:
    """An hf_vit model with the weights of a transformers `ViTModel` / `ViTForImageClassification` /
    `ViTForMaskedImageModeling` (the mask token kept where the source has one)."""
    if type(vit_model).__name__ not in ("ViTModel", "ViTForImageClassification", "ViTForMaskedImageModeling"):
        raise TypeError(
            "expected a transformers ViTModel, ViTForImageClassification or ViTForMaskedImageModeling, got "
            f"{type(vit_model).__name__}"
        )
    converted = transformers_state_dict_to_hf_vit(vit_model.state_dict())
    config = config_from_transformers(vit_model.config, **masked_image_modeling_fields(vit_model.config, converted))
    return _build(config, converted)


def convert_transformers_folder(path) -> Conversion:
    """A transformers `ViTModel` / `ViTForImageClassification` / `ViTForMaskedImageModeling` folder (v4 or v5 key
    names) -> hf_vit."""
    path = Path(path)
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ValueError(f"`source`=transformers expects a folder with config.json and the weights; {path} is not one")
    model_type = read_json_object(path / "config.json").get("model_type")
    if model_type in DINOV2_MODEL_TYPES:
        return convert_dinov2_folder(path)
    from .image_text import CLIP_MODEL_TYPES, SIGLIP_MODEL_TYPES, convert_image_text_folder
    from .vit_variants import VIT_VARIANT_MODEL_TYPES, convert_vit_variant_folder

    if model_type == DINOV3_MODEL_TYPE:
        return convert_dinov3_folder(path)
    if model_type in VIT_VARIANT_MODEL_TYPES:
        return convert_vit_variant_folder(path)
    if model_type in SIGLIP_MODEL_TYPES + CLIP_MODEL_TYPES:
        return convert_image_text_folder(path)
    if model_type != "vit":
        raise ValueError(
            f"{path / 'config.json'} has model_type {model_type!r}; `source`=transformers converts 'vit', "
            f"'dinov2', 'dinov2_with_registers', {', '.join(repr(t) for t in VIT_VARIANT_MODEL_TYPES)}, DINOv3, "
            "SigLIP and CLIP models"
        )
    from transformers import ViTConfig

    vit_config = ViTConfig.from_pretrained(path)
    weights = transformers_state_dict_to_hf_vit(strip_wrapper_prefixes(lazy_state_dict(path)))
    config = config_from_transformers(vit_config, **masked_image_modeling_fields(vit_config, weights))
    processor = _source_processor(path)  # the folder's own, when it has one; else Google's ViT preprocessing
    masked_image_modeling = "decoder.0.weight" in weights
    has_head = "classifier.weight" in weights and not masked_image_modeling

    def reference():
        from transformers import ViTForImageClassification, ViTForMaskedImageModeling, ViTModel

        if masked_image_modeling:  # the same outputs, on the same fixed mask, as core._outputs gives for hf_vit
            source = ViTForMaskedImageModeling.from_pretrained(path, dtype=torch.float32).eval()
            return lambda x: _masked_image_modeling_outputs(source, x)
        source = (
            ViTForImageClassification.from_pretrained(path, dtype=torch.float32)
            if has_head
            else ViTModel.from_pretrained(path, add_pooling_layer=False, dtype=torch.float32)
        ).eval()
        if has_head:
            return lambda x: {"logits": source(x).logits}
        return lambda x: {"last_hidden_state": source(x).last_hidden_state}

    return Conversion(
        config=config,
        weights=weights,
        source="transformers ViT",
        details="Converted from a transformers ViT checkpoint with hf_vit's converter (q/k/v fused into one qkv"
        + ("; the mask token and SimMIM decoder kept" if masked_image_modeling else "")
        + "). Position embeddings are resized without antialiasing, as transformers does.",
        image_mean=tuple(processor.image_mean) if processor else GOOGLE_MEAN,
        image_std=tuple(processor.image_std) if processor else GOOGLE_STD,
        resample=processor.resample if processor else 2,
        reference=reference,
        reference_name="transformers",
        image_processor=processor,
    )
