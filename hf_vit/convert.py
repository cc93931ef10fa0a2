"""Foreign ViT checkpoints <-> hf_vit.

Each source gets two pieces: a config derived from the source model, and a state-dict mapping from the source's
parameter names to hf_vit's. The mappings work on plain state dicts so that file-based conversion (checkpoints
without the source library's model object) can reuse them.

Model objects: `from_timm`, `from_transformers`.
Files (what scripts/convert_checkpoint.py runs): `convert_checkpoint(source, checkpoint, output_dir, verify=...)` for
timm state dicts / folders, DINO training checkpoints and backbones, transformers ViT folders (v4 or v5 names) and
Google `.npz` (vit_jax and big_vision layouts); the architecture is read from keys and shapes wherever that is
unambiguous. `verify_conversion` compares with the source library's own forward.
Out: `export_to_timm`, `export_to_transformers` (refusing features the target lacks), and `export_safetensors`
(Accelerate states / .bin / legacy folders -> checked safetensors). File reading lives in `checkpoint_io.py`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .checkpoint_io import (
    is_state_dict,
    load_npz,
    load_pickle,
    load_safetensors,
    load_weights,
    save_safetensors_checked,
    strip_wrapper_prefixes,
    unwrap_state_dict,
    weight_files_in,
)
from .configuration_hf_vit import PRESETS, HfViTConfig, image_size_pair
from .fileio import atomic_directory
from .model_card import render_model_card, write_model_card
from .modeling_hf_vit import HfViTForImageClassification, HfViTModel
from .stats import count_parameters

# ---------------------------------------------------------------------------------------------------------------
# shared
# ---------------------------------------------------------------------------------------------------------------


def _rename(
    state_dict: dict[str, torch.Tensor], rules: list[tuple[str, str]], source: str, expected: str | None = None
) -> dict[str, torch.Tensor]:
    """Apply the first matching (regex, replacement) rule to every key; unmatched keys are an error that names them
    (first few) and the names expected."""
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
            f"expected {source} names like {expected or _expected_names(rules)}: either the file has another layout "
            "(check --source) or the model uses a feature hf_vit does not implement"
        )
    return renamed


def _expected_names(rules: list[tuple[str, str]]) -> str:
    names = [re.sub(r"\(\\d\+\)", "N", pattern).replace("\\.", ".").strip("^$").replace("(vit.)?", "[vit.]")
             for pattern, _ in rules]
    return ", ".join(names[:8]) + ", ..."


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
# timm name <-> hf_vit name, both directions built from this one list. "{i}" is a block index; a name ending in "."
# is a prefix (weight and bias), any other is a whole parameter name. The final norm is added per direction below.
_TIMM_HF_VIT_NAMES = [
    ("patch_embed.proj.", "vit.embeddings.patch_embeddings.projection."),
    ("cls_token", "vit.embeddings.cls_token"),
    ("reg_token", "vit.embeddings.register_tokens"),
    ("pos_embed", "vit.embeddings.position_embeddings"),
    ("blocks.{i}.norm1.", "vit.encoder.layers.{i}.norm1."),
    ("blocks.{i}.attn.qkv.", "vit.encoder.layers.{i}.attention.qkv."),
    ("blocks.{i}.attn.proj.", "vit.encoder.layers.{i}.attention.proj."),
    ("blocks.{i}.ls1.gamma", "vit.encoder.layers.{i}.layer_scale1.lambda1"),
    ("blocks.{i}.norm2.", "vit.encoder.layers.{i}.norm2."),
    ("blocks.{i}.mlp.fc1.", "vit.encoder.layers.{i}.mlp.fc1."),
    ("blocks.{i}.mlp.fc2.", "vit.encoder.layers.{i}.mlp.fc2."),
    ("blocks.{i}.ls2.gamma", "vit.encoder.layers.{i}.layer_scale2.lambda1"),
    ("head.", "classifier."),
]


def _name_rule(source: str, target: str) -> tuple[str, str]:
    """A (regex, replacement) rule for `_rename` from a pair of names of the list above."""
    pattern = "^" + re.escape(source).replace(re.escape("{i}"), r"(\d+)") + ("" if source.endswith(".") else "$")
    return pattern, target.replace("{i}", r"\1")


TIMM_TO_HF_VIT = [_name_rule(timm, ours) for timm, ours in _TIMM_HF_VIT_NAMES] + [
    (r"^norm\.", "vit.layernorm."),  # token pooling: final norm over all tokens
    (r"^fc_norm\.", "vit.layernorm."),  # avg pooling: norm after pooling (only one of the two exists)
]


TIMM_EXPECTED = (
    "patch_embed.proj.weight, cls_token, [reg_token], pos_embed, blocks.N.{norm1,attn.qkv,attn.proj,[ls1.gamma],norm2,"
    "mlp.fc1,mlp.fc2,[ls2.gamma]}.*, norm.* or fc_norm.*, [head.*]"
)


def timm_state_dict_to_hf_vit(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return _rename(state_dict, TIMM_TO_HF_VIT, "timm", TIMM_EXPECTED)


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
    swiglu = type(block.mlp).__name__ == "GluMlp"  # timm's SwiGLUPacked (DINOv2-giant)
    if swiglu:
        if not isinstance(block.mlp.act, nn.SiLU) or block.mlp.gate_last:
            unsupported.append(f"gated MLP with {block.mlp.act} gating the last half (hf_vit's SwiGLU is SiLU on the first half)")
    elif type(block.mlp).__name__ != "Mlp":
        unsupported.append(f"MLP layer {type(block.mlp).__name__} (hf_vit has timm's Mlp and SwiGLUPacked)")
    elif not isinstance(block.mlp.act, nn.GELU) or block.mlp.act.approximate != "none":
        unsupported.append(f"MLP activation {block.mlp.act} (hf_vit uses exact GELU; e.g. CLIP's quick_gelu is not supported)")
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
        intermediate_size=block.mlp.fc1.out_features // (2 if swiglu else 1),
        mlp_type="swiglu" if swiglu else "mlp",
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
]
# q/k/v projections, v5 (`layers.N.attention.q_proj`) and v4 (`encoder.layer.N.attention.attention.query`)
_QKV_PATTERN = re.compile(
    r"^(vit\.)?(?:layers\.(\d+)\.attention\.([qkv])_proj|encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value))"
    r"\.(weight|bias)$"
)
# Parts of transformers' ViT with no hf_vit counterpart, dropped on purpose: the tanh pooler of `ViTModel` (unused
# by the classifier) and the masked-image-modeling mask token.
_TRANSFORMERS_DROPPED = re.compile(r"^(vit\.)?(pooler\.|embeddings\.mask_token$)")


TRANSFORMERS_EXPECTED = (
    "[vit.]embeddings.{cls_token,position_embeddings,patch_embeddings.projection.*}, "
    "[vit.]layers.N.{layernorm_before,attention.{q,k,v,o}_proj,layernorm_after,mlp.fc1,mlp.fc2}.* (v5) or "
    "[vit.]encoder.layer.N.{attention.attention.{query,key,value},attention.output.dense,intermediate.dense,"
    "output.dense,...}.* (v4), [vit.]layernorm.*, [classifier.*]"
)


def transformers_state_dict_to_hf_vit(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers ViT names (v5 or v4) -> hf_vit; the separate q/k/v projections are fused into one qkv (q, k, v order)."""
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
        id2label=dict(vit_config.id2label or {}) or None,
        label2id=dict(vit_config.label2id or {}) or None,
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


# ---------------------------------------------------------------------------------------------------------------
# transformers DINOv2 (dinov2, dinov2_with_registers)
# ---------------------------------------------------------------------------------------------------------------
DINOV2_MODEL_TYPES = ("dinov2", "dinov2_with_registers")
_DINOV2_PREFIX = re.compile(r"^(dinov2_with_registers|dinov2)\.")
DINOV2_TO_HF_VIT = [
    (r"^embeddings\.cls_token$", "vit.embeddings.cls_token"),
    (r"^embeddings\.mask_token$", "vit.embeddings.mask_token"),
    (r"^embeddings\.register_tokens$", "vit.embeddings.register_tokens"),
    (r"^embeddings\.position_embeddings$", "vit.embeddings.position_embeddings"),
    (r"^embeddings\.patch_embeddings\.projection\.", "vit.embeddings.patch_embeddings.projection."),
    (r"^encoder\.layer\.(\d+)\.norm1\.", r"vit.encoder.layers.\1.norm1."),
    (r"^encoder\.layer\.(\d+)\.norm2\.", r"vit.encoder.layers.\1.norm2."),
    (r"^encoder\.layer\.(\d+)\.attention\.(?:output\.dense|o_proj)\.", r"vit.encoder.layers.\1.attention.proj."),
    (r"^encoder\.layer\.(\d+)\.layer_scale1\.lambda1$", r"vit.encoder.layers.\1.layer_scale1.lambda1"),
    (r"^encoder\.layer\.(\d+)\.layer_scale2\.lambda1$", r"vit.encoder.layers.\1.layer_scale2.lambda1"),
    (r"^encoder\.layer\.(\d+)\.mlp\.(fc1|fc2)\.", r"vit.encoder.layers.\1.mlp.\2."),
    # SwiGLU, v4 names: weights_in is already packed (gate, value) as hf_vit's fc1
    (r"^encoder\.layer\.(\d+)\.mlp\.weights_in\.", r"vit.encoder.layers.\1.mlp.fc1."),
    (r"^encoder\.layer\.(\d+)\.mlp\.(?:weights_out|down_proj)\.", r"vit.encoder.layers.\1.mlp.fc2."),
    (r"^layernorm\.", "vit.layernorm."),
]
# q/k/v (v4 `attention.attention.query`, v5 `attention.q_proj`) and the v5 SwiGLU halves gate_proj/up_proj
_DINOV2_QKV = re.compile(r"^encoder\.layer\.(\d+)\.attention\.(?:attention\.(query|key|value)|([qkv])_proj)\.(weight|bias)$")
_DINOV2_GLU = re.compile(r"^encoder\.layer\.(\d+)\.mlp\.(gate|up)_proj\.(weight|bias)$")
DINOV2_EXPECTED = (
    "[dinov2.]embeddings.{cls_token,mask_token,[register_tokens],position_embeddings,patch_embeddings.projection.*}, "
    "encoder.layer.N.{norm1,attention.attention.{query,key,value},attention.output.dense,layer_scale1,norm2,"
    "mlp.{fc1,fc2 | weights_in,weights_out},layer_scale2}.* (v4) or encoder.layer.N.attention.{q,k,v,o}_proj, "
    "mlp.{gate,up,down}_proj (v5), layernorm.*"
)


def dinov2_state_dict_to_hf_vit(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers Dinov2Model / Dinov2WithRegistersModel names (v4 or v5) -> hf_vit; q/k/v are fused into one qkv,
    the v5 SwiGLU gate/up halves packed into fc1 (gate first). The mask token is kept."""
    state_dict = {_DINOV2_PREFIX.sub("", key): value for key, value in state_dict.items()}
    if any(key.startswith("classifier.") for key in state_dict):
        raise ValueError(
            "cannot convert a Dinov2ForImageClassification head: it classifies [CLS] concatenated with the mean patch "
            "token, which hf_vit's head does not represent; convert the backbone (Dinov2Model) and fine-tune a new head"
        )
    parts: dict[tuple[str, str, str], dict[str, torch.Tensor]] = {}
    rest = {}
    for key, tensor in state_dict.items():
        if match := _DINOV2_QKV.match(key):
            layer, long_name, short_name, kind = match.groups()
            parts.setdefault(("qkv", layer, kind), {})[short_name or long_name[0]] = tensor
        elif match := _DINOV2_GLU.match(key):
            layer, half, kind = match.groups()
            parts.setdefault(("glu", layer, kind), {})[half] = tensor
        else:
            rest[key] = tensor
    converted = _rename(rest, DINOV2_TO_HF_VIT, "transformers DINOv2", DINOV2_EXPECTED)
    for (what, layer, kind), found in parts.items():
        order = ("q", "k", "v") if what == "qkv" else ("gate", "up")
        if set(found) != set(order):
            raise ValueError(f"layer {layer} has {what} {kind}s for {sorted(found)} only; expected {', '.join(order)}")
        target = "attention.qkv" if what == "qkv" else "mlp.fc1"
        converted[f"vit.encoder.layers.{layer}.{target}.{kind}"] = torch.cat([found[name] for name in order])
    return converted


def config_from_dinov2(dinov2_config, **overrides) -> HfViTConfig:
    """The HfViTConfig of a transformers `Dinov2Config` / `Dinov2WithRegistersConfig`."""
    patch_size = dinov2_config.patch_size
    if not isinstance(patch_size, int):
        if patch_size[0] != patch_size[1]:
            raise ValueError(f"hf_vit needs square patches, the DINOv2 model has {patch_size}")
        patch_size = patch_size[0]
    with_registers = dinov2_config.model_type == "dinov2_with_registers"
    mlp_hidden = int(dinov2_config.hidden_size * dinov2_config.mlp_ratio)
    if dinov2_config.use_swiglu_ffn:  # transformers' Dinov2SwiGLUFFN width: 2/3, rounded up to a multiple of 8
        mlp_hidden = (int(mlp_hidden * 2 / 3) + 7) // 8 * 8
    image_size = dinov2_config.image_size
    fields = dict(
        image_size=image_size if isinstance(image_size, int) else list(image_size),
        patch_size=patch_size,
        num_channels=dinov2_config.num_channels,
        hidden_size=dinov2_config.hidden_size,
        num_hidden_layers=dinov2_config.num_hidden_layers,
        num_attention_heads=dinov2_config.num_attention_heads,
        intermediate_size=mlp_hidden,
        hidden_act=dinov2_config.hidden_act,
        mlp_type="swiglu" if dinov2_config.use_swiglu_ffn else "mlp",
        hidden_dropout_prob=dinov2_config.hidden_dropout_prob,
        attention_probs_dropout_prob=dinov2_config.attention_probs_dropout_prob,
        layer_norm_eps=dinov2_config.layer_norm_eps,
        qkv_bias=dinov2_config.qkv_bias,
        layerscale_init=float(dinov2_config.layerscale_value),
        num_register_tokens=dinov2_config.num_register_tokens if with_registers else 0,
        cls_position_embedding=True,  # [CLS] and patches have positions, registers none
        # transformers' Dinov2 resizes position embeddings without antialiasing, Dinov2WithRegisters with it
        interpolate_antialias=with_registers,
        use_mask_token=with_registers or bool(getattr(dinov2_config, "use_mask_token", True)),
        initializer_range=dinov2_config.initializer_range,
        id2label=dict(dinov2_config.id2label or {}) or None,
        label2id=dict(dinov2_config.label2id or {}) or None,
    )
    fields.update(overrides)
    return HfViTConfig(**fields)


def from_dinov2(dinov2_model: nn.Module) -> HfViTModel:
    """An hf_vit backbone with the weights of a transformers `Dinov2Model` / `Dinov2WithRegistersModel`."""
    if type(dinov2_model).__name__ not in ("Dinov2Model", "Dinov2WithRegistersModel"):
        raise TypeError(f"expected a transformers Dinov2Model or Dinov2WithRegistersModel, got {type(dinov2_model).__name__}")
    config = config_from_dinov2(dinov2_model.config)
    return _build(config, dinov2_state_dict_to_hf_vit(dinov2_model.state_dict()))


# ---------------------------------------------------------------------------------------------------------------
# Files: architecture from tensor shapes, per source
# ---------------------------------------------------------------------------------------------------------------
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
GOOGLE_MEAN, GOOGLE_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
SOURCES = ("timm", "dino", "transformers", "npz")
EXPORT_TARGETS = ("timm", "transformers")
VERIFY_TOLERANCE = 1e-4
# DINO's own architectures (vision_transformer.py of facebookresearch/dino) all use 64-wide heads.
DINO_HEADS = {192: 3, 384: 6, 768: 12}


def _square_side(n: int) -> int | None:
    side = math.isqrt(n) if n > 0 else 0
    return side if side and side * side == n else None


def _block_count(keys, pattern: str) -> int:
    indices = [int(m.group(1)) for key in keys if (m := re.match(pattern, key))]
    return 1 + max(indices) if indices else 0


def timm_layout_from_state_dict(state_dict: dict[str, torch.Tensor]) -> dict:
    """Everything a timm/DINO-named ViT state dict shows of its architecture (all but the number of heads)."""
    required = ("patch_embed.proj.weight", "pos_embed", "blocks.0.attn.qkv.weight", "blocks.0.mlp.fc1.weight")
    missing = [key for key in required if key not in state_dict]
    if missing:
        raise ValueError(
            f"not a timm/DINO ViT state dict: it lacks {', '.join(missing)} (its keys start with "
            f"{', '.join(list(state_dict)[:5])}); expected timm names like {TIMM_EXPECTED}"
        )
    proj = state_dict["patch_embed.proj.weight"]
    if proj.ndim != 4 or proj.shape[2] != proj.shape[3]:
        raise ValueError(f"patch_embed.proj.weight must be a square Conv2d kernel (D, C, P, P), got {tuple(proj.shape)}")
    embed_dim, in_chans, patch, _ = proj.shape
    has_cls = "cls_token" in state_dict
    reg_tokens = state_dict["reg_token"].shape[1] if "reg_token" in state_dict else 0
    num_prefix = int(has_cls) + reg_tokens
    positions = state_dict["pos_embed"].shape[1]
    if num_prefix and _square_side(positions):
        side, no_embed_class = _square_side(positions), True  # timm's no_embed_class: only the patches have positions
    elif _square_side(positions - num_prefix):
        side, no_embed_class = _square_side(positions - num_prefix), False
    else:
        raise ValueError(
            f"pos_embed has {positions} positions: neither a square patch grid nor one plus the {num_prefix} prefix "
            "token(s); hf_vit infers square image sizes only"
        )
    gamma = state_dict.get("blocks.0.ls1.gamma")
    fc1_out, fc2_in = state_dict["blocks.0.mlp.fc1.weight"].shape[0], state_dict["blocks.0.mlp.fc2.weight"].shape[1]
    return dict(
        img_size=side * patch,
        patch_size=patch,
        in_chans=in_chans,
        embed_dim=embed_dim,
        depth=_block_count(state_dict, r"blocks\.(\d+)\."),
        mlp_hidden=fc1_out,
        swiglu=fc1_out == 2 * fc2_in,  # timm's SwiGLUPacked: fc1 holds gate and value
        qkv_bias="blocks.0.attn.qkv.bias" in state_dict,
        class_token=has_cls,
        reg_tokens=reg_tokens,
        no_embed_class=no_embed_class,
        layerscale_init=float(gamma.abs().mean()) if gamma is not None else None,
        global_pool="avg" if "fc_norm.weight" in state_dict else "token",
        num_classes=state_dict["head.weight"].shape[0] if "head.weight" in state_dict else 0,
    )


def config_from_timm_layout(layout: dict, num_heads: int, **overrides) -> HfViTConfig:
    if not layout["class_token"]:
        raise ValueError("the checkpoint has no cls_token (a timm model with class_token=False); hf_vit needs a [CLS] token")
    if layout["reg_tokens"] and not layout["no_embed_class"]:
        raise ValueError("register tokens with position embeddings of their own: hf_vit registers have none (as DINOv2)")
    fields = dict(
        image_size=layout["img_size"],
        patch_size=layout["patch_size"],
        num_channels=layout["in_chans"],
        hidden_size=layout["embed_dim"],
        num_hidden_layers=layout["depth"],
        num_attention_heads=num_heads,
        intermediate_size=layout["mlp_hidden"] // (2 if layout.get("swiglu") else 1),
        mlp_type="swiglu" if layout.get("swiglu") else "mlp",
        layer_norm_eps=1e-6,
        qkv_bias=layout["qkv_bias"],
        layerscale_init=layout["layerscale_init"],
        num_register_tokens=layout["reg_tokens"],
        pooling="cls" if layout["global_pool"] == "token" else "mean",
        cls_position_embedding=not layout["no_embed_class"],
        interpolate_antialias=True,
        num_labels=max(layout["num_classes"], 1),
    )
    fields.update(overrides)
    return HfViTConfig(**fields)


def _heads(hidden_size: int, num_heads: int | None, preset: str | None) -> int | None:
    if num_heads is not None:
        return num_heads
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; known presets: {', '.join(PRESETS)}")
        if PRESETS[preset]["hidden_size"] != hidden_size:
            raise ValueError(
                f"preset {preset} has hidden_size {PRESETS[preset]['hidden_size']}, but the checkpoint's width is {hidden_size}"
            )
        return PRESETS[preset]["num_attention_heads"]
    return None


def _timm_reference(layout: dict, num_heads: int, state_dict: dict | None = None) -> nn.Module:
    """A timm VisionTransformer of `layout` (the source library's own forward), loaded with `state_dict` if given."""
    from timm.models.vision_transformer import VisionTransformer

    swiglu = {}
    if layout.get("swiglu"):
        from timm.layers import SwiGLUPacked

        swiglu = dict(mlp_layer=SwiGLUPacked, act_layer=nn.SiLU)
    model = VisionTransformer(
        img_size=layout["img_size"], patch_size=layout["patch_size"], in_chans=layout["in_chans"],
        num_classes=layout["num_classes"], global_pool=layout["global_pool"], embed_dim=layout["embed_dim"],
        depth=layout["depth"], num_heads=num_heads, mlp_ratio=layout["mlp_hidden"] / layout["embed_dim"],
        qkv_bias=layout["qkv_bias"], init_values=layout["layerscale_init"], class_token=layout["class_token"],
        no_embed_class=layout["no_embed_class"], reg_tokens=layout["reg_tokens"], **swiglu,
    )
    if state_dict is not None:
        model.load_state_dict(state_dict, strict=True)
    return model.eval()


def _check_fits(state_dict: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], what: str) -> None:
    """Shape mismatches name the tensor and both shapes; missing/unexpected keys are listed (first few)."""
    for key, tensor in state_dict.items():
        if key in expected and tuple(expected[key].shape) != tuple(tensor.shape):
            raise ValueError(
                f"shape mismatch for {key}: the checkpoint has {tuple(tensor.shape)}, {what} expects {tuple(expected[key].shape)}"
            )
    unexpected = [key for key in state_dict if key not in expected]
    missing = [key for key in expected if key not in state_dict]
    if unexpected or missing:
        raise ValueError(
            f"the checkpoint does not fit {what}: {len(unexpected)} unexpected key(s) {unexpected[:5]}, "
            f"{len(missing)} missing key(s) {missing[:5]}"
        )


def _require(module: str, flag: str):
    try:
        return __import__(module)
    except ImportError:
        raise ValueError(f"{flag} needs {module} installed (pip install {module})") from None


@dataclass
class Conversion:
    """A converted model plus what the output folder needs to describe it."""

    model: HfViTModel | HfViTForImageClassification
    source: str  # short, for the card's first line
    details: str  # the card's "Source" section
    image_mean: tuple = IMAGENET_MEAN
    image_std: tuple = IMAGENET_STD
    resample: int = 3  # PIL bicubic (timm, DINO); Google's models use bilinear (2)
    reference: Callable[[], Callable[[torch.Tensor], dict]] | None = None  # builds the source library's forward
    reference_name: str = ""
    notes: list[str] = field(default_factory=list)
    # the source's own preprocessing, when it is more than resize + normalise: a transformers image processor
    # (written instead of the ViTImageProcessor built from the fields above)
    image_processor: object | None = None


def _timm_forward(model: nn.Module, has_head: bool) -> Callable[[torch.Tensor], dict]:
    def forward(x):
        if has_head:
            return {"logits": model(x)}
        return {"last_hidden_state": model.forward_features(x), "pooler_output": model(x)}

    return forward


def convert_timm_file(path, timm_model: str | None = None, num_heads: int | None = None, preset: str | None = None) -> Conversion:
    """A timm ViT state dict (.safetensors / .pth / .bin, or a timm folder with config.json) -> hf_vit.

    `timm_model` names the base architecture (the heads); the variants visible in the weights (registers, LayerScale,
    no_embed_class, avg pooling with fc_norm, depth, image size, classes) are read from keys and shapes.
    """
    path = Path(path)
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if path.is_dir() and (path / "config.json").is_file() and timm_model is None and num_heads is None and preset is None:
        return convert_timm_folder(path)
    if path.is_dir() and (path / "config.json").is_file():  # timm's own folder format (push_to_hub / local-dir)
        timm_config = json.loads((path / "config.json").read_text())
        if "architecture" not in timm_config:
            raise ValueError(f"{path / 'config.json'} is not a timm config (no 'architecture'); use --source transformers for transformers folders")
        timm_model = timm_model or timm_config["architecture"]
        if num_heads is None:
            num_heads = timm_config.get("model_args", {}).get("num_heads")
        cfg = timm_config.get("pretrained_cfg", {})
        mean, std = tuple(cfg.get("mean", mean)), tuple(cfg.get("std", std))
    state_dict = strip_wrapper_prefixes(load_weights(path))
    timm_state_dict_to_hf_vit(state_dict)  # unknown layouts fail here, naming the unmatched and the expected keys
    layout = timm_layout_from_state_dict(state_dict)
    heads = _heads(layout["embed_dim"], num_heads, preset)
    if heads is not None:
        config = config_from_timm_layout(layout, heads)
        model = _build(config, timm_state_dict_to_hf_vit(state_dict))
        name = timm_model or f"ViT ({layout['embed_dim']} wide, {heads} heads)"
        reference = lambda: _timm_forward(_timm_reference(layout, heads, state_dict), layout["num_classes"] > 0)  # noqa: E731
    elif timm_model is not None:
        timm = _require("timm", "--timm_model")
        kwargs = dict(
            num_classes=layout["num_classes"], global_pool=layout["global_pool"], class_token=layout["class_token"],
            reg_tokens=layout["reg_tokens"], no_embed_class=layout["no_embed_class"], depth=layout["depth"],
            init_values=layout["layerscale_init"], img_size=layout["img_size"], in_chans=layout["in_chans"],
        )
        try:
            source_model = timm.create_model(timm_model, pretrained=False, **kwargs)
        except RuntimeError as error:
            raise ValueError(f"timm does not know the model {timm_model!r} ({error})") from None
        except TypeError as error:
            raise ValueError(f"timm model {timm_model!r} is not a plain VisionTransformer ({error})") from None
        _check_fits(state_dict, source_model.state_dict(), f"timm's {timm_model}")
        source_model.load_state_dict(state_dict, strict=True)
        source_model.eval()
        model = from_timm(source_model)
        cfg = getattr(source_model, "pretrained_cfg", None) or {}
        if not (path.is_dir() and (path / "config.json").is_file()):
            mean, std = tuple(cfg.get("mean", mean)), tuple(cfg.get("std", std))
        name = timm_model
        reference = lambda: _timm_forward(source_model, layout["num_classes"] > 0)  # noqa: E731
    else:
        raise ValueError(
            "the number of attention heads cannot be read from a timm state dict: pass --timm_model "
            "(e.g. vit_small_patch16_224), --preset or --num_heads"
        )
    variants = [f"depth {layout['depth']}", f"{layout['img_size']}px"]
    if layout["reg_tokens"]:
        variants.append(f"{layout['reg_tokens']} register tokens")
    if layout["layerscale_init"] is not None:
        variants.append("LayerScale")
    if layout["no_embed_class"]:
        variants.append("no position embedding for prefix tokens (no_embed_class)")
    if layout["global_pool"] == "avg":
        variants.append("average pooling with fc_norm")
    return Conversion(
        model=model,
        source=f"timm `{name}`",
        details=f"Converted from a timm `{name}` state dict ({', '.join(variants)}) with hf_vit's converter. "
        "Position embeddings are resized with antialiasing, as timm does.",
        image_mean=mean, image_std=std, reference=reference, reference_name="timm",
    )


# Heads of timm's vit_* families by width (tiny/small/base/large/huge/giant, DINOv2 and reg4 variants), for timm
# folders read without timm installed: head width is 64 everywhere but DINOv2-giant (1536 wide, 24 heads).
TIMM_HEADS_BY_WIDTH = {192: 3, 384: 6, 512: 8, 640: 10, 768: 12, 1024: 16, 1152: 16, 1280: 16, 1408: 16, 1536: 24, 1664: 16}
# timm weight names that are a feature hf_vit does not implement -> the feature, for a one-line refusal
TIMM_UNSUPPORTED_KEYS = (
    (r"^norm_pre\.", "a CLIP-style pre-norm before the blocks (norm_pre)"),
    (r"^attn_pool\.", "a MAP attention-pooling head (attn_pool)"),
    (r"^dist_token$", "a distillation token (dist_token, DeiT distilled)"),
    (r"^head_dist\.", "a distillation head (head_dist)"),
    (r"\.attn\.(q_norm|k_norm)\.", "normalisation of queries and keys (qk_norm)"),
    (r"\.attn\.norm\.", "normalisation inside attention (scale_attn_norm)"),
    (r"\.mlp\.norm\.", "normalisation inside the MLP (scale_mlp_norm)"),
    (r"^patch_embed\.norm\.", "a norm after the patch embedding (patch_embed.norm)"),
    (r"^head\.fc\.|^head_drop|^head\.norm\.", "a non-linear classifier head"),
)
# PIL resampling codes of timm's interpolation names
_PIL_RESAMPLE = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}


def refuse_unsupported_timm_keys(state_dict: dict[str, torch.Tensor], what: str = "this timm model") -> None:
    found = []
    for pattern, feature in TIMM_UNSUPPORTED_KEYS:
        if any(re.search(pattern, key) for key in state_dict) and feature not in found:
            found.append(feature)
    if found:
        raise ValueError(f"cannot convert {what}: it has {'; '.join(found)}, which hf_vit does not implement")


def timm_image_processor(pretrained_cfg: dict):
    """A transformers image processor reproducing timm's eval transform for `pretrained_cfg`: resize the shortest
    edge to floor(size / crop_pct), centre-crop to `input_size` (crop_mode "center"; BitImageProcessor), or resize
    to exactly floor(size / crop_pct) and centre-crop ("squash"; DeiTImageProcessor); then timm's mean/std."""
    from transformers import BitImageProcessor, DeiTImageProcessor

    _, height, width = pretrained_cfg.get("input_size", (3, 224, 224))
    crop_pct = pretrained_cfg.get("crop_pct") or 0.875  # timm's DEFAULT_CROP_PCT
    crop_mode = pretrained_cfg.get("crop_mode") or "center"
    interpolation = pretrained_cfg.get("interpolation") or "bicubic"
    if interpolation not in _PIL_RESAMPLE:
        raise ValueError(f"timm interpolation {interpolation!r} has no PIL equivalent; expected one of {', '.join(_PIL_RESAMPLE)}")
    common = dict(
        resample=_PIL_RESAMPLE[interpolation], do_center_crop=True, crop_size={"height": height, "width": width},
        do_rescale=True, do_normalize=True, image_mean=list(pretrained_cfg.get("mean", IMAGENET_MEAN)),
        image_std=list(pretrained_cfg.get("std", IMAGENET_STD)),
    )
    scale = (math.floor(height / crop_pct), math.floor(width / crop_pct))
    if crop_mode == "center" and scale[0] == scale[1]:
        return BitImageProcessor(size={"shortest_edge": scale[0]}, do_convert_rgb=True, **common)
    if crop_mode in ("squash", "center"):  # center with a non-square target: timm keeps the ratio, this squashes
        return DeiTImageProcessor(size={"height": scale[0], "width": scale[1]}, **common)
    raise ValueError(f"timm crop_mode {crop_mode!r} has no transformers image processor equivalent (expected center or squash)")


def convert_timm_folder(path) -> Conversion:
    """A timm folder as timm's `save_for_hf` / `push_to_hf_hub` write it (config.json with `architecture`,
    `num_classes`, `global_pool`, `pretrained_cfg`, optional `model_args` / `label_names`; model.safetensors or
    pytorch_model.bin) -> hf_vit. With timm installed the model is built by timm's own registry (so features that do
    not show in the weights, such as the activation, are checked); without, the heads come from `model_args` or
    TIMM_HEADS_BY_WIDTH."""
    path = Path(path)
    config_file = path / "config.json"
    timm_config = json.loads(config_file.read_text())
    architecture = timm_config.get("architecture")
    if not architecture:
        raise ValueError(f"{config_file} is not a timm config (no 'architecture')")
    if not str(architecture).startswith("vit_"):
        raise ValueError(f"timm architecture {architecture!r} is not a plain ViT (vit_*); hf_vit converts timm's VisionTransformer")
    pretrained_cfg = dict(timm_config.get("pretrained_cfg") or {})
    model_args = dict(timm_config.get("model_args") or {})
    state_dict = strip_wrapper_prefixes(load_weights(path))
    refuse_unsupported_timm_keys(state_dict, f"timm {architecture}")
    try:
        import timm
    except ImportError:
        timm = None
    if timm is not None:
        kwargs = {**model_args, "num_classes": timm_config.get("num_classes", model_args.get("num_classes", 0))}
        if timm_config.get("global_pool") is not None:
            kwargs["global_pool"] = timm_config["global_pool"]
        try:
            source_model = timm.create_model(architecture, pretrained=False, **kwargs)
        except RuntimeError as error:
            raise ValueError(f"timm does not know the model {architecture!r} ({str(error).splitlines()[0]})") from None
        except TypeError as error:
            raise ValueError(f"timm model {architecture!r} is not a plain VisionTransformer ({error})") from None
        _check_fits(state_dict, source_model.state_dict(), f"timm's {architecture} with the folder's model_args")
        source_model.load_state_dict(state_dict, strict=True)
        model = from_timm(source_model.eval())
        how = "built by timm's model registry"
    else:
        timm_state_dict_to_hf_vit(state_dict)
        layout = timm_layout_from_state_dict(state_dict)
        heads = model_args.get("num_heads") or TIMM_HEADS_BY_WIDTH.get(layout["embed_dim"])
        if heads is None:
            raise ValueError(f"width {layout['embed_dim']} is not one of timm's vit_* widths ({', '.join(map(str, TIMM_HEADS_BY_WIDTH))}): install timm")
        if "clip" in architecture or "siglip" in architecture:
            raise ValueError(f"timm {architecture}: CLIP/SigLIP ViTs use quick_gelu or a MAP head, which hf_vit does not implement")
        model = _build(config_from_timm_layout(layout, heads), timm_state_dict_to_hf_vit(state_dict))
        how = "read from the weights (timm not installed)"
    label_names = timm_config.get("label_names")
    if isinstance(model, HfViTForImageClassification) and label_names and len(label_names) == model.config.num_labels:
        model.config.id2label = {i: str(name) for i, name in enumerate(label_names)}
        model.config.label2id = {str(name): i for i, name in enumerate(label_names)}
    has_head = isinstance(model, HfViTForImageClassification)

    def reference():  # timm's own loader, reading the same folder
        timm_module = _require("timm", "verify")
        return _timm_forward(timm_module.create_model(f"local-dir:{path}", pretrained=True).eval(), has_head)

    processor = timm_image_processor(pretrained_cfg)
    return Conversion(
        model=model, source=f"timm `{architecture}`",
        details=f"Converted from a timm `{architecture}` folder (config.json + weights; architecture {how}) with "
        "hf_vit's converter. Position embeddings are resized with antialiasing, as timm does. The image processor "
        f"reproduces timm's eval transform (input {processor.crop_size['height']}×{processor.crop_size['width']}, "
        f"crop_pct {pretrained_cfg.get('crop_pct') or 0.875}, {pretrained_cfg.get('interpolation') or 'bicubic'}).",
        image_mean=tuple(processor.image_mean), image_std=tuple(processor.image_std), resample=processor.resample,
        reference=reference, reference_name="timm", image_processor=processor,
    )


def dino_backbone_state_dict(obj, path, checkpoint_key: str = "teacher") -> tuple[dict, list[str]]:
    """The backbone weights of a DINO checkpoint: a training checkpoint ({"teacher": ..., "student": ...} with
    `module.` / `backbone.` prefixes; the DINO projection head is dropped) or plain backbone weights."""
    if is_state_dict(obj):
        state_dict = obj
    elif isinstance(obj, dict) and isinstance(obj.get(checkpoint_key), dict):
        state_dict = obj[checkpoint_key]
    elif isinstance(obj, dict) and any(isinstance(obj.get(k), dict) for k in ("state_dict", "model")):
        state_dict = unwrap_state_dict(obj, path)
    else:
        keys = ", ".join(sorted(map(str, obj))[:8]) if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(
            f"{path} has no {checkpoint_key!r} entry: DINO training checkpoints hold 'teacher' and 'student' dicts "
            f"(choose with --checkpoint_key), plain backbone weights are a dict of tensors; found: {keys}"
        )
    state_dict = strip_wrapper_prefixes({k: v for k, v in state_dict.items() if isinstance(v, torch.Tensor)})
    dropped = []
    if any(key.startswith("backbone.") for key in state_dict):
        dropped = [key for key in state_dict if not key.startswith("backbone.")]
        state_dict = {key[len("backbone."):]: v for key, v in state_dict.items() if key.startswith("backbone.")}
    return state_dict, dropped


def convert_dino_file(path, checkpoint_key: str = "teacher", num_heads: int | None = None, preset: str | None = None) -> Conversion:
    path = Path(path)
    files = weight_files_in(path) if path.is_dir() else [path]
    obj = load_safetensors(files[0]) if files[0].suffix == ".safetensors" else load_pickle(files[0])
    state_dict, dropped = dino_backbone_state_dict(obj, files[0], checkpoint_key)
    timm_state_dict_to_hf_vit(state_dict)
    layout = timm_layout_from_state_dict(state_dict)
    heads = _heads(layout["embed_dim"], num_heads, preset) or DINO_HEADS.get(layout["embed_dim"])
    if heads is None:
        raise ValueError(
            f"width {layout['embed_dim']} is not one of DINO's ViTs (tiny 192, small 384, base 768): pass --num_heads"
        )
    config = config_from_timm_layout(layout, heads, interpolate_antialias=False)
    model = _build(config, timm_state_dict_to_hf_vit(state_dict))
    height = layout["img_size"]
    note = (
        f"Outputs match DINO's at the native size ({height}×{height}). At other sizes hf_vit resizes the position "
        "embeddings to the target grid (transformers' convention, no antialiasing), while DINO's original code "
        "resizes by a scale factor with a +0.1 offset, so resized outputs differ slightly."
    )
    kept = "" if not dropped else f" The DINO projection head ({len(dropped)} tensors) was dropped."
    return Conversion(
        model=model,
        source="DINO",
        details=f"Converted from a DINO ViT backbone ({layout['embed_dim']} wide, depth {layout['depth']}, {heads} heads, "
        f"patch {layout['patch_size']}; checkpoint entry {checkpoint_key!r} if a training checkpoint).{kept} {note}",
        reference=lambda: _timm_forward(_timm_reference(layout, heads, state_dict), layout["num_classes"] > 0),
        reference_name="timm VisionTransformer in DINO's shape",
        notes=[note],
    )


def convert_transformers_folder(path) -> Conversion:
    """A transformers `ViTModel` / `ViTForImageClassification` folder (v4 or v5 key names) -> hf_vit."""
    path = Path(path)
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ValueError(f"--source transformers expects a folder with config.json and the weights; {path} is not one")
    model_type = json.loads((path / "config.json").read_text()).get("model_type")
    if model_type in DINOV2_MODEL_TYPES:
        return convert_dinov2_folder(path)
    if model_type == "deit":
        raise ValueError(f"{path / 'config.json'} is a distilled DeiT (model_type 'deit'): its distillation token has no "
                         "hf_vit equivalent (the non-distilled facebook/deit-* models are model_type 'vit' and convert)")
    if model_type != "vit":
        raise ValueError(f"{path / 'config.json'} has model_type {model_type!r}; --source transformers converts 'vit', "
                         "'dinov2' and 'dinov2_with_registers' models")
    from transformers import ViTConfig

    vit_config = ViTConfig.from_pretrained(path)
    state_dict = transformers_state_dict_to_hf_vit(strip_wrapper_prefixes(load_weights(path)))
    model = _build(config_from_transformers(vit_config), state_dict)
    mean, std = GOOGLE_MEAN, GOOGLE_STD
    resample = 2
    if (path / "preprocessor_config.json").is_file():
        processor = json.loads((path / "preprocessor_config.json").read_text())
        mean, std = tuple(processor.get("image_mean", mean)), tuple(processor.get("image_std", std))
        resample = processor.get("resample", resample)
    has_head = isinstance(model, HfViTForImageClassification)

    def reference():
        from transformers import ViTForImageClassification, ViTModel

        source = (ViTForImageClassification.from_pretrained(path) if has_head
                  else ViTModel.from_pretrained(path, add_pooling_layer=False)).eval()
        if has_head:
            return lambda x: {"logits": source(x).logits}
        return lambda x: {"last_hidden_state": source(x).last_hidden_state}

    return Conversion(
        model=model, source="transformers ViT",
        details="Converted from a transformers ViT checkpoint with hf_vit's converter (q/k/v fused into one qkv). "
        "Position embeddings are resized without antialiasing, as transformers does.",
        image_mean=mean, image_std=std, resample=resample, reference=reference, reference_name="transformers",
        image_processor=_source_processor(path),
    )


def _source_processor(path: Path):
    """The folder's own image processor (its preprocessor_config.json), or None."""
    if not (path / "preprocessor_config.json").is_file():
        return None
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(path)


def convert_dinov2_folder(path) -> Conversion:
    """A transformers `Dinov2Model` / `Dinov2WithRegistersModel` folder (v4 or v5 names) -> an hf_vit backbone (the
    mask token kept)."""
    from transformers import AutoConfig

    path = Path(path)
    dinov2_config = AutoConfig.from_pretrained(path)
    state_dict = dinov2_state_dict_to_hf_vit(strip_wrapper_prefixes(load_weights(path)))
    model = _build(config_from_dinov2(dinov2_config), state_dict)
    processor = _source_processor(path)
    name = "DINOv2 with registers" if dinov2_config.model_type == "dinov2_with_registers" else "DINOv2"

    def reference():
        from transformers import AutoModel

        source = AutoModel.from_pretrained(path).eval()

        def forward(x):
            out = source(x)
            return {"last_hidden_state": out.last_hidden_state, "pooler_output": out.pooler_output}

        return forward

    return Conversion(
        model=model, source=f"transformers {name}",
        details=f"Converted from a transformers {name} checkpoint with hf_vit's converter (q/k/v fused into one qkv"
        + (", SwiGLU gate and value packed into one fc1" if dinov2_config.use_swiglu_ffn else "")
        + "; the mask token kept). Position embeddings are resized "
        + ("with" if dinov2_config.model_type == "dinov2_with_registers" else "without")
        + " antialiasing, as transformers does for this model.",
        image_mean=tuple(processor.image_mean) if processor else IMAGENET_MEAN,
        image_std=tuple(processor.image_std) if processor else IMAGENET_STD,
        reference=reference, reference_name="transformers", image_processor=processor,
    )


# --- Google .npz (vit_jax and big_vision layouts) ------------------------------------------------------------------
NPZ_PREFIXES = ("", "opt/target/", "params/", "params/img/")
NPZ_EXPECTED = (
    "embedding/{kernel,bias}, cls, Transformer/posembed_input/pos_embedding (vit_jax) or pos_embedding (big_vision), "
    "Transformer/encoderblock_N/{LayerNorm_0,MultiHeadDotProductAttention_1,LayerNorm_2,MlpBlock_3}/... (vit_jax) or "
    "Transformer/encoderblock[_N]/{LayerNorm_0,MultiHeadDotProductAttention_0,LayerNorm_1,MlpBlock_0}/... (big_vision), "
    "Transformer/encoder_norm/{scale,bias}, [head/{kernel,bias}] (optionally under params/ or opt/target/)"
)


def npz_to_hf_vit(weights: dict, path="the .npz") -> tuple[HfViTConfig, dict[str, torch.Tensor], str]:
    """A Google ViT `.npz` ({name: array}) -> (config, hf_vit state dict, layout name). Heads are read from the
    (D, heads, head_dim) attention kernels, so nothing needs to be given."""
    prefix = next((p for p in NPZ_PREFIXES if f"{p}embedding/kernel" in weights), None)
    if prefix is None:
        raise ValueError(
            f"{path} is not a ViT .npz in the vit_jax or big_vision layout: no embedding/kernel (first keys: "
            f"{', '.join(list(weights)[:5])}); expected {NPZ_EXPECTED}"
        )
    scan = f"{prefix}Transformer/encoderblock/LayerNorm_0/scale" in weights
    big_vision = prefix.startswith("params/") or f"{prefix}pos_embedding" in weights or scan
    used: set[str] = set()

    def get(name):
        key = prefix + name
        if key not in weights:
            raise ValueError(f"{path} lacks {key} (layout {'big_vision' if big_vision else 'vit_jax'}); expected {NPZ_EXPECTED}")
        used.add(key)
        return torch.from_numpy(weights[key].astype("float32") if weights[key].dtype.kind == "f" else weights[key])

    for unsupported, what in (("MAPHead_0/probe", "a MAP attention-pooling head"), ("pre_logits/kernel", "a pre-logits representation layer")):
        if prefix + unsupported in weights:
            raise ValueError(f"{path} has {what} ({prefix}{unsupported}); hf_vit has no equivalent")
    if prefix + "cls" not in weights:
        raise ValueError(f"{path} has no class token ({prefix}cls): a 'gap'/'map'-pooled model; hf_vit needs a [CLS] token")

    kernel = get("embedding/kernel")  # (P, P, C, D)
    patch, _, channels, hidden = kernel.shape
    sd = {
        "vit.embeddings.patch_embeddings.projection.weight": kernel.permute(3, 2, 0, 1),
        "vit.embeddings.patch_embeddings.projection.bias": get("embedding/bias"),
        "vit.embeddings.cls_token": get("cls").reshape(1, 1, hidden),
    }
    pos = get("pos_embedding" if big_vision else "Transformer/posembed_input/pos_embedding").reshape(1, -1, hidden)
    if _square_side(pos.shape[1]):
        side, cls_pos = _square_side(pos.shape[1]), False
    elif _square_side(pos.shape[1] - 1):
        side, cls_pos = _square_side(pos.shape[1] - 1), True
    else:
        raise ValueError(f"{path}: {pos.shape[1]} position embeddings are neither a square grid nor one plus a square grid")
    sd["vit.embeddings.position_embeddings"] = pos

    if scan:
        depth = weights[f"{prefix}Transformer/encoderblock/LayerNorm_0/scale"].shape[0]
        blocks = [("Transformer/encoderblock/", i) for i in range(depth)]
    else:
        depth = _block_count(weights, re.escape(prefix) + r"Transformer/encoderblock_(\d+)/")
        blocks = [(f"Transformer/encoderblock_{i}/", None) for i in range(depth)]
    if depth == 0:
        raise ValueError(f"{path} has no Transformer/encoderblock entries; expected {NPZ_EXPECTED}")
    first = blocks[0][0]
    mha, mlp_block, ln2 = (0, 0, 1) if f"{prefix}{first}MultiHeadDotProductAttention_0/query/kernel" in weights else (1, 3, 2)
    heads = None
    for layer, (block, index) in enumerate(blocks):
        def block_get(name, block=block, index=index):
            tensor = get(block + name)
            return tensor[index] if index is not None else tensor

        out = f"vit.encoder.layers.{layer}."
        attn = f"MultiHeadDotProductAttention_{mha}/"
        q = [block_get(f"{attn}{n}/kernel") for n in ("query", "key", "value")]  # (D, heads, head_dim)
        heads = q[0].shape[1]
        sd[out + "attention.qkv.weight"] = torch.cat([k.reshape(hidden, -1).T for k in q])
        sd[out + "attention.qkv.bias"] = torch.cat([block_get(f"{attn}{n}/bias").reshape(-1) for n in ("query", "key", "value")])
        sd[out + "attention.proj.weight"] = block_get(f"{attn}out/kernel").reshape(-1, hidden).T  # (heads, hd, D)
        sd[out + "attention.proj.bias"] = block_get(f"{attn}out/bias")
        for ln, name in ((0, "norm1"), (ln2, "norm2")):
            sd[out + f"{name}.weight"] = block_get(f"LayerNorm_{ln}/scale")
            sd[out + f"{name}.bias"] = block_get(f"LayerNorm_{ln}/bias")
        for r in range(2):
            sd[out + f"mlp.fc{r + 1}.weight"] = block_get(f"MlpBlock_{mlp_block}/Dense_{r}/kernel").T
            sd[out + f"mlp.fc{r + 1}.bias"] = block_get(f"MlpBlock_{mlp_block}/Dense_{r}/bias")
    sd["vit.layernorm.weight"] = get("Transformer/encoder_norm/scale")
    sd["vit.layernorm.bias"] = get("Transformer/encoder_norm/bias")
    num_labels = 1
    if prefix + "head/kernel" in weights:
        sd["classifier.weight"] = get("head/kernel").T
        sd["classifier.bias"] = get("head/bias")
        num_labels = sd["classifier.weight"].shape[0]
    leftover = [key for key in weights if key.startswith(prefix) and key not in used and not key.startswith("opt/state")]
    if leftover:
        raise ValueError(f"{path}: {len(leftover)} array(s) have no hf_vit equivalent (first: {', '.join(leftover[:5])}); expected {NPZ_EXPECTED}")
    sd = {key: value.contiguous() for key, value in sd.items()}
    config = HfViTConfig(
        image_size=side * patch, patch_size=patch, num_channels=channels, hidden_size=hidden, num_hidden_layers=depth,
        num_attention_heads=heads, intermediate_size=sd["vit.encoder.layers.0.mlp.fc1.weight"].shape[0],
        layer_norm_eps=1e-6, qkv_bias=True, cls_position_embedding=cls_pos, interpolate_antialias=False, num_labels=num_labels,
    )
    return config, sd, ("big_vision" + (" (scanned blocks)" if scan else "")) if big_vision else "vit_jax"


def convert_npz_file(path) -> Conversion:
    config, state_dict, layout_name = npz_to_hf_vit(load_npz(path), path)
    model = _build(config, state_dict)
    has_head = isinstance(model, HfViTForImageClassification)

    def reference():  # timm's own npz loader into a timm model of the same shape
        from timm.models.vision_transformer import _load_weights

        layout = dict(
            img_size=config.image_size, patch_size=config.patch_size, in_chans=config.num_channels,
            num_classes=config.num_labels if has_head else 0, global_pool="token", embed_dim=config.hidden_size,
            depth=config.num_hidden_layers, mlp_hidden=config.intermediate_size, qkv_bias=True, layerscale_init=None,
            class_token=True, no_embed_class=not config.cls_position_embedding, reg_tokens=0,
        )
        source = _timm_reference(layout, config.num_attention_heads)
        _load_weights(source, str(path))
        return _timm_forward(source.eval(), has_head)

    return Conversion(
        model=model, source=f"a Google JAX `.npz` ({layout_name} layout)",
        details=f"Converted from a Google JAX/Flax `.npz` checkpoint in the {layout_name} layout with hf_vit's "
        "converter (architecture read from the array shapes). The MLP uses exact GELU, as timm and transformers "
        "do for these weights.",
        image_mean=GOOGLE_MEAN, image_std=GOOGLE_STD, resample=2, reference=reference,
        reference_name="timm (its own .npz loader)",
    )


def check_output_dir(output_dir, overwrite: bool = False) -> None:
    """Fail early (before any slow work) if `output_dir` cannot be written as a new checkpoint folder."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"output path {output_dir} exists and is not a folder")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise ValueError(f"output folder {output_dir} already exists and is not empty; choose another or pass --overwrite")


def _folder_model_type(path: Path) -> str | None:
    try:
        return json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def load_foreign_checkpoint(source: str, checkpoint, *, timm_model=None, preset=None, num_heads=None,
                            checkpoint_key="teacher") -> Conversion:
    path = Path(checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    # said first: otherwise each source's reader would complain about the folder as if it were a foreign one
    if path.is_dir() and _folder_model_type(path) == HfViTConfig.model_type:
        raise ValueError(f"{path} is already an hf_vit folder: nothing to convert; load it directly with "
                         "AutoModel.from_pretrained (after `import hf_vit`)")
    if source == "timm":
        return convert_timm_file(checkpoint, timm_model=timm_model, num_heads=num_heads, preset=preset)
    if source == "dino":
        return convert_dino_file(checkpoint, checkpoint_key=checkpoint_key, num_heads=num_heads, preset=preset)
    if source == "transformers":
        return convert_transformers_folder(checkpoint)
    if source == "npz":
        return convert_npz_file(checkpoint)
    raise ValueError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")


# ---------------------------------------------------------------------------------------------------------------
# Verification against the source library, and the output folder
# ---------------------------------------------------------------------------------------------------------------
def random_batch(config: HfViTConfig, batch_size: int = 2, seed: int = 0) -> torch.Tensor:
    height, width = image_size_pair(config.image_size)
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, config.num_channels, height, width, generator=generator)


def _outputs(model, x) -> dict[str, torch.Tensor]:
    if isinstance(model, HfViTForImageClassification):
        return {"logits": model(x).logits}
    out = model(x)
    return {"last_hidden_state": out.last_hidden_state, "pooler_output": out.pooler_output}


def max_abs_diff(model, reference_forward: Callable[[torch.Tensor], dict], x: torch.Tensor | None = None) -> float:
    """Max |ours - theirs| over the outputs both produce, on one random batch at the native size (fp32)."""
    x = random_batch(model.config) if x is None else x
    with torch.no_grad():
        ours = _outputs(model.eval(), x)
        theirs = reference_forward(x)
    common = [name for name in theirs if name in ours]
    if not common:
        raise RuntimeError(f"nothing to compare: the reference gives {sorted(theirs)}, hf_vit {sorted(ours)}")
    return max((ours[name] - theirs[name]).abs().max().item() for name in common)


def verify_conversion(conversion: Conversion, tolerance: float = VERIFY_TOLERANCE) -> float:
    if conversion.reference is None:
        raise ValueError("--verify: no reference implementation for this source")
    try:
        forward = conversion.reference()
    except ImportError as error:
        raise ValueError(f"--verify needs the source library installed ({error.name or error})") from None
    diff = max_abs_diff(conversion.model, forward)
    if not diff <= tolerance:
        raise ValueError(f"verification failed: max-abs-diff {diff:.3g} against {conversion.reference_name} exceeds {tolerance:g}")
    return diff


def write_hf_vit_folder(conversion: Conversion, output_dir, overwrite: bool = False, max_abs_diff: float | None = None,
                        base_model: str | None = None, model_name: str | None = None) -> Path:
    """config.json (with auto_map), model.safetensors, the code files, preprocessor_config.json and a model card
    (`base_model`: the source's Hub repo id, linked in the card's metadata); atomically (nothing is left in
    `output_dir` if any step fails)."""
    from transformers import ViTImageProcessor

    model = conversion.model
    height, width = image_size_pair(model.config.image_size)
    details = conversion.details
    if max_abs_diff is not None:
        details += f" Verified against {conversion.reference_name}: max-abs-diff {max_abs_diff:.2e} (fp32, random batch at {height}×{width})."
    output_dir = Path(output_dir)
    with atomic_directory(output_dir, overwrite=overwrite) as staging:
        model.save_pretrained(staging)
        processor = conversion.image_processor or ViTImageProcessor(
            do_resize=True, size={"height": height, "width": width}, resample=conversion.resample,
            image_mean=list(conversion.image_mean), image_std=list(conversion.image_std),
        )
        processor.save_pretrained(staging)
        card = render_model_card(
            model.config, num_parameters=count_parameters(model), model_name=model_name or output_dir.name,
            source=conversion.source, source_details=details, base_model=base_model,
        )
        write_model_card(staging, card)
    return output_dir


def convert_checkpoint(source: str, checkpoint, output_dir, *, verify: bool = False, overwrite: bool = False,
                       tolerance: float = VERIFY_TOLERANCE, **options) -> dict:
    """Convert a foreign checkpoint into an hf_vit folder; with `verify`, compare with the source library first
    (above `tolerance` nothing is written). Returns {"output_dir", "max_abs_diff", "model", "conversion"}."""
    check_output_dir(output_dir, overwrite)
    conversion = load_foreign_checkpoint(source, checkpoint, **options)
    diff = verify_conversion(conversion, tolerance) if verify else None
    folder = write_hf_vit_folder(conversion, output_dir, overwrite=overwrite, max_abs_diff=diff)
    return {"output_dir": folder, "max_abs_diff": diff, "model": conversion.model, "conversion": conversion}


# ---------------------------------------------------------------------------------------------------------------
# Export: hf_vit -> timm, hf_vit -> transformers
# ---------------------------------------------------------------------------------------------------------------
def load_hf_vit_folder(path) -> HfViTModel | HfViTForImageClassification:
    """An hf_vit folder (safetensors, or legacy weights_only pickles) as a model; no remote code is run."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model folder {path} does not exist")
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ValueError(f"expected an hf_vit folder with config.json and weights; {path} is not one")
    model_type = json.loads((path / "config.json").read_text()).get("model_type")
    if model_type != HfViTConfig.model_type:
        raise ValueError(f"{path / 'config.json'} has model_type {model_type!r}, not 'hf_vit'")
    config = HfViTConfig.from_pretrained(path)
    state_dict = strip_wrapper_prefixes(load_weights(path))
    if not any(key.startswith("vit.") for key in state_dict):  # a bare HfViTModel's names
        state_dict = {f"vit.{key}": value for key, value in state_dict.items()}
    return _build(config, state_dict)


def _classification_names(model) -> dict[str, torch.Tensor]:
    """The model's weights in classification naming, for export: the mask token (only used for masked-image
    modelling, never in an ordinary forward) is left out, as timm's and transformers' ViTs have none."""
    state_dict = model.state_dict()
    if isinstance(model, HfViTModel):
        state_dict = {f"vit.{key}": value for key, value in state_dict.items()}
    return {key: value for key, value in state_dict.items() if key != "vit.embeddings.mask_token"}


HF_VIT_TO_TIMM = [_name_rule(ours, timm) for timm, ours in _TIMM_HF_VIT_NAMES]
# timm architecture names for the standard shapes: (patch, width, depth, heads, mlp) -> name stem
_TIMM_NAMES = {
    (16, 192, 12, 3, 768): "vit_tiny_patch16", (16, 384, 12, 6, 1536): "vit_small_patch16",
    (16, 768, 12, 12, 3072): "vit_base_patch16", (32, 768, 12, 12, 3072): "vit_base_patch32",
    (16, 1024, 24, 16, 4096): "vit_large_patch16", (14, 1280, 32, 16, 5120): "vit_huge_patch14",
    (8, 384, 12, 6, 1536): "vit_small_patch8", (8, 768, 12, 12, 3072): "vit_base_patch8",
}


def hf_vit_to_timm(model) -> tuple[dict[str, torch.Tensor], str, dict]:
    """(timm state dict, timm architecture name, timm model_args) of an hf_vit model; refuses what timm's
    VisionTransformer cannot express."""
    config = model.config
    problems = []
    if config.mlp_type != "mlp":
        problems.append(f"mlp_type {config.mlp_type!r} (the export writes timm's plain GELU MLP)")
    elif config.hidden_act != "gelu":
        problems.append(f"hidden_act {config.hidden_act!r} (timm's VisionTransformer here is built with exact GELU)")
    if config.layer_norm_eps != 1e-6:
        problems.append(f"layer_norm_eps {config.layer_norm_eps:g} (timm's VisionTransformer fixes LayerNorm eps at 1e-6)")
    if config.num_register_tokens and config.cls_position_embedding:
        problems.append("register tokens while [CLS] has a position embedding (timm gives registers positions then too)")
    if problems:
        raise ValueError("cannot export to timm: " + "; ".join(problems))
    rules = HF_VIT_TO_TIMM + [(r"^vit\.layernorm\.", "norm." if config.pooling == "cls" else "fc_norm.")]
    state_dict = _rename(_classification_names(model), rules, "hf_vit")
    height, width = image_size_pair(config.image_size)
    num_classes = model.classifier.out_features if isinstance(model, HfViTForImageClassification) and isinstance(model.classifier, nn.Linear) else 0
    model_args = dict(
        img_size=height if height == width else [height, width], patch_size=config.patch_size, in_chans=config.num_channels,
        embed_dim=config.hidden_size, depth=config.num_hidden_layers, num_heads=config.num_attention_heads,
        mlp_ratio=config.intermediate_size / config.hidden_size, qkv_bias=config.qkv_bias,
        init_values=config.layerscale_init, class_token=True, no_embed_class=not config.cls_position_embedding,
        reg_tokens=config.num_register_tokens, global_pool="token" if config.pooling == "cls" else "avg",
        dynamic_img_size=True,
    )
    stem = _TIMM_NAMES.get((config.patch_size, config.hidden_size, config.num_hidden_layers,
                            config.num_attention_heads, config.intermediate_size), "vit_base_patch16")
    architecture = f"{stem}_{height}" if f"{stem}_{height}" in _known_timm_names() else "vit_base_patch16_224"
    return state_dict, architecture, model_args


def _known_timm_names() -> set[str]:
    try:
        import timm

        return set(timm.list_models("vit_*"))
    except ImportError:
        return {f"{stem}_224" for stem in _TIMM_NAMES.values()}


def _hf_vit_to_transformers_model(model):
    from transformers import ViTConfig, ViTForImageClassification, ViTModel

    config = model.config
    problems = []
    if config.num_register_tokens:
        problems.append(f"{config.num_register_tokens} register tokens (transformers' ViT has none)")
    if config.layerscale_init is not None:
        problems.append("LayerScale (transformers' ViT has none)")
    if config.pooling != "cls":
        problems.append("mean pooling (transformers' ViT pools the [CLS] token)")
    if config.mlp_type != "mlp":
        problems.append(f"mlp_type {config.mlp_type!r} (transformers' ViT has a plain MLP)")
    if not config.cls_position_embedding:
        problems.append("no position embedding for [CLS] (transformers' ViT always has one)")
    if problems:
        raise ValueError("cannot export to transformers: " + "; ".join(problems))
    vit_config = ViTConfig(
        image_size=config.image_size, patch_size=config.patch_size, num_channels=config.num_channels,
        hidden_size=config.hidden_size, num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads, intermediate_size=config.intermediate_size,
        hidden_act=config.hidden_act, hidden_dropout_prob=config.hidden_dropout_prob,
        attention_probs_dropout_prob=config.attention_probs_dropout_prob, layer_norm_eps=config.layer_norm_eps,
        qkv_bias=config.qkv_bias, initializer_range=config.initializer_range,
        id2label=dict(config.id2label), label2id=dict(config.label2id), problem_type=config.problem_type,
    )
    has_head = isinstance(model, HfViTForImageClassification)
    target = ViTForImageClassification(vit_config) if has_head else ViTModel(vit_config, add_pooling_layer=False)
    prefix = "vit." if has_head else ""
    state_dict = {}
    hidden = config.hidden_size
    for key, tensor in _classification_names(model).items():
        match = re.match(r"^vit\.encoder\.layers\.(\d+)\.(.*)$", key)
        if match:
            layer, rest = match.groups()
            out = f"{prefix}layers.{layer}."
            if rest.startswith("attention.qkv."):
                kind = rest.rsplit(".", 1)[1]
                for name, part in zip(("q", "k", "v"), tensor.split(hidden), strict=True):
                    state_dict[f"{out}attention.{name}_proj.{kind}"] = part.clone()
                continue
            rest = (rest.replace("norm1.", "layernorm_before.").replace("norm2.", "layernorm_after.")
                    .replace("attention.proj.", "attention.o_proj."))
            state_dict[out + rest] = tensor
        elif key.startswith("vit."):
            state_dict[prefix + key[len("vit."):]] = tensor
        else:
            state_dict[key] = tensor
    _check_fits(state_dict, target.state_dict(), "transformers' ViT")
    target.load_state_dict(state_dict, strict=True)
    return target.eval()


def export_to_timm(hf_vit_folder, output_dir, verify: bool = False, overwrite: bool = False,
                   tolerance: float = VERIFY_TOLERANCE) -> dict:
    """hf_vit folder -> timm folder: model.safetensors (timm names) + timm's config.json (architecture, model_args,
    pretrained_cfg), loadable with `timm.create_model("local-dir:DIR", pretrained=True)`."""
    check_output_dir(output_dir, overwrite)
    model = load_hf_vit_folder(hf_vit_folder)
    state_dict, architecture, model_args = hf_vit_to_timm(model)
    config = model.config
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    processor_file = Path(hf_vit_folder) / "preprocessor_config.json"
    if processor_file.is_file():
        processor = json.loads(processor_file.read_text())
        mean, std = processor.get("image_mean", mean), processor.get("image_std", std)
    height, width = image_size_pair(config.image_size)
    num_classes = state_dict["head.weight"].shape[0] if "head.weight" in state_dict else 0
    timm_config = {
        "architecture": architecture,
        "num_classes": num_classes,
        "num_features": config.hidden_size,
        "global_pool": model_args["global_pool"],
        "model_args": model_args,
        "pretrained_cfg": {
            "tag": "hf_vit", "custom_load": False, "input_size": [config.num_channels, height, width],
            "fixed_input_size": False, "interpolation": "bicubic", "crop_pct": 1.0, "crop_mode": "center",
            "mean": list(mean), "std": list(std), "num_classes": num_classes, "pool_size": None,
            "first_conv": "patch_embed.proj", "classifier": "head",
        },
    }
    if num_classes and config.id2label and len(config.id2label) == num_classes:
        timm_config["label_names"] = [config.id2label[i] for i in range(num_classes)]
    notes = []
    if not config.interpolate_antialias:
        notes.append("timm resizes position embeddings with antialiasing and this model without: outputs are identical "
                     "at the native size and differ slightly at other sizes")
    diff = None
    with atomic_directory(output_dir, overwrite=overwrite) as staging:
        save_safetensors_checked(state_dict, staging)
        (staging / "config.json").write_text(json.dumps(timm_config, indent=2) + "\n")
        if verify:
            timm = _require("timm", "--verify")
            source = timm.create_model(f"local-dir:{staging}", pretrained=True).eval()
            diff = max_abs_diff(model, _timm_forward(source, num_classes > 0))
            if not diff <= tolerance:
                raise ValueError(f"verification failed: max-abs-diff {diff:.3g} against timm exceeds {tolerance:g}")
    return {"output_dir": Path(output_dir), "max_abs_diff": diff, "architecture": architecture, "notes": notes}


def export_to_transformers(hf_vit_folder, output_dir, verify: bool = False, overwrite: bool = False,
                           tolerance: float = VERIFY_TOLERANCE) -> dict:
    """hf_vit folder -> transformers `ViTForImageClassification` (or `ViTModel`) folder, safetensors."""
    check_output_dir(output_dir, overwrite)
    model = load_hf_vit_folder(hf_vit_folder)
    target = _hf_vit_to_transformers_model(model)
    notes = []
    if model.config.interpolate_antialias:
        notes.append("transformers resizes position embeddings without antialiasing and this model with: outputs are "
                     "identical at the native size and differ slightly at other sizes")
    if not isinstance(model, HfViTForImageClassification):
        notes.append("ViTModel is saved without its tanh pooler (hf_vit has none); load it with add_pooling_layer=False")
    diff = None
    with atomic_directory(output_dir, overwrite=overwrite) as staging:
        target.save_pretrained(staging)  # transformers writes its v4 names on disk, for older readers
        written = transformers_state_dict_to_hf_vit(load_weights(staging))
        ours = _classification_names(model)
        if written.keys() != ours.keys() or not all(torch.equal(written[k], ours[k]) for k in ours):
            raise RuntimeError("the written transformers weights differ from the hf_vit weights")
        processor_file = Path(hf_vit_folder) / "preprocessor_config.json"
        if processor_file.is_file():
            (staging / "preprocessor_config.json").write_text(processor_file.read_text())
        if verify:
            from transformers import ViTForImageClassification, ViTModel

            if isinstance(model, HfViTForImageClassification):
                reloaded = ViTForImageClassification.from_pretrained(staging).eval()
                forward = lambda x: {"logits": reloaded(x).logits}  # noqa: E731
            else:
                reloaded = ViTModel.from_pretrained(staging, add_pooling_layer=False).eval()
                forward = lambda x: {"last_hidden_state": reloaded(x).last_hidden_state}  # noqa: E731
            diff = max_abs_diff(model, forward)
            if not diff <= tolerance:
                raise ValueError(f"verification failed: max-abs-diff {diff:.3g} against transformers exceeds {tolerance:g}")
    return {"output_dir": Path(output_dir), "max_abs_diff": diff, "notes": notes}


def export_checkpoint(target: str, hf_vit_folder, output_dir, **kwargs) -> dict:
    if target == "timm":
        return export_to_timm(hf_vit_folder, output_dir, **kwargs)
    if target == "transformers":
        return export_to_transformers(hf_vit_folder, output_dir, **kwargs)
    raise ValueError(f"unknown export target {target!r}; choose one of {', '.join(EXPORT_TARGETS)}")


# ---------------------------------------------------------------------------------------------------------------
# safetensors export of hf_vit weights (Accelerate save_state folders, .bin/.pt state dicts, legacy folders)
# ---------------------------------------------------------------------------------------------------------------
def _accelerate_weights(folder: Path, model_index: int) -> Path | None:
    names = ("model.safetensors", "pytorch_model.bin") if model_index == 0 else (
        f"model_{model_index}.safetensors", f"pytorch_model_{model_index}.bin")
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


def export_safetensors(source, output_dir, config=None, max_shard_size: int | str | None = None,
                       model_index: int = 0, overwrite: bool = False) -> dict:
    """hf_vit weights from an Accelerate `save_state` folder, a `.bin`/`.pt` state dict or an hf_vit folder with legacy
    weights -> `output_dir` with config.json (+ code files, preprocessor_config.json if found) and model.safetensors
    (sharded with an index above `max_shard_size`), metadata {"format": "pt"}; every tensor is re-read and
    compared bitwise before success is reported."""
    check_output_dir(output_dir, overwrite)
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist")
    if source.is_dir():
        is_accelerate = any(source.glob("random_states_*.pkl")) or (source / "optimizer.bin").is_file()
        if is_accelerate:
            weights_file = _accelerate_weights(source, model_index)
            if weights_file is None:
                raise ValueError(f"{source} (an Accelerate save_state folder) has no weights for model {model_index} "
                                 "(model.safetensors / pytorch_model.bin; FSDP sharded states are not supported)")
            state_dict = load_weights(weights_file)
        else:
            state_dict = load_weights(source)
    else:
        state_dict = load_weights(source)
    state_dict = strip_wrapper_prefixes(state_dict)
    config_path = Path(config) if config is not None else (source if source.is_dir() else source.parent)
    if config_path.is_dir():
        config_path = config_path / "config.json"
    if not config_path.is_file():
        raise ValueError(f"no config.json for these weights at {config_path}; pass --config (an hf_vit config.json or folder)")
    model_type = json.loads(config_path.read_text()).get("model_type")
    if model_type != HfViTConfig.model_type:
        raise ValueError(f"{config_path} has model_type {model_type!r}; export_safetensors handles hf_vit checkpoints")
    hf_config = HfViTConfig.from_json_file(str(config_path))
    bare = not any(key.startswith(("vit.", "classifier.")) for key in state_dict)
    model = (HfViTModel if bare else HfViTForImageClassification)(hf_config)
    _check_fits(state_dict, model.state_dict(), f"the hf_vit model of {config_path}")
    with atomic_directory(output_dir, overwrite=overwrite) as staging:
        model.config.save_pretrained(staging)  # writes config.json and copies configuration_hf_vit.py
        _copy_code_files(model, staging)
        files = save_safetensors_checked(state_dict, staging, max_shard_size=max_shard_size)
        processor_file = config_path.parent / "preprocessor_config.json"
        if processor_file.is_file():
            (staging / "preprocessor_config.json").write_text(processor_file.read_text())
    return {"output_dir": Path(output_dir), "files": [f.name for f in files], "num_tensors": len(state_dict)}


def _copy_code_files(model, folder: Path) -> None:
    """auto_map + the two code files, as save_pretrained writes them, so trust_remote_code loading works."""
    import shutil

    from . import configuration_hf_vit, modeling_hf_vit

    for module in (configuration_hf_vit, modeling_hf_vit):
        shutil.copy(module.__file__, folder / Path(module.__file__).name)
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text())
    config["auto_map"] = {
        "AutoConfig": "configuration_hf_vit.HfViTConfig",
        "AutoModel": "modeling_hf_vit.HfViTModel",
        "AutoModelForImageClassification": "modeling_hf_vit.HfViTForImageClassification",
    }
    config["architectures"] = [type(model).__name__]
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


__all__ = [
    "Conversion",
    "config_from_timm",
    "config_from_transformers",
    "convert_checkpoint",
    "export_checkpoint",
    "export_safetensors",
    "export_to_timm",
    "export_to_transformers",
    "from_timm",
    "from_transformers",
    "hf_vit_to_timm",
    "load_foreign_checkpoint",
    "load_hf_vit_folder",
    "npz_to_hf_vit",
    "timm_layout_from_state_dict",
    "timm_state_dict_to_hf_vit",
    "transformers_state_dict_to_hf_vit",
    "verify_conversion",
]
