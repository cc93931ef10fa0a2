"""transformers DINOv3 ViT (`dinov3_vit`: DINOv3ViTModel / DINOv3ViTBackbone folders) -> hf_vit: RoPE in DINOv3's
convention and no learned position table, registers, LayerScale, the plain or gated (SwiGLU, GeGLU) MLP, the mask token
kept, separate q/k/v biases fused into one qkv (a missing bias, such as DINOv3's key, becomes zeros)."""

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

DINOV3_MODEL_TYPE = "dinov3_vit"

DINOV3_TO_HF_VIT = [
    (r"^embeddings\.cls_token$", "vit.embeddings.cls_token"),
    (r"^embeddings\.mask_token$", "vit.embeddings.mask_token"),
    (r"^embeddings\.register_tokens$", "vit.embeddings.register_tokens"),
    (r"^embeddings\.patch_embeddings\.", "vit.embeddings.patch_embeddings.projection."),
    (r"^(?:model\.)?layer\.(\d+)\.norm1\.", r"vit.encoder.layers.\1.norm1."),
    (r"^(?:model\.)?layer\.(\d+)\.norm2\.", r"vit.encoder.layers.\1.norm2."),
    (r"^(?:model\.)?layer\.(\d+)\.attention\.o_proj\.", r"vit.encoder.layers.\1.attention.proj."),
    (r"^(?:model\.)?layer\.(\d+)\.layer_scale([12])\.lambda1$", r"vit.encoder.layers.\1.layer_scale\2.lambda1"),
    (r"^(?:model\.)?layer\.(\d+)\.mlp\.down_proj\.", r"vit.encoder.layers.\1.mlp.fc2."),
    (r"^norm\.", "vit.layernorm."),
]

# q/k/v projections and the MLP's input projections (up_proj alone, or gate_proj + up_proj when gated)
_DINOV3_QKV = re.compile(r"^(?:model\.)?layer\.(\d+)\.attention\.([qkv])_proj\.(weight|bias)$")
_DINOV3_MLP_IN = re.compile(r"^(?:model\.)?layer\.(\d+)\.mlp\.(gate|up)_proj\.(weight|bias)$")

DINOV3_EXPECTED = (
    "embeddings.{cls_token,mask_token,register_tokens,patch_embeddings.*}, layer.N.{norm1,attention.{q,k,v,o}_proj,"
    "layer_scale1,norm2,mlp.{[gate_proj],up_proj,down_proj},layer_scale2}.*, norm.*"
)


def dinov3_state_dict_to_hf_vit(
    state_dict: dict[str, torch.Tensor], config: HfViTConfig, dinov3_config=None
) -> dict[str, torch.Tensor]:
    """transformers DINOv3ViTModel names -> hf_vit: q/k/v fused into one qkv (missing biases as zeros: DINOv3 has no
    key bias), gate/up packed into one fc1 (gate first), missing output / MLP biases (proj_bias, mlp_bias False) as
    zeros. With the source's `dinov3_config`, a bias it declares (query_bias, proj_bias, ...) that the weights lack
    is refused: zeros in its place would be a damaged model, not DINOv3's."""
    if dinov3_config is not None:
        _check_declared_biases(state_dict, dinov3_config)
    hidden = config.hidden_size
    parts: dict[tuple[str, str, str], dict[str, torch.Tensor]] = {}
    rest = {}
    for key, tensor in state_dict.items():
        if match := _DINOV3_QKV.match(key):
            layer, name, kind = match.groups()
            parts.setdefault(("qkv", layer, kind), {})[name] = tensor
        elif match := _DINOV3_MLP_IN.match(key):
            layer, name, kind = match.groups()
            parts.setdefault(("mlp", layer, kind), {})[name] = tensor
        else:
            rest[key] = tensor
    converted = _rename(rest, DINOV3_TO_HF_VIT, "transformers DINOv3", DINOV3_EXPECTED)
    registers = converted.get("vit.embeddings.register_tokens")
    if registers is not None and registers.numel() == 0:  # transformers keeps a (1, 0, D) parameter for no registers
        del converted["vit.embeddings.register_tokens"]
    if "vit.embeddings.mask_token" in converted:  # (1, 1, D) there, (1, D) here
        converted["vit.embeddings.mask_token"] = converted["vit.embeddings.mask_token"].reshape(1, hidden)
    gated = config.mlp_type == "swiglu"
    for layer in range(config.num_hidden_layers):
        prefix = f"vit.encoder.layers.{layer}"
        weights = parts.get(("qkv", str(layer), "weight"), {})
        if set(weights) != {"q", "k", "v"}:
            raise ValueError(f"layer {layer} has q/k/v weights for {sorted(weights)} only; expected q, k and v")
        converted[f"{prefix}.attention.qkv.weight"] = cat([weights[name] for name in "qkv"])
        biases = parts.get(("qkv", str(layer), "bias"), {})
        if config.qkv_bias:
            zeros = weights["q"].new_zeros(hidden)
            converted[f"{prefix}.attention.qkv.bias"] = cat([biases.get(name, zeros) for name in "qkv"])
        names = ("gate", "up") if gated else ("up",)
        for kind in ("weight", "bias"):
            found = parts.get(("mlp", str(layer), kind), {})
            if kind == "bias" and not found:
                found = {name: weights["q"].new_zeros(config.intermediate_size) for name in names}
            if set(found) != set(names):
                raise ValueError(
                    f"layer {layer} has MLP {kind} tensors for {sorted(found)}; expected {', '.join(names)}"
                )
            converted[f"{prefix}.mlp.fc1.{kind}"] = cat([found[name] for name in names])
        for name, width in ((f"{prefix}.attention.proj.bias", hidden), (f"{prefix}.mlp.fc2.bias", hidden)):
            converted.setdefault(name, weights["q"].new_zeros(width))
    return converted


# the biases a DINOv3ViTConfig declares, by its flag: the weights must then hold them (transformers would zero-fill)
_DECLARED_BIASES = {
    "query_bias": ("attention.q_proj.bias",),
    "key_bias": ("attention.k_proj.bias",),
    "value_bias": ("attention.v_proj.bias",),
    "proj_bias": ("attention.o_proj.bias",),
    "mlp_bias": ("mlp.down_proj.bias", "mlp.up_proj.bias"),
}


def _check_declared_biases(state_dict: dict[str, torch.Tensor], dinov3_config) -> None:
    """Refuse weights that lack a bias the config declares (`layer.0.attention.q_proj.bias` with query_bias=True)."""
    names = {re.sub(r"^model\.", "", key) for key in state_dict}
    for layer in range(dinov3_config.num_hidden_layers):
        for flag, biases in _DECLARED_BIASES.items():
            if not getattr(dinov3_config, flag, False):
                continue
            gated = ("mlp.gate_proj.bias",) if flag == "mlp_bias" and dinov3_config.use_gated_mlp else ()
            for bias in (*biases, *gated):
                if f"layer.{layer}.{bias}" not in names:
                    raise ValueError(
                        f"the transformers DINOv3 weights lack layer.{layer}.{bias}, which the config declares "
                        f"({flag}=True): the checkpoint is incomplete or damaged"
                    )


def config_from_dinov3(dinov3_config, **overrides) -> HfViTConfig:
    """The HfViTConfig of a transformers `DINOv3ViTConfig`; refuses what hf_vit does not represent."""
    patch_size = dinov3_config.patch_size
    if not isinstance(patch_size, int):
        if patch_size[0] != patch_size[1]:
            raise ValueError(f"hf_vit needs square patches, the DINOv3 model has {patch_size}")
        patch_size = patch_size[0]
    image_size = dinov3_config.image_size
    fields = dict(
        image_size=image_size if isinstance(image_size, int) else list(image_size),
        patch_size=patch_size,
        num_channels=dinov3_config.num_channels,
        hidden_size=dinov3_config.hidden_size,
        num_hidden_layers=dinov3_config.num_hidden_layers,
        num_attention_heads=dinov3_config.num_attention_heads,
        intermediate_size=dinov3_config.intermediate_size,
        hidden_act=dinov3_config.hidden_act,
        mlp_type="swiglu" if dinov3_config.use_gated_mlp else "mlp",
        gate_act=dinov3_config.hidden_act if dinov3_config.use_gated_mlp else "silu",  # silu: SwiGLU, gelu: GeGLU
        attention_probs_dropout_prob=float(dinov3_config.attention_dropout),
        drop_path_rate=float(dinov3_config.drop_path_rate),
        layer_norm_eps=dinov3_config.layer_norm_eps,
        qkv_bias=bool(dinov3_config.query_bias or dinov3_config.key_bias or dinov3_config.value_bias),
        layerscale_init=float(dinov3_config.layerscale_value),
        num_register_tokens=dinov3_config.num_register_tokens,
        pooling="cls",
        absolute_position_embeddings=False,
        rope_type="dinov3",
        rope_theta=float(dinov3_config.rope_theta),
        rope_shift=dinov3_config.pos_embed_shift,
        rope_jitter=dinov3_config.pos_embed_jitter,
        rope_rescale=dinov3_config.pos_embed_rescale,
        use_mask_token=True,
        initializer_range=dinov3_config.initializer_range,
        apply_layernorm=dinov3_config.apply_layernorm,
        reshape_hidden_states=dinov3_config.reshape_hidden_states,
        id2label=dict(dinov3_config.id2label or {}) or None,
        label2id=dict(dinov3_config.label2id or {}) or None,
    )
    fields.update(overrides)
    return HfViTConfig(**fields)


def from_dinov3(dinov3_model: nn.Module) -> HfViTModel:
    """An hf_vit backbone with the weights of a transformers `DINOv3ViTModel` (or `DINOv3ViTBackbone`)."""
    if type(dinov3_model).__name__ not in ("DINOv3ViTModel", "DINOv3ViTBackbone"):
        raise TypeError(f"expected a transformers DINOv3ViTModel, got {type(dinov3_model).__name__}")
    config = config_from_dinov3(dinov3_model.config)
    return _build(config, dinov3_state_dict_to_hf_vit(dinov3_model.state_dict(), config, dinov3_model.config))


def dinov3_image_processor(config: HfViTConfig):
    """DINOv3's preprocessing where the folder has none: resize to the model's size (bilinear, no crop), ImageNet
    mean/std, as transformers' `DINOv3ViTImageProcessor` defaults."""
    from transformers import ViTImageProcessor

    height, width = config.grid_size[0] * config.patch_size, config.grid_size[1] * config.patch_size
    return ViTImageProcessor(
        size={"height": height, "width": width},
        resample=2,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
    )


def convert_dinov3_folder(path) -> Conversion:
    """A transformers `DINOv3ViTModel` / `DINOv3ViTBackbone` folder -> an hf_vit backbone (the mask token kept)."""
    from transformers import AutoConfig

    path = Path(path)
    dinov3_config = AutoConfig.from_pretrained(path)
    if dinov3_config.model_type != DINOV3_MODEL_TYPE:
        raise ValueError(
            f"{path / 'config.json'} has model_type {dinov3_config.model_type!r}, not {DINOV3_MODEL_TYPE!r}"
        )
    config = config_from_dinov3(dinov3_config)
    weights = dinov3_state_dict_to_hf_vit(strip_wrapper_prefixes(lazy_state_dict(path)), config, dinov3_config)
    processor = _source_processor(path) or dinov3_image_processor(config)

    def reference():
        from transformers import AutoModel

        return _transformers_forward(AutoModel.from_pretrained(path, dtype=torch.float32).eval())

    return Conversion(
        config=config,
        weights=weights,
        source="transformers DINOv3",
        details="Converted from a transformers DINOv3 ViT checkpoint with hf_vit's converter (q/k/v fused into one "
        "qkv, the missing key bias as zeros"
        + (
            f", the gated MLP's gate ({dinov3_config.hidden_act}) and value packed into one fc1"
            if dinov3_config.use_gated_mlp
            else ""
        )
        + "; the mask token kept). Positions are DINOv3's rotary encoding (patch centres in [-1, 1], base "
        f"{dinov3_config.rope_theta:g}); there is no learned position table, so any input size works.",
        image_mean=tuple(processor.image_mean),
        image_std=tuple(processor.image_std),
        resample=processor.resample,
        reference=reference,
        reference_name="transformers",
        image_processor=processor,
    )
