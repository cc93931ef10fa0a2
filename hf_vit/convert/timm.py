"""timm ViTs -> hf_vit: model objects (`from_timm`), state dicts and timm folders (`save_for_hf` / `push_to_hf_hub`
layout), with the source's preprocessing."""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch
from torch import nn

from ..checkpoint_io import strip_wrapper_prefixes
from ..configuration_hf_vit import PRESETS, HfViTConfig
from ..fileio import read_json_object
from ..modeling_hf_vit import HfViTForImageClassification, HfViTModel
from .core import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Conversion,
    _block_count,
    _build,
    _check_fits,
    _materialized,
    _mean_abs,
    _name_rule,
    _rename,
    _require,
    _square_side,
    _timm_forward,
    lazy_state_dict,
)
from .timm_eva import config_from_timm_eva, is_timm_eva, timm_eva_state_dict_to_hf_vit

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
    ("norm_pre.", "vit.pre_layernorm."),
    ("blocks.{i}.norm1.", "vit.encoder.layers.{i}.norm1."),
    ("blocks.{i}.attn.qkv.", "vit.encoder.layers.{i}.attention.qkv."),
    ("blocks.{i}.attn.q_norm.", "vit.encoder.layers.{i}.attention.q_norm."),
    ("blocks.{i}.attn.k_norm.", "vit.encoder.layers.{i}.attention.k_norm."),
    ("blocks.{i}.attn.proj.", "vit.encoder.layers.{i}.attention.proj."),
    ("blocks.{i}.ls1.gamma", "vit.encoder.layers.{i}.layer_scale1.lambda1"),
    ("blocks.{i}.norm2.", "vit.encoder.layers.{i}.norm2."),
    ("blocks.{i}.mlp.fc1.", "vit.encoder.layers.{i}.mlp.fc1."),
    ("blocks.{i}.mlp.fc2.", "vit.encoder.layers.{i}.mlp.fc2."),
    ("blocks.{i}.ls2.gamma", "vit.encoder.layers.{i}.layer_scale2.lambda1"),
    ("head.", "classifier."),
    # global_pool="map": timm's AttentionPoolLatent (latent = the probe)
    ("attn_pool.latent", "vit.attention_pool.probe"),
    ("attn_pool.q.", "vit.attention_pool.q."),
    ("attn_pool.kv.", "vit.attention_pool.kv."),
    ("attn_pool.proj.", "vit.attention_pool.proj."),
    ("attn_pool.norm.", "vit.attention_pool.norm."),
    ("attn_pool.mlp.fc1.", "vit.attention_pool.mlp.fc1."),
    ("attn_pool.mlp.fc2.", "vit.attention_pool.mlp.fc2."),
]


TIMM_TO_HF_VIT = [_name_rule(timm, ours) for timm, ours in _TIMM_HF_VIT_NAMES] + [
    (r"^norm\.", "vit.layernorm."),  # final norm over all tokens
    (r"^fc_norm\.", "vit.layernorm."),  # norm after pooling (only one of the two exists)
]


TIMM_EXPECTED = (
    "patch_embed.proj.weight, cls_token, [reg_token], pos_embed, blocks.N.{norm1,attn.qkv,[attn.q_norm,attn.k_norm],"
    "attn.proj,[ls1.gamma],norm2,"
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
    if timm_model.global_pool not in ("token", "avg", "map"):
        unsupported.append(f"global_pool={timm_model.global_pool!r} (hf_vit pools 'token', 'avg' or 'map')")
    if getattr(timm_model, "pool_include_prefix", False):
        unsupported.append("pooling that includes the prefix tokens (hf_vit pools the patch tokens)")
    attn_pool = getattr(timm_model, "attn_pool", None)
    if attn_pool is not None:
        if attn_pool.latent_len != 1 or attn_pool.pool != "token" or getattr(attn_pool, "pos_embed", None) is not None:
            unsupported.append("an attention-pooling head with several latents or its own positions")
        if not isinstance(attn_pool.q_norm, nn.Identity) or not isinstance(attn_pool.q, nn.Linear):
            unsupported.append("an attention-pooling head with qk_norm or without a query projection")
        if type(block.mlp).__name__ != "Mlp" or attn_pool.mlp.fc1.out_features != block.mlp.fc1.out_features:
            unsupported.append("an attention-pooling MLP unlike the blocks' (hf_vit's head reuses their MLP shape)")
    final_norm_layer = timm_model.fc_norm if not isinstance(timm_model.fc_norm, nn.Identity) else timm_model.norm
    if isinstance(final_norm_layer, nn.Identity):
        unsupported.append("no final norm (final_norm=False)")
    pre_norm = not isinstance(timm_model.norm_pre, nn.Identity)
    if pre_norm and not isinstance(timm_model.norm_pre, nn.LayerNorm):
        unsupported.append(f"a {type(timm_model.norm_pre).__name__} pre-norm (hf_vit's pre-norm is a LayerNorm)")
    if timm_model.num_reg_tokens and not timm_model.no_embed_class:
        unsupported.append("register tokens with position embeddings (hf_vit registers have none, as DINOv2)")
    qk_norm = not isinstance(block.attn.q_norm, nn.Identity)
    if qk_norm and not isinstance(block.attn.q_norm, nn.LayerNorm):
        unsupported.append(f"{type(block.attn.q_norm).__name__} query/key norms (hf_vit's qk_norm is a LayerNorm)")
    if not isinstance(getattr(block.attn, "norm", nn.Identity()), nn.Identity):
        unsupported.append("normalisation inside attention (scale_attn_norm)")
    swiglu = type(block.mlp).__name__ == "GluMlp"  # timm's SwiGLUPacked (DINOv2-giant)
    activation = "gelu"
    if swiglu:
        if not isinstance(block.mlp.act, nn.SiLU) or block.mlp.gate_last:
            unsupported.append(
                f"gated MLP with {block.mlp.act} gating the last half (hf_vit's SwiGLU is SiLU on the first half)"
            )
    elif type(block.mlp).__name__ != "Mlp":
        unsupported.append(f"MLP layer {type(block.mlp).__name__} (hf_vit has timm's Mlp and SwiGLUPacked)")
    elif type(block.mlp.act).__name__ == "QuickGELU":  # CLIP's x·sigmoid(1.702x), transformers' "quick_gelu"
        activation = "quick_gelu"
    elif type(block.mlp.act).__name__ == "GELUTanh" or getattr(block.mlp.act, "approximate", None) == "tanh":
        activation = "gelu_pytorch_tanh"  # timm's SigLIP ViTs (act_layer="gelu_tanh")
    elif not isinstance(block.mlp.act, nn.GELU) or block.mlp.act.approximate != "none":
        unsupported.append(f"MLP activation {block.mlp.act} (hf_vit converts exact GELU, QuickGELU and SwiGLU)")
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
        hidden_act=activation,
        pre_norm=pre_norm,
        patch_embedding_bias=timm_model.patch_embed.proj.bias is not None,
        layer_norm_eps=block.norm1.eps,
        qkv_bias=block.attn.qkv.bias is not None,
        qk_norm=qk_norm,
        layerscale_init=_mean_abs(layerscale.gamma) if hasattr(layerscale, "gamma") else None,
        num_register_tokens=timm_model.num_reg_tokens,
        pooling={"token": "cls", "avg": "mean", "map": "map"}[timm_model.global_pool],
        cls_position_embedding=not timm_model.no_embed_class,
        interpolate_antialias=True,  # timm's resample_abs_pos_embed antialiases
        num_labels=max(num_classes, 1),
        class_token=bool(timm_model.has_class_token),
        # timm's fc_norm normalises the pooled feature, its norm every token
        final_norm="pooled" if not isinstance(timm_model.fc_norm, nn.Identity) else "tokens",
    )
    fields.update(overrides)
    return HfViTConfig(**fields)


def from_timm(timm_model: nn.Module) -> HfViTModel | HfViTForImageClassification:
    """An hf_vit model with the timm model's weights: a classifier if it has a head, else the backbone."""
    config = config_from_timm(timm_model)
    return _build(config, timm_state_dict_to_hf_vit(timm_model.state_dict()))


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
        raise ValueError(
            f"patch_embed.proj.weight must be a square Conv2d kernel (D, C, P, P), got {tuple(proj.shape)}"
        )
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
    # an fc_norm (norm after pooling) or no [CLS] means average pooling; attn_pool is attention pooling
    global_pool = "avg" if "fc_norm.weight" in state_dict or not has_cls else "token"
    if "attn_pool.latent" in state_dict:
        global_pool = "map"
    fc1_out, fc2_in = state_dict["blocks.0.mlp.fc1.weight"].shape[0], state_dict["blocks.0.mlp.fc2.weight"].shape[1]
    return dict(
        img_size=side * patch,
        patch_size=patch,
        in_chans=in_chans,
        embed_dim=embed_dim,
        depth=_block_count(state_dict, r"blocks\.(\d+)\."),
        mlp_hidden=fc1_out,
        swiglu=fc1_out == 2 * fc2_in,  # timm's SwiGLUPacked: fc1 holds gate and value
        pre_norm="norm_pre.weight" in state_dict,
        qkv_bias="blocks.0.attn.qkv.bias" in state_dict,
        qk_norm="blocks.0.attn.q_norm.weight" in state_dict,
        class_token=has_cls,
        reg_tokens=reg_tokens,
        no_embed_class=no_embed_class,
        layerscale_init=_mean_abs(gamma) if gamma is not None else None,
        global_pool=global_pool,
        fc_norm="fc_norm.weight" in state_dict,
        num_classes=state_dict["head.weight"].shape[0] if "head.weight" in state_dict else 0,
    )


def config_from_timm_layout(layout: dict, num_heads: int, *, advice: str | None = None, **overrides) -> HfViTConfig:
    """`advice`: what the caller can do about what the weights alone do not say (default: the converters' own
    parameters)."""
    if layout.get("pre_norm"):
        raise ValueError(
            "the checkpoint has a CLIP-style pre-norm (norm_pre): its MLP activation (quick_gelu or gelu) "
            "cannot be read from the weights; "
            + (
                advice
                or "convert it through timm's model registry (a timm folder with config.json, or `timm_model`, "
                "with timm installed)"
            )
        )
    if layout["global_pool"] == "map":
        raise ValueError(
            "the checkpoint has an attention-pooling head (attn_pool): its MLP activation cannot be read from the "
            "weights; convert it through timm's model registry (a timm folder with config.json, with timm installed)"
        )
    if layout["reg_tokens"] and not layout["no_embed_class"]:
        raise ValueError(
            "register tokens with position embeddings of their own: hf_vit registers have none (as DINOv2)"
        )
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
        qk_norm=layout.get("qk_norm", False),
        layerscale_init=layout["layerscale_init"],
        num_register_tokens=layout["reg_tokens"],
        pooling="cls" if layout["global_pool"] == "token" else "mean",
        cls_position_embedding=not layout["no_embed_class"],
        interpolate_antialias=True,
        num_labels=max(layout["num_classes"], 1),
        class_token=layout["class_token"],
        final_norm="pooled" if layout.get("fc_norm") else "tokens",
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
                f"preset {preset} has hidden_size {PRESETS[preset]['hidden_size']}, "
                f"but the checkpoint's width is {hidden_size}"
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
        img_size=layout["img_size"],
        patch_size=layout["patch_size"],
        in_chans=layout["in_chans"],
        num_classes=layout["num_classes"],
        global_pool=layout["global_pool"],
        fc_norm=layout.get("fc_norm"),
        embed_dim=layout["embed_dim"],
        depth=layout["depth"],
        num_heads=num_heads,
        mlp_ratio=layout["mlp_hidden"] / layout["embed_dim"],
        qkv_bias=layout["qkv_bias"],
        qk_norm=layout.get("qk_norm", False),
        init_values=layout["layerscale_init"],
        class_token=layout["class_token"],
        no_embed_class=layout["no_embed_class"],
        reg_tokens=layout["reg_tokens"],
        **swiglu,
    )
    if state_dict is not None:
        model.load_state_dict(_materialized(state_dict), strict=True)
    return model.eval()


def convert_timm_file(
    path,
    timm_model: str | None = None,
    num_heads: int | None = None,
    preset: str | None = None,
    heads_by_width: dict[int, int] | None = None,
    advice: str | None = None,
) -> Conversion:
    """A timm ViT state dict (.safetensors / .pth / .bin, or a timm folder with config.json) -> hf_vit.

    `timm_model` names the base architecture (the heads); the variants visible in the weights (registers, LayerScale,
    no_embed_class, avg pooling with fc_norm, depth, image size, classes) are read from keys and shapes.
    `heads_by_width`: the heads of a state dict named by none of those, by its width (a refusal if it has none).
    `advice`: what a refusal tells the caller to do when the weights alone do not say enough (default: pass
    `timm_model` or `num_heads`, this function's parameters).
    """
    path = Path(path)
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if (
        path.is_dir()
        and (path / "config.json").is_file()
        and timm_model is None
        and num_heads is None
        and preset is None
    ):
        return convert_timm_folder(path)
    if path.is_dir() and (path / "config.json").is_file():  # timm's own folder format (push_to_hub / local-dir)
        timm_config = read_json_object(path / "config.json")
        if "architecture" not in timm_config:
            raise ValueError(
                f"{path / 'config.json'} is not a timm config (no 'architecture'); "
                "use `source`=transformers for transformers folders"
            )
        timm_model = timm_model or timm_config["architecture"]
        if num_heads is None:
            num_heads = timm_config.get("model_args", {}).get("num_heads")
        cfg = timm_config.get("pretrained_cfg", {})
        mean, std = tuple(cfg.get("mean", mean)), tuple(cfg.get("std", std))
    state_dict = strip_wrapper_prefixes(lazy_state_dict(path))
    converted = timm_state_dict_to_hf_vit(state_dict)  # unknown layouts fail here, naming the unmatched keys
    layout = timm_layout_from_state_dict(state_dict)
    heads = _heads(layout["embed_dim"], num_heads, preset)
    if heads is None and timm_model is None and heads_by_width is not None:
        heads = heads_by_width.get(layout["embed_dim"])
        if heads is None:
            raise ValueError(
                f"{path}: a timm state dict without config.json, width {layout['embed_dim']}: the heads cannot be "
                "inferred; " + (advice or "convert it as a timm file with `timm_model` or `num_heads`")
            )
    if heads is not None:
        config = config_from_timm_layout(layout, heads, advice=advice)
        name = timm_model or f"ViT ({layout['embed_dim']} wide, {heads} heads)"
        reference = lambda: _timm_forward(_timm_reference(layout, heads, state_dict), layout["num_classes"] > 0)  # noqa: E731
    elif timm_model is not None:
        timm = _require("timm", "`timm_model`")
        kwargs = dict(
            num_classes=layout["num_classes"],
            global_pool=layout["global_pool"],
            fc_norm=layout["fc_norm"],
            class_token=layout["class_token"],
            reg_tokens=layout["reg_tokens"],
            no_embed_class=layout["no_embed_class"],
            depth=layout["depth"],
            init_values=layout["layerscale_init"],
            img_size=layout["img_size"],
            in_chans=layout["in_chans"],
        )
        try:
            with torch.device("meta"):  # the architecture only: the weights stay in the file until written
                source_model = timm.create_model(timm_model, pretrained=False, **kwargs)
        except RuntimeError as error:
            raise ValueError(f"timm does not know the model {timm_model!r} ({error})") from None
        except TypeError as error:
            raise ValueError(f"timm model {timm_model!r} is not a plain VisionTransformer ({error})") from None
        _check_fits(state_dict, source_model.state_dict(), f"timm's {timm_model}")
        config = config_from_timm(source_model, layerscale_init=layout["layerscale_init"])
        cfg = getattr(source_model, "pretrained_cfg", None) or {}
        if not (path.is_dir() and (path / "config.json").is_file()):
            mean, std = tuple(cfg.get("mean", mean)), tuple(cfg.get("std", std))
        name = timm_model

        def reference():
            source = timm.create_model(timm_model, pretrained=False, **kwargs)
            source.load_state_dict(_materialized(state_dict), strict=True)
            return _timm_forward(source.eval(), layout["num_classes"] > 0)

    else:
        raise ValueError(
            "the number of attention heads cannot be read from a timm state dict: pass `timm_model` "
            "(e.g. vit_small_patch16_224), `preset` or `num_heads`"
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
        config=config,
        weights=converted,
        source=f"timm `{name}`",
        details=f"Converted from a timm `{name}` state dict ({', '.join(variants)}) with hf_vit's converter. "
        "Position embeddings are resized with antialiasing, as timm does.",
        image_mean=mean,
        image_std=std,
        reference=reference,
        reference_name="timm",
    )


# Heads of timm's vit_* families by width (tiny/small/base/large/huge/giant, DINOv2 and reg4 variants), for timm
# folders read without timm installed: head width is 64 everywhere but DINOv2-giant (1536 wide, 24 heads).
TIMM_HEADS_BY_WIDTH = {
    192: 3,
    384: 6,
    512: 8,
    640: 10,
    768: 12,
    1024: 16,
    1152: 16,
    1280: 16,
    1408: 16,
    1536: 24,
    1664: 16,
}


# timm weight names that are a feature hf_vit does not implement -> the feature, for a one-line refusal
TIMM_UNSUPPORTED_KEYS = (
    (r"^dist_token$|^head_dist\.", "timm's distilled-DeiT layout (dist_token; transformers' distilled DeiT converts)"),
    (r"\.attn\.norm\.", "normalisation inside attention (scale_attn_norm)"),
    (r"\.mlp\.norm\.", "normalisation inside the MLP (scale_mlp_norm)"),
    (r"^patch_embed\.norm\.", "a norm after the patch embedding (patch_embed.norm)"),
    (r"^head\.fc\.|^head_drop|^head\.norm\.", "a non-linear classifier head"),
)


# PIL resampling codes of timm's interpolation names
_PIL_RESAMPLE = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}


def refuse_unsupported_timm_keys(
    state_dict: dict[str, torch.Tensor], what: str = "this timm model", supported: tuple[str, ...] = ()
) -> None:
    """A one-line refusal naming each feature of TIMM_UNSUPPORTED_KEYS the weights show (but those whose pattern is in
    `supported`)."""
    found = []
    for pattern, feature in TIMM_UNSUPPORTED_KEYS:
        if pattern in supported:
            continue
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
        raise ValueError(
            f"timm interpolation {interpolation!r} has no PIL equivalent; expected one of {', '.join(_PIL_RESAMPLE)}"
        )
    common = dict(
        resample=_PIL_RESAMPLE[interpolation],
        do_center_crop=True,
        crop_size={"height": height, "width": width},
        do_rescale=True,
        do_normalize=True,
        image_mean=list(pretrained_cfg.get("mean", IMAGENET_MEAN)),
        image_std=list(pretrained_cfg.get("std", IMAGENET_STD)),
    )
    scale = (math.floor(height / crop_pct), math.floor(width / crop_pct))
    if crop_mode == "center" and scale[0] == scale[1]:
        return BitImageProcessor(size={"shortest_edge": scale[0]}, do_convert_rgb=True, **common)
    if crop_mode in ("squash", "center"):  # center with a non-square target: timm keeps the ratio, this squashes
        return DeiTImageProcessor(size={"height": scale[0], "width": scale[1]}, **common)
    raise ValueError(
        f"timm crop_mode {crop_mode!r} has no transformers image processor equivalent (expected center or squash)"
    )


def convert_timm_folder(path) -> Conversion:
    """A timm folder as timm's `save_for_hf` / `push_to_hf_hub` write it (config.json with `architecture`,
    `num_classes`, `global_pool`, `pretrained_cfg`, optional `model_args` / `label_names`; model.safetensors or
    pytorch_model.bin) -> hf_vit. With timm installed the model is built by timm's own registry (so features that do
    not show in the weights, such as the activation, are checked); without, the heads come from `model_args` or
    TIMM_HEADS_BY_WIDTH."""
    path = Path(path)
    config_file = path / "config.json"
    timm_config = read_json_object(config_file)
    architecture = timm_config.get("architecture")
    if not architecture:
        raise ValueError(f"{config_file} is not a timm config (no 'architecture')")
    eva = is_timm_eva(str(architecture))  # EVA-02, timm's DINOv3 ports (False without timm)
    if not str(architecture).startswith("vit_") and not eva:
        raise ValueError(
            f"timm architecture {architecture!r} is neither a plain ViT (vit_*) nor an Eva (eva02_*, vit_*_dinov3, "
            "with timm installed); hf_vit converts timm's VisionTransformer and Eva"
        )
    pretrained_cfg = dict(timm_config.get("pretrained_cfg") or {})
    model_args = dict(timm_config.get("model_args") or {})
    state_dict = strip_wrapper_prefixes(lazy_state_dict(path))
    refuse_unsupported_timm_keys(state_dict, f"timm {architecture}", supported=(r"\.mlp\.norm\.",) if eva else ())
    try:
        import timm
    except ImportError:
        timm = None
    if timm is None and any(key.endswith((".attn.q_bias", ".gamma_1")) or ".rope." in key for key in state_dict):
        raise ValueError(
            f"timm {architecture} is a timm Eva model (EVA-02 / DINOv3): converting it needs timm installed"
        )
    if timm is not None:
        kwargs = {**model_args, "num_classes": timm_config.get("num_classes", model_args.get("num_classes", 0))}
        if timm_config.get("global_pool") is not None:
            kwargs["global_pool"] = timm_config["global_pool"]
        try:
            with torch.device("meta"):  # the architecture only: the weights stay in the file until written
                source_model = timm.create_model(architecture, pretrained=False, **kwargs)
        except RuntimeError as error:
            raise ValueError(f"timm does not know the model {architecture!r} ({str(error).splitlines()[0]})") from None
        except TypeError as error:
            raise ValueError(f"timm model {architecture!r} is not a plain VisionTransformer ({error})") from None
        _check_fits(state_dict, source_model.state_dict(), f"timm's {architecture} with the folder's model_args")
        gamma = state_dict.get("blocks.0.ls1.gamma", state_dict.get("blocks.0.gamma_1"))
        layerscale = {"layerscale_init": _mean_abs(gamma)} if gamma is not None else {}
        if type(source_model).__name__ == "Eva":
            config = config_from_timm_eva(source_model, **layerscale)
            weights = timm_eva_state_dict_to_hf_vit(state_dict, config)
        else:
            config = config_from_timm(source_model, **layerscale)
            weights = timm_state_dict_to_hf_vit(state_dict)
        how = "built by timm's model registry"
    else:
        timm_state_dict_to_hf_vit(state_dict)
        layout = timm_layout_from_state_dict(state_dict)
        heads = model_args.get("num_heads") or TIMM_HEADS_BY_WIDTH.get(layout["embed_dim"])
        if heads is None:
            raise ValueError(
                f"width {layout['embed_dim']} is not one of timm's vit_* widths "
                f"({', '.join(map(str, TIMM_HEADS_BY_WIDTH))}): install timm"
            )
        if "clip" in architecture or "siglip" in architecture:
            raise ValueError(
                f"timm {architecture}: CLIP/SigLIP ViTs use quick_gelu or a MAP head, which hf_vit does not implement"
            )
        config = config_from_timm_layout(layout, heads)
        weights = timm_state_dict_to_hf_vit(state_dict)
        how = "read from the weights (timm not installed)"
    label_names = timm_config.get("label_names")
    has_head = "classifier.weight" in weights
    if has_head and label_names and len(label_names) == config.num_labels:
        config.id2label = {i: str(name) for i, name in enumerate(label_names)}
        config.label2id = {str(name): i for i, name in enumerate(label_names)}

    def reference():  # timm's own loader, reading the same folder
        timm_module = _require("timm", "verify")
        return _timm_forward(timm_module.create_model(f"local-dir:{path}", pretrained=True).eval(), has_head)

    processor = timm_image_processor(pretrained_cfg)
    return Conversion(
        config=config,
        weights=weights,
        source=f"timm `{architecture}`",
        details=f"Converted from a timm `{architecture}` folder (config.json + weights; architecture {how}) with "
        "hf_vit's converter. Position embeddings are resized with antialiasing, as timm does. The image processor "
        f"reproduces timm's eval transform (input {processor.crop_size['height']}×{processor.crop_size['width']}, "
        f"crop_pct {pretrained_cfg.get('crop_pct') or 0.875}, {pretrained_cfg.get('interpolation') or 'bicubic'}).",
        image_mean=tuple(processor.image_mean),
        image_std=tuple(processor.image_std),
        resample=processor.resample,
        reference=reference,
        reference_name="timm",
        image_processor=processor,
    )
