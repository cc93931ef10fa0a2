"""transformers DINOv2 (`dinov2`, `dinov2_with_registers`) -> hf_vit: MLP or SwiGLU, registers, the mask token kept."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from ..checkpoint_io import strip_wrapper_prefixes
from ..configuration_hf_vit import HfViTConfig
from ..modeling_hf_vit import HfViTModel
from .core import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Conversion,
    _build,
    _rename,
    _source_processor,
    _transformers_forward,
    cat,
    lazy_state_dict,
)

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
_DINOV2_QKV = re.compile(
    r"^encoder\.layer\.(\d+)\.attention\.(?:attention\.(query|key|value)|([qkv])_proj)\.(weight|bias)$"
)


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
            raise ValueError(
                f"layer {layer} has {what} {kind} tensors for {sorted(found)} only; expected {', '.join(order)}"
            )
        target = "attention.qkv" if what == "qkv" else "mlp.fc1"
        converted[f"vit.encoder.layers.{layer}.{target}.{kind}"] = cat([found[name] for name in order])
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
        raise TypeError(
            f"expected a transformers Dinov2Model or Dinov2WithRegistersModel, got {type(dinov2_model).__name__}"
        )
    config = config_from_dinov2(dinov2_model.config)
    return _build(config, dinov2_state_dict_to_hf_vit(dinov2_model.state_dict()))


def convert_dinov2_folder(path) -> Conversion:
    """A transformers `Dinov2Model` / `Dinov2WithRegistersModel` folder (v4 or v5 names) -> an hf_vit backbone (the
    mask token kept)."""
    from transformers import AutoConfig

    path = Path(path)
    dinov2_config = AutoConfig.from_pretrained(path)
    weights = dinov2_state_dict_to_hf_vit(strip_wrapper_prefixes(lazy_state_dict(path)))
    config = config_from_dinov2(dinov2_config)
    processor = _source_processor(path)
    name = "DINOv2 with registers" if dinov2_config.model_type == "dinov2_with_registers" else "DINOv2"

    def reference():
        from transformers import AutoModel

        return _transformers_forward(AutoModel.from_pretrained(path, dtype=torch.float32).eval())

    return Conversion(
        config=config,
        weights=weights,
        source=f"transformers {name}",
        details=f"Converted from a transformers {name} checkpoint with hf_vit's converter (q/k/v fused into one qkv"
        + (", SwiGLU gate and value packed into one fc1" if dinov2_config.use_swiglu_ffn else "")
        + "; the mask token kept). Position embeddings are resized "
        + ("with" if dinov2_config.model_type == "dinov2_with_registers" else "without")
        + " antialiasing, as transformers does for this model.",
        image_mean=tuple(processor.image_mean) if processor else IMAGENET_MEAN,
        image_std=tuple(processor.image_std) if processor else IMAGENET_STD,
        reference=reference,
        reference_name="transformers",
        image_processor=processor,
    )
