"""transformers SigLIP and CLIP image towers -> hf_vit, from the vision model's folder (`siglip_vision_model`,
`clip_vision_model`) or the whole image-text model's (`siglip`, `clip`: the vision tower is taken, the text tower and
the projections left out).

SigLIP: no [CLS], the final LayerNorm (`post_layernorm`) on every token, the MAP attention-pooling head (`head`) as
`pooling="map"`; SigLIP's preprocessing (resize to the model's size, no crop, mean = std = 0.5). SigLIP 2's
fixed-resolution checkpoints are `siglip` models and convert the same way; its NaFlex models (`siglip2`) take patch
sequences of any aspect ratio instead of images and are refused.

CLIP: [CLS] with a position, a patch projection without bias, a LayerNorm before the blocks (`pre_layrnorm`), QuickGELU,
and the final LayerNorm (`post_layernorm`) on the pooled [CLS] only (`final_norm="pooled"`); CLIP's preprocessing.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from ..checkpoint_io import strip_wrapper_prefixes
from ..configuration_hf_vit import HfViTConfig
from ..fileio import read_json_object
from .core import Conversion, _rename, _source_processor, _transformers_forward, cat, lazy_state_dict

logger = logging.getLogger(__name__)

SIGLIP_MODEL_TYPES = ("siglip", "siglip_vision_model")
CLIP_MODEL_TYPES = ("clip", "clip_vision_model")
IMAGE_TEXT_MODEL_TYPES = ("siglip", "clip")  # the whole image-text model: its vision tower is converted

# the image tower's names (after the `vision_model.` prefix) -> hf_vit
_TOWER_TO_HF_VIT = [
    (r"^embeddings\.class_embedding$", "vit.embeddings.cls_token"),  # (D,) -> (1, 1, D) below
    (r"^embeddings\.patch_embedding\.", "vit.embeddings.patch_embeddings.projection."),
    (r"^embeddings\.position_embedding\.weight$", "vit.embeddings.position_embeddings"),  # (N, D) -> (1, N, D)
    (r"^pre_layrnorm\.", "vit.pre_layernorm."),
    (r"^encoder\.layers\.(\d+)\.layer_norm1\.", r"vit.encoder.layers.\1.norm1."),
    (r"^encoder\.layers\.(\d+)\.self_attn\.out_proj\.", r"vit.encoder.layers.\1.attention.proj."),
    (r"^encoder\.layers\.(\d+)\.layer_norm2\.", r"vit.encoder.layers.\1.norm2."),
    (r"^encoder\.layers\.(\d+)\.mlp\.(fc1|fc2)\.", r"vit.encoder.layers.\1.mlp.\2."),
    (r"^post_layernorm\.", "vit.layernorm."),
    (r"^head\.probe$", "vit.attention_pool.probe"),
    (r"^head\.attention\.out_proj\.", "vit.attention_pool.proj."),
    (r"^head\.layernorm\.", "vit.attention_pool.norm."),
    (r"^head\.mlp\.(fc1|fc2)\.", r"vit.attention_pool.mlp.\1."),
]
_TOWER_QKV = re.compile(r"^encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)$")
_TOWER_POOL_IN_PROJ = re.compile(r"^head\.attention\.in_proj_(weight|bias)$")
_TOWER_EXPECTED = (
    "[vision_model.]embeddings.{[class_embedding],patch_embedding,position_embedding}.*, [pre_layrnorm.*], "
    "encoder.layers.N.{layer_norm1,self_attn.{q,k,v,out}_proj,layer_norm2,mlp.fc1,mlp.fc2}.*, post_layernorm.*, "
    "[head.{probe,attention,layernorm,mlp}.*]"
)
# the parts of a whole image-text model that are not the image tower: left out
_NOT_THE_IMAGE_TOWER = re.compile(r"^(text_model\.|text_projection\.|visual_projection\.|logit_scale$|logit_bias$)")


def image_tower_state_dict(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The image tower's weights of a SigLIP/CLIP state dict (vision model or whole model), without the
    `vision_model.` prefix, and the names of the top-level parts left out (text tower, projections, logit scale)."""
    if any(key.startswith("classifier.") for key in state_dict):
        raise ValueError(
            "cannot convert a SigLIP/CLIP image classifier (SiglipForImageClassification / CLIPForImageClassification "
            "pool differently from their vision models); convert the vision model and fine-tune a new head"
        )
    tower, left_out = {}, set()
    for key, tensor in state_dict.items():
        if _NOT_THE_IMAGE_TOWER.match(key):
            left_out.add(key.split(".")[0])
            continue
        tower[key.removeprefix("vision_model.")] = tensor
    return tower, sorted(left_out)


def image_tower_to_hf_vit(tower: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SigLIP/CLIP image-tower names -> hf_vit: q/k/v fused into one qkv; the pooling head's packed `in_proj` split into
    its query (`q`) and key/value (`kv`) projections."""
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    pool_in_proj, rest = {}, {}
    for key, tensor in tower.items():
        if match := _TOWER_QKV.match(key):
            layer, part, kind = match.groups()
            qkv.setdefault((layer, kind), {})[part] = tensor
        elif match := _TOWER_POOL_IN_PROJ.match(key):
            pool_in_proj[match.group(1)] = tensor
        else:
            rest[key] = tensor
    converted = _rename(rest, _TOWER_TO_HF_VIT, "SigLIP/CLIP vision", _TOWER_EXPECTED)
    for (layer, kind), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"layer {layer} has {kind} tensors for {sorted(parts)} only; expected q, k and v")
        converted[f"vit.encoder.layers.{layer}.attention.qkv.{kind}"] = cat([parts[n] for n in "qkv"])
    for kind, tensor in pool_in_proj.items():  # (3D, ...) = query, key, value
        width = tensor.shape[0] // 3
        converted[f"vit.attention_pool.q.{kind}"] = tensor[:width]
        converted[f"vit.attention_pool.kv.{kind}"] = tensor[width:]
    if "vit.embeddings.position_embeddings" not in converted:
        raise ValueError(
            "the weights hold no SigLIP/CLIP image tower (no vision_model.embeddings.position_embedding.weight); "
            f"expected {_TOWER_EXPECTED}"
        )
    if "vit.embeddings.cls_token" in converted:
        converted["vit.embeddings.cls_token"] = converted["vit.embeddings.cls_token"].reshape(1, 1, -1)
    positions = converted["vit.embeddings.position_embeddings"]
    converted["vit.embeddings.position_embeddings"] = positions.reshape(1, *positions.shape)
    return converted


def _vision_config(config):
    """The vision config of a SigLIP/CLIP config (whole model or vision model)."""
    return getattr(config, "vision_config", None) or config


def _vision_config_of_folder(path: Path, siglip: bool):
    """The vision config of a SigLIP/CLIP folder, built alone (transformers' vision config class reads the whole
    model's `vision_config`): a text config that transformers refuses does not stop an intact image tower."""
    from huggingface_hub.errors import StrictDataclassError
    from transformers import CLIPVisionConfig, SiglipVisionConfig

    try:
        return (SiglipVisionConfig if siglip else CLIPVisionConfig).from_pretrained(path)
    except (ValueError, TypeError, StrictDataclassError) as error:  # transformers' config validation
        first = str(error).strip().splitlines()
        raise ValueError(
            f"{path / 'config.json'}: the vision config is refused by transformers: {' '.join(first[-1:])}"
        ) from None


def config_from_image_tower(vision_config, *, siglip: bool, converted: dict[str, torch.Tensor]) -> HfViTConfig:
    """The HfViTConfig of a transformers `SiglipVisionConfig` / `CLIPVisionConfig`."""
    patch_size, image_size = vision_config.patch_size, vision_config.image_size
    has_head = "vit.attention_pool.probe" in converted
    common = dict(
        image_size=image_size if isinstance(image_size, int) else list(image_size),
        patch_size=patch_size,
        num_channels=vision_config.num_channels,
        hidden_size=vision_config.hidden_size,
        num_hidden_layers=vision_config.num_hidden_layers,
        num_attention_heads=vision_config.num_attention_heads,
        intermediate_size=vision_config.intermediate_size,
        hidden_act=vision_config.hidden_act,
        attention_probs_dropout_prob=vision_config.attention_dropout,
        layer_norm_eps=vision_config.layer_norm_eps,
        qkv_bias=True,
        interpolate_antialias=False,  # transformers' interpolate_pos_encoding does not antialias
    )
    if siglip:
        return HfViTConfig(
            **common,
            class_token=False,
            pooling="map" if has_head else "mean",  # a SigLIP tower without its head (vision_use_head=False)
            final_norm="tokens",  # post_layernorm on every token, then the head
            patch_embedding_bias=True,
        )
    return HfViTConfig(
        **common,
        pooling="cls",
        final_norm="pooled",  # post_layernorm on the pooled [CLS] only; the tokens stay un-normed
        pre_norm=True,
        patch_embedding_bias=False,
        cls_position_embedding=True,
    )


def _default_processor(siglip: bool, image_size):
    from transformers import CLIPImageProcessor, SiglipImageProcessor

    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    if siglip:  # resize to the model's size, no crop, mean = std = 0.5, bicubic
        return SiglipImageProcessor(size={"height": height, "width": width})
    return CLIPImageProcessor(size={"shortest_edge": min(height, width)}, crop_size={"height": height, "width": width})


def convert_image_text_folder(path) -> Conversion:
    """A transformers SigLIP / CLIP folder (vision model, or the whole image-text model: its vision tower) -> an hf_vit
    backbone, with the source's image processor (its own, or SigLIP's/CLIP's defaults)."""
    path = Path(path)
    model_type = read_json_object(path / "config.json").get("model_type")
    if model_type not in SIGLIP_MODEL_TYPES + CLIP_MODEL_TYPES:
        raise ValueError(
            f"{path / 'config.json'} has model_type {model_type!r}; expected one of "
            f"{', '.join(SIGLIP_MODEL_TYPES + CLIP_MODEL_TYPES)}"
        )
    siglip = model_type in SIGLIP_MODEL_TYPES
    family = "SigLIP" if siglip else "CLIP"
    vision_config = _vision_config_of_folder(path, siglip)
    tower, left_out = image_tower_state_dict(strip_wrapper_prefixes(lazy_state_dict(path)))
    if left_out:
        logger.info(
            "%s is a whole %s image-text model: converting its vision tower, leaving out %s",
            path,
            family,
            ", ".join(left_out),
        )
    converted = image_tower_to_hf_vit(tower)
    config = config_from_image_tower(vision_config, siglip=siglip, converted=converted)
    processor = _source_processor(path) or _default_processor(siglip, vision_config.image_size)

    def reference():
        from transformers import CLIPVisionModel, SiglipVisionModel

        source = (SiglipVisionModel if siglip else CLIPVisionModel).from_pretrained(path, dtype=torch.float32).eval()
        return _transformers_forward(source, interpolate_pos_encoding=True)

    details = (
        f"Converted from a transformers {family} "
        + (f"image-text model's vision tower ({', '.join(left_out)} left out)" if left_out else "vision model")
        + " with hf_vit's converter (q/k/v fused into one qkv"
        + ('; the attention-pooling head kept as `pooling="map"`' if siglip else "")
        + "). Position embeddings are resized without antialiasing, as transformers does."
    )
    return Conversion(
        config=config,
        weights=converted,
        source=f"transformers {family}",
        details=details,
        image_mean=tuple(processor.image_mean),
        image_std=tuple(processor.image_std),
        resample=processor.resample,
        reference=reference,
        reference_name="transformers",
        image_processor=processor,
    )
