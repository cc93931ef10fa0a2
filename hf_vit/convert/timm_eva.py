"""timm `Eva` models -> hf_vit: EVA-02 (`eva02_*`: RoPE in EVA-02's convention with a learned position table, SwiGLU
with its inner LayerNorm) and timm's DINOv3 ports (`vit_*_dinov3`: RoPE in DINOv3's convention, no position table,
registers, LayerScale); from model objects (`from_timm_eva`) and timm folders (`save_for_hf` / `push_to_hf_hub`
layout, built through timm's own registry, so timm must be installed)."""

from __future__ import annotations

import re

import torch
from torch import nn

from ..configuration_hf_vit import HfViTConfig
from ..modeling_hf_vit import HfViTForImageClassification, HfViTModel
from .core import _build, _mean_abs, _name_rule, _rename, cat

_EVA_HF_VIT_NAMES = [
    ("patch_embed.proj.", "vit.embeddings.patch_embeddings.projection."),
    ("cls_token", "vit.embeddings.cls_token"),
    ("reg_token", "vit.embeddings.register_tokens"),
    ("pos_embed", "vit.embeddings.position_embeddings"),
    ("norm_pre.", "vit.pre_layernorm."),
    ("blocks.{i}.norm1.", "vit.encoder.layers.{i}.norm1."),
    ("blocks.{i}.attn.proj.", "vit.encoder.layers.{i}.attention.proj."),
    ("blocks.{i}.attn.q_norm.", "vit.encoder.layers.{i}.attention.q_norm."),
    ("blocks.{i}.attn.k_norm.", "vit.encoder.layers.{i}.attention.k_norm."),
    ("blocks.{i}.gamma_1", "vit.encoder.layers.{i}.layer_scale1.lambda1"),
    ("blocks.{i}.norm2.", "vit.encoder.layers.{i}.norm2."),
    ("blocks.{i}.mlp.fc1.", "vit.encoder.layers.{i}.mlp.fc1."),
    ("blocks.{i}.mlp.norm.", "vit.encoder.layers.{i}.mlp.norm."),
    ("blocks.{i}.mlp.fc2.", "vit.encoder.layers.{i}.mlp.fc2."),
    ("blocks.{i}.gamma_2", "vit.encoder.layers.{i}.layer_scale2.lambda1"),
    ("norm.", "vit.layernorm."),
    ("fc_norm.", "vit.layernorm."),  # average pooling: the norm after pooling (only one of the two exists)
    ("head.", "classifier."),
]
EVA_TO_HF_VIT = [_name_rule(timm, ours) for timm, ours in _EVA_HF_VIT_NAMES]

# the attention's input projection (fused qkv with separate q/v biases, or q/k/v projections) and SwiGLU's two halves
_EVA_QKV = re.compile(r"^blocks\.(\d+)\.attn\.(?:qkv\.weight|q_bias|v_bias|[qkv]_proj\.(?:weight|bias))$")
_EVA_SWIGLU = re.compile(r"^blocks\.(\d+)\.mlp\.fc1_([gx])\.(weight|bias)$")

EVA_EXPECTED = (
    "patch_embed.proj.*, cls_token, [reg_token], [pos_embed], blocks.N.{norm1,attn.{qkv + q_bias/v_bias | "
    "q_proj,k_proj,v_proj},[attn.q_norm,attn.k_norm],attn.proj,[gamma_1],norm2,mlp.{fc1 | fc1_g,fc1_x},[mlp.norm],"
    "mlp.fc2,[gamma_2]}.*, norm.* or fc_norm.*, [head.*]"
)


def _is_layernorm(module) -> bool:
    return isinstance(module, nn.LayerNorm)


def _is_identity(module) -> bool:
    return module is None or isinstance(module, nn.Identity)


def _rope_fields(eva_model: nn.Module, unsupported: list[str]) -> dict:
    """The RoPE options of an Eva model (or the reasons they cannot be represented)."""
    rope = getattr(eva_model, "rope", None)
    if rope is None:
        return {}
    kind = type(rope).__name__
    augmentations = dict(
        rope_shift=getattr(rope, "shift_coords", None),
        rope_jitter=getattr(rope, "jitter_coords", None),
        rope_rescale=getattr(rope, "rescale_coords", None),
    )
    if getattr(rope, "grid_offset", 0.0) or getattr(rope, "grid_indexing", "ij") != "ij":
        unsupported.append("a RoPE grid offset or 'xy' grid indexing")
    if kind == "RotaryEmbeddingDinoV3":
        if rope.min_period is not None or rope.max_period is not None or rope.normalize_coords != "separate":
            unsupported.append("DINOv3 RoPE with min/max periods or non-separate coordinate normalisation")
        if not rope.rotate_half:
            unsupported.append("DINOv3 RoPE in the interleaved layout (hf_vit's DINOv3 RoPE rotates halves)")
        return dict(rope_type="dinov3", rope_theta=float(rope.temperature), **augmentations)
    if kind == "RotaryEmbeddingCat":
        if rope.in_pixels or rope.grid_type != "index":
            unsupported.append("RoPE on pixel coordinates (in_pixels=True)")
        if rope.rotate_half:
            unsupported.append("EVA RoPE in the half layout (hf_vit's EVA-02 RoPE rotates adjacent pairs)")
        reference = rope.ref_feat_shape
        return dict(
            rope_type="eva02",
            rope_theta=float(rope.temperature),
            rope_reference_grid=[int(s) for s in reference] if reference is not None else None,
            **augmentations,
        )
    unsupported.append(f"RoPE {kind} (hf_vit has DINOv3's and EVA-02's conventions)")
    return {}


def config_from_timm_eva(eva_model: nn.Module, **overrides) -> HfViTConfig:
    """The HfViTConfig of a timm `Eva`; refuses, in one line naming each, the Eva features hf_vit does not have."""
    if type(eva_model).__name__ != "Eva":
        raise TypeError(f"expected a timm Eva model, got {type(eva_model).__name__}")
    unsupported = []
    block = eva_model.blocks[0]
    attn = block.attn
    if type(block).__name__ != "EvaBlock":
        unsupported.append(f"{type(block).__name__} blocks (hf_vit's blocks are pre-norm)")
    if type(attn).__name__ != "EvaAttention":
        unsupported.append(f"{type(attn).__name__} attention (grouped-query / timm's AttentionRope)")
    if eva_model.cls_token is None:
        unsupported.append("no class token (class_token=False)")
    if getattr(eva_model, "rope_mixed", False):
        unsupported.append("mixed (learned per-layer) RoPE")
    if eva_model.attn_pool is not None or eva_model.global_pool not in ("token", "avg"):
        unsupported.append(f"global_pool={eva_model.global_pool!r} (hf_vit pools 'token' or 'avg')")
    fc_norm, final_norm = not _is_identity(eva_model.fc_norm), not _is_identity(eva_model.norm)
    has_head = isinstance(eva_model.head, nn.Linear)
    if fc_norm and final_norm:
        unsupported.append("both a final norm and fc_norm")
    if eva_model.global_pool == "token" and fc_norm:
        unsupported.append("token pooling with fc_norm")
    if eva_model.pos_embed is not None and eva_model.reg_token is not None and not eva_model.no_embed_class:
        unsupported.append("register tokens with position embeddings (hf_vit registers have none, as DINOv2)")
    norms = [block.norm1, block.norm2] + ([eva_model.norm_pre] if not _is_identity(eva_model.norm_pre) else [])
    if not all(_is_layernorm(norm) for norm in norms):
        unsupported.append(f"{type(block.norm1).__name__} norms (hf_vit's norms are LayerNorm)")
    if getattr(attn, "gate", None) is not None:
        unsupported.append("gated attention")
    if not _is_identity(getattr(attn, "norm", None)):
        unsupported.append("normalisation inside attention (scale_attn_inner)")
    qk_norm = not _is_identity(getattr(attn, "q_norm", None))
    if qk_norm and not _is_layernorm(attn.q_norm):
        unsupported.append(f"{type(attn.q_norm).__name__} query/key norms")
    if attn.head_dim * attn.num_heads != eva_model.embed_dim:
        unsupported.append("an attention width other than the embedding width (attn_head_dim)")
    if block.gamma_1 is not None and block.gamma_2 is None:
        unsupported.append("LayerScale on the attention branch only")
    mlp, mlp_kind = block.mlp, type(block.mlp).__name__
    mlp_norm = not _is_identity(getattr(mlp, "norm", None))
    if mlp_kind == "Mlp":
        if mlp_norm:
            unsupported.append("a plain MLP with an inner norm (scale_mlp without SwiGLU)")
        if not isinstance(mlp.act, nn.GELU) or mlp.act.approximate != "none":
            unsupported.append(f"MLP activation {mlp.act} (hf_vit converts exact GELU and SwiGLU)")
        mlp_type, intermediate = "mlp", mlp.fc1.out_features
    elif mlp_kind in ("GluMlp", "SwiGLU"):
        if not isinstance(mlp.act, nn.SiLU) or getattr(mlp, "gate_last", False):
            unsupported.append(f"gated MLP with {mlp.act} (hf_vit's SwiGLU is SiLU on the first half)")
        mlp_type = "swiglu_norm" if mlp_norm else "swiglu"
        intermediate = mlp.fc2.in_features
    else:
        unsupported.append(f"MLP layer {mlp_kind}")
        mlp_type, intermediate = "mlp", 1
    rope = _rope_fields(eva_model, unsupported)
    patch_h, patch_w = eva_model.patch_embed.patch_size
    if patch_h != patch_w:
        unsupported.append(f"{patch_h}x{patch_w} patches (hf_vit's are square)")
    if unsupported:
        raise ValueError("cannot convert this timm Eva model: it has " + "; ".join(unsupported))

    img_h, img_w = eva_model.patch_embed.img_size
    num_classes = eva_model.head.out_features if has_head else 0
    fields = dict(
        image_size=img_h if img_h == img_w else [img_h, img_w],
        patch_size=patch_h,
        num_channels=eva_model.patch_embed.proj.in_channels,
        hidden_size=eva_model.embed_dim,
        num_hidden_layers=len(eva_model.blocks),
        num_attention_heads=attn.num_heads,
        intermediate_size=intermediate,
        mlp_type=mlp_type,
        pre_norm=not _is_identity(eva_model.norm_pre),
        patch_embedding_bias=eva_model.patch_embed.proj.bias is not None,
        layer_norm_eps=block.norm1.eps,
        qkv_bias=attn.q_bias is not None or (attn.q_proj is not None and attn.q_proj.bias is not None),
        qk_norm=qk_norm,
        layerscale_init=_mean_abs(block.gamma_1) if block.gamma_1 is not None else None,
        num_register_tokens=eva_model.reg_token.shape[1] if eva_model.reg_token is not None else 0,
        # timm's average pooling: with fc_norm, the norm of the mean ("pooled"); without (timm's DINOv3 ports), the
        # mean of the normed tokens ("tokens")
        pooling="mean" if eva_model.global_pool == "avg" else "cls",
        final_norm="pooled" if fc_norm else "tokens",
        cls_position_embedding=not eva_model.no_embed_class,
        absolute_position_embeddings=eva_model.pos_embed is not None,
        interpolate_antialias=True,  # timm's resample_abs_pos_embed antialiases
        num_labels=max(num_classes, 1),
        **rope,
    )
    fields.update(overrides)
    return HfViTConfig(**fields)


def timm_eva_state_dict_to_hf_vit(state_dict: dict[str, torch.Tensor], config: HfViTConfig) -> dict[str, torch.Tensor]:
    """timm Eva names -> hf_vit: q/k/v weights fused (EVA-02-B/L keep them apart), the q/v biases with zeros for the
    key (Eva's key has no bias), SwiGLU's fc1_g/fc1_x packed into fc1 (gate first)."""
    parts: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    rest = {}
    for key, tensor in state_dict.items():
        if match := _EVA_QKV.match(key):
            parts.setdefault(("attn", match.group(1)), {})[key.split(".attn.", 1)[1]] = tensor
        elif match := _EVA_SWIGLU.match(key):
            layer, half, kind = match.groups()
            parts.setdefault(("mlp", layer), {})[f"{half}.{kind}"] = tensor
        else:
            rest[key] = tensor
    converted = _rename(rest, EVA_TO_HF_VIT, "timm Eva", EVA_EXPECTED)
    hidden = config.hidden_size
    for (what, layer), found in parts.items():
        prefix = f"vit.encoder.layers.{layer}"
        if what == "mlp":
            for kind in ("weight", "bias"):
                if f"g.{kind}" in found:
                    converted[f"{prefix}.mlp.fc1.{kind}"] = cat((found[f"g.{kind}"], found[f"x.{kind}"]))
            continue
        if "qkv.weight" in found:
            weight = found["qkv.weight"]
            biases = [found.get("q_bias"), None, found.get("v_bias")]
        else:
            weight = cat([found[f"{name}_proj.weight"] for name in "qkv"])
            biases = [found.get(f"{name}_proj.bias") for name in "qkv"]
        converted[f"{prefix}.attention.qkv.weight"] = weight
        if config.qkv_bias:
            converted[f"{prefix}.attention.qkv.bias"] = cat(
                [bias if bias is not None else weight.new_zeros(hidden) for bias in biases]
            )
    return converted


def from_timm_eva(eva_model: nn.Module) -> HfViTModel | HfViTForImageClassification:
    """An hf_vit model with a timm Eva model's weights: a classifier if it has a head, else the backbone."""
    config = config_from_timm_eva(eva_model)
    return _build(config, timm_eva_state_dict_to_hf_vit(eva_model.state_dict(), config))


def is_timm_eva(architecture: str) -> bool:
    """Whether timm builds `architecture` as an Eva (eva02_*, vit_*_dinov3, ...); False without timm or for names it
    does not know."""
    try:
        from timm.models import is_model, model_entrypoint
    except ImportError:
        return False
    return is_model(architecture) and model_entrypoint(architecture).__module__ == "timm.models.eva"
