"""DINO training checkpoints and backbones (facebookresearch/dino, timm names) -> hf_vit."""

from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint_io import strip_wrapper_prefixes, unwrap_state_dict, weight_files_in
from .core import Conversion, LazyTensor, _lazy_pickle, _timm_forward, _unwrap_lazy, lazy_state_dict
from .timm import (
    _heads,
    _timm_reference,
    config_from_timm_layout,
    timm_layout_from_state_dict,
    timm_state_dict_to_hf_vit,
)

_TENSORS = (torch.Tensor, LazyTensor)


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, _TENSORS) for v in obj.values())


# DINO's own architectures (vision_transformer.py of facebookresearch/dino) all use 64-wide heads.
DINO_HEADS = {192: 3, 384: 6, 768: 12}


def dino_backbone_state_dict(obj, path, checkpoint_key: str = "teacher") -> tuple[dict, list[str]]:
    """The backbone weights of a DINO checkpoint: a training checkpoint ({"teacher": ..., "student": ...} with
    `module.` / `backbone.` prefixes; the DINO projection head is dropped) or plain backbone weights. Tensors may be
    `LazyTensor`s (read when converted)."""
    if _is_state_dict(obj):
        state_dict = obj
    elif isinstance(obj, dict) and isinstance(obj.get(checkpoint_key), dict):
        state_dict = obj[checkpoint_key]
    elif isinstance(obj, dict) and any(isinstance(obj.get(k), dict) for k in ("state_dict", "model")):
        state_dict = _unwrap_lazy(obj, path, unwrap_state_dict)
    else:
        keys = ", ".join(sorted(map(str, obj))[:8]) if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(
            f"{path} has no {checkpoint_key!r} entry: DINO training checkpoints hold 'teacher' and 'student' dicts "
            f"(choose with `checkpoint_key`), plain backbone weights are a dict of tensors; found: {keys}"
        )
    state_dict = strip_wrapper_prefixes({k: v for k, v in state_dict.items() if isinstance(v, _TENSORS)})
    dropped = []
    if any(key.startswith("backbone.") for key in state_dict):
        dropped = [key for key in state_dict if not key.startswith("backbone.")]
        state_dict = {key[len("backbone.") :]: v for key, v in state_dict.items() if key.startswith("backbone.")}
    return state_dict, dropped


def convert_dino_file(
    path, checkpoint_key: str = "teacher", num_heads: int | None = None, preset: str | None = None
) -> Conversion:
    path = Path(path)
    files = weight_files_in(path) if path.is_dir() else [path]
    obj = lazy_state_dict(files[0]) if files[0].suffix == ".safetensors" else _lazy_pickle(files[0])
    state_dict, dropped = dino_backbone_state_dict(obj, files[0], checkpoint_key)
    converted = timm_state_dict_to_hf_vit(state_dict)  # unknown layouts fail here, naming the unmatched keys
    layout = timm_layout_from_state_dict(state_dict)
    heads = _heads(layout["embed_dim"], num_heads, preset) or DINO_HEADS.get(layout["embed_dim"])
    if heads is None:
        raise ValueError(
            f"width {layout['embed_dim']} is not one of DINO's ViTs (tiny 192, small 384, base 768): pass `num_heads`"
        )
    config = config_from_timm_layout(layout, heads, interpolate_antialias=False)
    height = layout["img_size"]
    note = (
        f"Outputs match DINO's at the native size ({height}×{height}). At other sizes hf_vit resizes the position "
        "embeddings to the target grid (transformers' convention, no antialiasing), while DINO's original code "
        "resizes by a scale factor with a +0.1 offset, so resized outputs differ slightly."
    )
    kept = "" if not dropped else f" The DINO projection head ({len(dropped)} tensors) was dropped."
    return Conversion(
        config=config,
        weights=converted,
        source="DINO",
        details=f"Converted from a DINO ViT backbone ({layout['embed_dim']} wide, depth {layout['depth']}, "
        f"{heads} heads, patch {layout['patch_size']}; checkpoint entry {checkpoint_key!r} "
        f"if a training checkpoint).{kept} {note}",
        reference=lambda: _timm_forward(_timm_reference(layout, heads, state_dict), layout["num_classes"] > 0),
        reference_name="timm VisionTransformer in DINO's shape",
        notes=[note],
    )
