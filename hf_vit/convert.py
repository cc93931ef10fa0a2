"""Foreign ViT checkpoints <-> hf_vit.

Each source gets two pieces: a config derived from the source model, and a state-dict mapping from the source's
parameter names to hf_vit's. The mappings work on plain state dicts so that file-based conversion (checkpoints
without the source library's model object) can reuse them.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from .configuration_hf_vit import HfViTConfig
from .modeling_hf_vit import HfViTForImageClassification, HfViTModel

# ---------------------------------------------------------------------------------------------------------------
# shared
# ---------------------------------------------------------------------------------------------------------------


def _rename(state_dict: dict[str, torch.Tensor], rules: list[tuple[str, str]], source: str) -> dict[str, torch.Tensor]:
    """Apply the first matching (regex, replacement) rule to every key; unmatched keys are an error."""
    renamed, unmatched = {}, []
    for key, tensor in state_dict.items():
        for pattern, replacement in rules:
            new_key, hits = re.subn(pattern, replacement, key)
            if hits:
                renamed[new_key] = tensor
                break
        else:
            unmatched.append(key)
    if unmatched:
        raise ValueError(
            f"{len(unmatched)} {source} parameter(s) have no hf_vit equivalent (first: {', '.join(unmatched[:5])}); "
            "this model uses a feature hf_vit does not implement"
        )
    return renamed


def _build(config: HfViTConfig, state_dict: dict[str, torch.Tensor]) -> HfViTModel | HfViTForImageClassification:
    """An hf_vit model for `config` holding exactly `state_dict` (keys in hf_vit's classification naming)."""
    has_head = "classifier.weight" in state_dict
    model = HfViTForImageClassification(config) if has_head else HfViTModel(config)
    if not has_head:  # a bare backbone's keys carry no "vit." prefix
        state_dict = {key.removeprefix("vit."): value for key, value in state_dict.items()}
    expected = model.state_dict()
    for key, tensor in state_dict.items():
        if key in expected and expected[key].shape != tensor.shape:
            raise ValueError(
                f"shape mismatch for {key}: the checkpoint has {tuple(tensor.shape)}, the config implies "
                f"{tuple(expected[key].shape)}"
            )
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"converted weights do not fit the hf_vit model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return model.eval()


# ---------------------------------------------------------------------------------------------------------------
# timm
# ---------------------------------------------------------------------------------------------------------------
TIMM_TO_HF_VIT = [
    (r"^patch_embed\.proj\.", "vit.embeddings.patch_embeddings.projection."),
    (r"^cls_token$", "vit.embeddings.cls_token"),
    (r"^reg_token$", "vit.embeddings.register_tokens"),
    (r"^pos_embed$", "vit.embeddings.position_embeddings"),
    (r"^blocks\.(\d+)\.norm1\.", r"vit.encoder.layers.\1.norm1."),
    (r"^blocks\.(\d+)\.attn\.qkv\.", r"vit.encoder.layers.\1.attention.qkv."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"vit.encoder.layers.\1.attention.proj."),
    (r"^blocks\.(\d+)\.ls1\.gamma$", r"vit.encoder.layers.\1.layer_scale1.lambda1"),
    (r"^blocks\.(\d+)\.norm2\.", r"vit.encoder.layers.\1.norm2."),
    (r"^blocks\.(\d+)\.mlp\.fc1\.", r"vit.encoder.layers.\1.mlp.fc1."),
    (r"^blocks\.(\d+)\.mlp\.fc2\.", r"vit.encoder.layers.\1.mlp.fc2."),
    (r"^blocks\.(\d+)\.ls2\.gamma$", r"vit.encoder.layers.\1.layer_scale2.lambda1"),
    (r"^norm\.", "vit.layernorm."),  # token pooling: final norm over all tokens
    (r"^fc_norm\.", "vit.layernorm."),  # avg pooling: norm after pooling (only one of the two exists)
    (r"^head\.", "classifier."),
]


def timm_state_dict_to_hf_vit(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return _rename(state_dict, TIMM_TO_HF_VIT, "timm")


def config_from_timm(timm_model: nn.Module, **overrides) -> HfViTConfig:
    """The HfViTConfig of a timm `VisionTransformer`; refuses timm features hf_vit does not implement."""
    if type(timm_model).__name__ != "VisionTransformer":
        raise TypeError(f"expected a timm VisionTransformer, got {type(timm_model).__name__}")
    block = timm_model.blocks[0]
    unsupported = []
    if not timm_model.has_class_token:
        unsupported.append("no class token (class_token=False)")
    if timm_model.global_pool not in ("token", "avg"):
        unsupported.append(f"global_pool={timm_model.global_pool!r} (hf_vit pools 'token' or 'avg')")
    if timm_model.global_pool == "avg" and isinstance(timm_model.fc_norm, nn.Identity):
        unsupported.append("avg pooling without fc_norm")
    if not isinstance(timm_model.norm_pre, nn.Identity):
        unsupported.append("pre-norm before the blocks (pre_norm=True)")
    if timm_model.num_reg_tokens and not timm_model.no_embed_class:
        unsupported.append("register tokens with position embeddings (hf_vit registers have none, as DINOv2)")
    if not isinstance(block.attn.q_norm, nn.Identity) or not isinstance(getattr(block.attn, "norm", nn.Identity()), nn.Identity):
        unsupported.append("normalisation inside attention (qk_norm / scale_attn_norm)")
    if not isinstance(block.mlp.act, nn.GELU) or block.mlp.act.approximate != "none":
        unsupported.append(f"MLP activation {block.mlp.act} (hf_vit uses exact GELU)")
    if not isinstance(getattr(block.mlp, "norm", nn.Identity()), nn.Identity):
        unsupported.append("normalisation inside the MLP (scale_mlp_norm)")
    if unsupported:
        raise ValueError("cannot convert this timm model: " + "; ".join(unsupported))

    patch_h, patch_w = timm_model.patch_embed.patch_size
    if patch_h != patch_w:
        raise ValueError(f"hf_vit needs square patches, the timm model has {patch_h}x{patch_w}")
    num_classes = timm_model.head.out_features if isinstance(timm_model.head, nn.Linear) else 0
    img_h, img_w = timm_model.patch_embed.img_size
    layerscale = block.ls1
    fields = dict(
        image_size=img_h if img_h == img_w else [img_h, img_w],
        patch_size=patch_h,
        num_channels=timm_model.patch_embed.proj.in_channels,
        hidden_size=timm_model.embed_dim,
        num_hidden_layers=len(timm_model.blocks),
        num_attention_heads=block.attn.num_heads,
        intermediate_size=block.mlp.fc1.out_features,
        layer_norm_eps=block.norm1.eps,
        qkv_bias=block.attn.qkv.bias is not None,
        layerscale_init=float(layerscale.gamma.detach().abs().mean()) if hasattr(layerscale, "gamma") else None,
        num_register_tokens=timm_model.num_reg_tokens,
        pooling="cls" if timm_model.global_pool == "token" else "mean",
        cls_position_embedding=not timm_model.no_embed_class,
        interpolate_antialias=True,  # timm's resample_abs_pos_embed antialiases
        num_labels=max(num_classes, 1),
    )
    fields.update(overrides)
    return HfViTConfig(**fields)


def from_timm(timm_model: nn.Module) -> HfViTModel | HfViTForImageClassification:
    """An hf_vit model with the timm model's weights: a classifier if it has a head, else the backbone."""
    config = config_from_timm(timm_model)
    return _build(config, timm_state_dict_to_hf_vit(timm_model.state_dict()))


# ---------------------------------------------------------------------------------------------------------------
# transformers ViT
# ---------------------------------------------------------------------------------------------------------------
TRANSFORMERS_TO_HF_VIT = [
    (r"^(vit\.)?embeddings\.cls_token$", "vit.embeddings.cls_token"),
    (r"^(vit\.)?embeddings\.position_embeddings$", "vit.embeddings.position_embeddings"),
    (r"^(vit\.)?embeddings\.patch_embeddings\.projection\.", "vit.embeddings.patch_embeddings.projection."),
    (r"^(vit\.)?layers\.(\d+)\.layernorm_before\.", r"vit.encoder.layers.\2.norm1."),
    (r"^(vit\.)?layers\.(\d+)\.attention\.o_proj\.", r"vit.encoder.layers.\2.attention.proj."),
    (r"^(vit\.)?layers\.(\d+)\.layernorm_after\.", r"vit.encoder.layers.\2.norm2."),
    (r"^(vit\.)?layers\.(\d+)\.mlp\.fc1\.", r"vit.encoder.layers.\2.mlp.fc1."),
    (r"^(vit\.)?layers\.(\d+)\.mlp\.fc2\.", r"vit.encoder.layers.\2.mlp.fc2."),
    (r"^(vit\.)?layernorm\.", "vit.layernorm."),
    (r"^classifier\.", "classifier."),
]
_QKV_PATTERN = re.compile(r"^(vit\.)?layers\.(\d+)\.attention\.([qkv])_proj\.(weight|bias)$")
# Parts of transformers' ViT with no hf_vit counterpart, dropped on purpose: the tanh pooler of `ViTModel` (unused
# by the classifier) and the masked-image-modeling mask token.
_TRANSFORMERS_DROPPED = re.compile(r"^(vit\.)?(pooler\.|embeddings\.mask_token$)")


def transformers_state_dict_to_hf_vit(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers v5 ViT names -> hf_vit; the separate q/k/v projections are fused into one qkv (q, k, v order)."""
    qkv_parts: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    rest = {}
    for key, tensor in state_dict.items():
        if _TRANSFORMERS_DROPPED.match(key):
            continue
        match = _QKV_PATTERN.match(key)
        if match:
            qkv_parts.setdefault((match.group(2), match.group(4)), {})[match.group(3)] = tensor
        else:
            rest[key] = tensor
    converted = _rename(rest, TRANSFORMERS_TO_HF_VIT, "transformers ViT")
    for (layer, kind), parts in qkv_parts.items():
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"layer {layer} has {kind}s for {sorted(parts)} only; expected q, k and v")
        converted[f"vit.encoder.layers.{layer}.attention.qkv.{kind}"] = torch.cat([parts[n] for n in "qkv"])
    return converted


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
        id2label=dict(vit_config.id2label),
        label2id=dict(vit_config.label2id),
        problem_type=vit_config.problem_type,
    )
    fields.update(overrides)
    return HfViTConfig(**fields)


def from_transformers(vit_model: nn.Module) -> HfViTModel | HfViTForImageClassification:
    """An hf_vit model with the weights of a transformers `ViTModel` / `ViTForImageClassification`."""
    if type(vit_model).__name__ not in ("ViTModel", "ViTForImageClassification"):
        raise TypeError(f"expected a transformers ViTModel or ViTForImageClassification, got {type(vit_model).__name__}")
    config = config_from_transformers(vit_model.config)
    return _build(config, transformers_state_dict_to_hf_vit(vit_model.state_dict()))


__all__ = [
    "config_from_timm",
    "config_from_transformers",
    "from_timm",
    "from_transformers",
    "timm_state_dict_to_hf_vit",
    "transformers_state_dict_to_hf_vit",
]
