"""Google JAX/Flax `.npz` checkpoints (vit_jax and big_vision layouts) -> hf_vit."""

from __future__ import annotations

import re

import torch

from ..configuration_hf_vit import HfViTConfig
from .core import (
    GOOGLE_MEAN,
    GOOGLE_STD,
    Conversion,
    LazyTensor,
    _block_count,
    _lazy_npz,
    _square_side,
    _timm_forward,
    cat,
)
from .timm import _timm_reference

# --- Google .npz (vit_jax and big_vision layouts) ------------------------------------------------------------------
NPZ_PREFIXES = ("", "opt/target/", "params/", "params/img/")


NPZ_EXPECTED = (
    "embedding/{kernel,bias}, cls, Transformer/posembed_input/pos_embedding (vit_jax) or pos_embedding (big_vision), "
    "Transformer/encoderblock_N/{LayerNorm_0,MultiHeadDotProductAttention_1,LayerNorm_2,MlpBlock_3}/... (vit_jax) or "
    "Transformer/encoderblock[_N]/{LayerNorm_0,MultiHeadDotProductAttention_0,LayerNorm_1,MlpBlock_0}/... "
    "(big_vision), "
    "Transformer/encoder_norm/{scale,bias}, [head/{kernel,bias}] (optionally under params/ or opt/target/)"
)


def npz_to_hf_vit(weights: dict, path="the .npz") -> tuple[HfViTConfig, dict[str, torch.Tensor], str]:
    """A Google ViT `.npz` ({name: array}, or {name: LazyTensor} read member by member) -> (config, hf_vit state
    dict, layout name). Heads are read from the (D, heads, head_dim) attention kernels, so nothing needs to be
    given."""
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
            raise ValueError(
                f"{path} lacks {key} (layout {'big_vision' if big_vision else 'vit_jax'}); expected {NPZ_EXPECTED}"
            )
        used.add(key)
        value = weights[key]
        if isinstance(value, LazyTensor):
            return value.apply(lambda t: t.float()) if value.is_floating_point() else value
        return torch.from_numpy(value.astype("float32") if value.dtype.kind == "f" else value)

    for unsupported, what in (
        ("MAPHead_0/probe", "a MAP attention-pooling head"),
        ("pre_logits/kernel", "a pre-logits representation layer"),
    ):
        if prefix + unsupported in weights:
            raise ValueError(f"{path} has {what} ({prefix}{unsupported}); hf_vit has no equivalent")
    if prefix + "cls" not in weights:
        raise ValueError(
            f"{path} has no class token ({prefix}cls): a 'gap'/'map'-pooled model; hf_vit needs a [CLS] token"
        )

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
        raise ValueError(
            f"{path}: {pos.shape[1]} position embeddings are neither a square grid nor one plus a square grid"
        )
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
    mha, mlp_block, ln2 = (
        (0, 0, 1) if f"{prefix}{first}MultiHeadDotProductAttention_0/query/kernel" in weights else (1, 3, 2)
    )
    heads = None
    for layer, (block, index) in enumerate(blocks):

        def block_get(name, block=block, index=index):
            tensor = get(block + name)
            return tensor[index] if index is not None else tensor

        out = f"vit.encoder.layers.{layer}."
        attn = f"MultiHeadDotProductAttention_{mha}/"
        q = [block_get(f"{attn}{n}/kernel") for n in ("query", "key", "value")]  # (D, heads, head_dim)
        heads = q[0].shape[1]
        sd[out + "attention.qkv.weight"] = cat([k.reshape(hidden, -1).T for k in q])
        sd[out + "attention.qkv.bias"] = cat(
            [block_get(f"{attn}{n}/bias").reshape(-1) for n in ("query", "key", "value")]
        )
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
    leftover = [
        key for key in weights if key.startswith(prefix) and key not in used and not key.startswith("opt/state")
    ]
    if leftover:
        raise ValueError(
            f"{path}: {len(leftover)} array(s) have no hf_vit equivalent (first: {', '.join(leftover[:5])}); "
            f"expected {NPZ_EXPECTED}"
        )
    config = HfViTConfig(
        image_size=side * patch,
        patch_size=patch,
        num_channels=channels,
        hidden_size=hidden,
        num_hidden_layers=depth,
        num_attention_heads=heads,
        intermediate_size=sd["vit.encoder.layers.0.mlp.fc1.weight"].shape[0],
        layer_norm_eps=1e-6,
        qkv_bias=True,
        cls_position_embedding=cls_pos,
        interpolate_antialias=False,
        num_labels=num_labels,
    )
    return config, sd, ("big_vision" + (" (scanned blocks)" if scan else "")) if big_vision else "vit_jax"


def convert_npz_file(path) -> Conversion:
    config, state_dict, layout_name = npz_to_hf_vit(_lazy_npz(path), path)
    has_head = "classifier.weight" in state_dict

    def reference():  # timm's own npz loader into a timm model of the same shape
        from timm.models.vision_transformer import _load_weights

        layout = dict(
            img_size=config.image_size,
            patch_size=config.patch_size,
            in_chans=config.num_channels,
            num_classes=config.num_labels if has_head else 0,
            global_pool="token",
            embed_dim=config.hidden_size,
            depth=config.num_hidden_layers,
            mlp_hidden=config.intermediate_size,
            qkv_bias=True,
            layerscale_init=None,
            class_token=True,
            no_embed_class=not config.cls_position_embedding,
            reg_tokens=0,
        )
        source = _timm_reference(layout, config.num_attention_heads)
        _load_weights(source, str(path))
        return _timm_forward(source.eval(), has_head)

    return Conversion(
        config=config,
        weights=state_dict,
        source=f"a Google JAX `.npz` ({layout_name} layout)",
        details=f"Converted from a Google JAX/Flax `.npz` checkpoint in the {layout_name} layout with hf_vit's "
        "converter (architecture read from the array shapes). The MLP uses exact GELU, as timm and transformers "
        "do for these weights.",
        image_mean=GOOGLE_MEAN,
        image_std=GOOGLE_STD,
        resample=2,
        reference=reference,
        reference_name="timm (its own .npz loader)",
    )
