"""Size and cost of an hf_vit model: parameter count and forward FLOPs, for model cards and the benchmark."""

from __future__ import annotations

from torch import nn

from .configuration_hf_vit import HfViTConfig, image_size_pair


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def forward_flops(
    config: HfViTConfig, height: int | None = None, width: int | None = None, num_labels: int | None = None
) -> int:
    """Forward FLOPs of one image (2 per multiply-add), counting the matmuls and the patch convolution.

    Norms, softmax, GELU and additions are left out (under 1% at ViT sizes), as in the ViT/DeiT papers' GFLOPs.
    """
    native_h, native_w = image_size_pair(config.image_size)
    height, width = height or native_h, width or native_w
    patches = (height // config.patch_size) * (width // config.patch_size)
    tokens = config.num_prefix_tokens + patches
    d, inner = config.hidden_size, config.intermediate_size
    patch_embed = patches * config.num_channels * config.patch_size**2 * d
    swiglu = getattr(config, "mlp_type", "mlp") in ("swiglu", "swiglu_norm")
    mlp = 3 * d * inner if swiglu else 2 * d * inner  # SwiGLU: fc1 is D -> 2I
    per_layer = tokens * (3 * d * d + d * d + mlp) + 2 * tokens * tokens * d
    head = d * (config.num_labels if num_labels is None else num_labels)
    return 2 * (patch_embed + config.num_hidden_layers * per_layer + head)
