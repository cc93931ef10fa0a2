"""What the model looks at: DINO-style [CLS] attention maps and attention rollout, at the image's own aspect ratio.

The logic behind `scripts/visualize_attention.py`:

- `input_size_for` picks the input size: the image's aspect ratio at about the pixel count the processor was made
  for, each side rounded to a multiple of the patch size (or an explicit size).
- `preprocess` runs the checkpoint's own `ViTImageProcessor` (its resize, rescale, mean and std) at that size.
- `cls_attention` takes one layer's attention of the [CLS] query over the patch tokens (the prefix keys: [CLS],
  distillation token, registers, left out), per head, reshaped to the patch grid of the actual input (non-square
  grids included); for models without [CLS], the attention each patch receives averaged over all queries.
- `threshold_mask` is DINO's mask (visualize_attention.py): sort a map, take the cumulative sum of its share of the
  mass, keep the patches that hold `threshold` of it.
- `attention_rollout` is Abnar & Zuidema (2020): average the heads, add the identity for the residual, renormalise
  the rows, multiply through the layers.
- `heatmap_image`, `overlay_image`, `mask_image` turn maps into RGB PIL images at the input's pixel size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .extras import require
from .modeling_hf_vit import check_every_patch_token


def input_size_for(image_size: tuple[int, int], reference_size: tuple[int, int], patch_size: int) -> tuple[int, int]:
    """(height, width) with the aspect ratio of `image_size` (height, width) and about the pixel count of
    `reference_size`, each side rounded to a multiple of `patch_size` (at least one patch)."""
    height, width = image_size
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    area = reference_size[0] * reference_size[1]
    scale = math.sqrt(area / (height * width))
    return (
        max(patch_size, round(height * scale / patch_size) * patch_size),
        max(patch_size, round(width * scale / patch_size) * patch_size),
    )


def processor_size(processor, default: tuple[int, int]) -> tuple[int, int]:
    """The (height, width) an image processor resizes to; `shortest_edge` counts as a square."""
    size = getattr(processor, "size", None)
    if size is None:
        return default
    get = size.get if hasattr(size, "get") else (lambda key, d=None: getattr(size, key, d))
    if get("height") and get("width"):
        return int(get("height")), int(get("width"))
    if get("shortest_edge"):
        return int(get("shortest_edge")), int(get("shortest_edge"))
    return default


def preprocess(image: Image.Image, processor, size: tuple[int, int]) -> torch.Tensor:
    """`pixel_values` (1, C, H, W) for `image` resized to `size` = (H, W) by the processor itself, with its own
    rescale factor, mean and std (center cropping, where the processor has it, is turned off)."""
    kwargs = {"size": {"height": int(size[0]), "width": int(size[1])}, "return_tensors": "pt"}
    if getattr(processor, "do_center_crop", False):
        kwargs["do_center_crop"] = False
    from .data import to_rgb  # the training scripts' conversion (convert("RGB") turns 16-bit grey almost white)

    pixel_values = processor(to_rgb(image), **kwargs)["pixel_values"]
    if tuple(pixel_values.shape[-2:]) != tuple(size):
        raise ValueError(f"the image processor returned {tuple(pixel_values.shape[-2:])}, expected {tuple(size)}")
    return pixel_values


def cls_attention(
    attention: torch.Tensor, num_prefix_tokens: int, grid_size: tuple[int, int], class_token: bool = True
) -> torch.Tensor:
    """The [CLS] query's attention over the patch keys, per head, on the patch grid.

    attention: one layer's weights (heads, tokens, tokens) or (batch, heads, tokens, tokens), tokens ordered
    [prefix tokens ([CLS], distillation, registers)..., patches...]. Returns (heads, grid_h, grid_w) (batch first if
    given). The values are the softmax weights themselves, so each head's map sums to 1 minus what [CLS] gives to the
    prefix tokens. A model without [CLS] (`class_token=False`: SigLIP, I-JEPA) has no such query: its map is the
    attention each patch receives, averaged over all queries.
    """
    num_patches = grid_size[0] * grid_size[1]
    if attention.shape[-1] != num_prefix_tokens + num_patches:
        raise ValueError(
            f"attention has {attention.shape[-1]} tokens, expected {num_prefix_tokens} prefix token(s) + "
            f"{grid_size[0]}x{grid_size[1]} patches"
        )
    to_patches = attention[..., num_prefix_tokens:]
    to_patches = to_patches[..., 0, :] if class_token else to_patches.mean(dim=-2)
    return to_patches.reshape(*to_patches.shape[:-1], *grid_size)


def threshold_mask(attention_map: torch.Tensor, threshold: float) -> torch.Tensor:
    """DINO's mask: the smallest set of patches holding `threshold` of the map's mass (per map, on the last two
    dimensions). As in DINO's visualize_attention.py: normalise, sort ascending, cumulative sum, keep the patches
    whose cumulative share is above 1 - threshold."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    grid = attention_map.shape[-2:]
    values, order = torch.sort(attention_map.reshape(-1, grid[0] * grid[1]).double(), dim=-1)
    values = values / values.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    cumulative = torch.cumsum(values, dim=-1)
    keep_sorted = cumulative > (1 - threshold)
    keep = torch.zeros_like(keep_sorted)
    keep.scatter_(-1, order, keep_sorted)
    return keep.reshape(attention_map.shape)


def attention_rollout(attentions, num_layers: int | None = None) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema, 2020) through the first `num_layers` layers (all by default).

    attentions: per layer (batch, heads, tokens, tokens). Each layer: mean over heads, + identity (the residual),
    rows renormalised to 1; the layers are multiplied, last layer on the left. Returns (batch, tokens, tokens);
    row 0 is what [CLS] ends up carrying from each input token.
    """
    layers = list(attentions)[: num_layers if num_layers is not None else None]
    if not layers:
        raise ValueError("attention rollout needs at least one layer")
    rollout = None
    for attention in layers:
        averaged = attention.double().mean(dim=1)
        averaged = averaged + torch.eye(averaged.shape[-1], dtype=averaged.dtype, device=averaged.device)
        averaged = averaged / averaged.sum(dim=-1, keepdim=True)
        rollout = averaged if rollout is None else averaged @ rollout
    return rollout


@dataclass
class AttentionMaps:
    """Maps for one image, all on the patch grid (grid_h, grid_w) of the input that was run."""

    pixel_values: torch.Tensor  # (1, C, H, W) as fed to the model
    heads: torch.Tensor  # (heads, grid_h, grid_w): [CLS] -> patch attention of the chosen layer
    mean: torch.Tensor  # (grid_h, grid_w): the head mean
    mask: torch.Tensor  # (grid_h, grid_w) bool: DINO's threshold mask of the head mean
    head_masks: torch.Tensor  # (heads, grid_h, grid_w) bool: the same per head (as in DINO's picture)
    rollout: torch.Tensor | None  # (grid_h, grid_w): rollout [CLS] -> patches, renormalised to sum to 1
    layer: int  # the layer index used, counted from 0
    input_size: tuple[int, int]  # (H, W) in pixels


@torch.no_grad()
def compute_attention_maps(
    model,
    image: Image.Image,
    processor,
    size: tuple[int, int] | None = None,
    layer: int = -1,
    threshold: float = 0.6,
    rollout: bool = False,
) -> AttentionMaps:
    """Run `model` (an HfViTModel or HfViTForImageClassification) on `image` and collect its attention maps.

    `size` (H, W) must be multiples of the patch size; by default the image's own aspect ratio at about the
    processor's pixel count is used (`input_size_for`).
    """
    config = model.config
    check_every_patch_token(config, "an attention map")
    patch = int(config.patch_size)
    if size is None:
        reference = processor_size(processor, size_pair(config.image_size))
        size = input_size_for((image.height, image.width), reference, patch)
    size = (int(size[0]), int(size[1]))
    if size[0] <= 0 or size[1] <= 0 or size[0] % patch or size[1] % patch:
        raise ValueError(f"size must be positive multiples of the patch size {patch}, got {size[0]}x{size[1]}")
    num_layers = config.num_hidden_layers
    if not -num_layers <= layer < num_layers:
        raise ValueError(
            f"layer must be in [{-num_layers}, {num_layers - 1}] for this {num_layers}-layer model, got {layer}"
        )
    layer = layer % num_layers

    pixel_values = preprocess(image, processor, size)
    parameter = next(model.parameters())
    outputs = model(pixel_values.to(parameter.device, parameter.dtype), output_attentions=True)
    attentions = [a.float().cpu() for a in outputs.attentions]
    grid = (size[0] // patch, size[1] // patch)
    prefix, class_token = config.num_prefix_tokens, config.class_token
    heads = cls_attention(attentions[layer][0], prefix, grid, class_token)
    mean = heads.mean(dim=0)
    rolled = None
    if rollout:
        rolled = cls_attention(attention_rollout(attentions, num_layers=layer + 1)[0], prefix, grid, class_token)
        rolled = (rolled / rolled.sum()).float()
    return AttentionMaps(
        pixel_values=pixel_values,
        heads=heads,
        mean=mean,
        mask=threshold_mask(mean, threshold),
        head_masks=threshold_mask(heads, threshold),
        rollout=rolled,
        layer=layer,
        input_size=size,
    )


def size_pair(image_size) -> tuple[int, int]:
    if isinstance(image_size, (list, tuple)):
        return int(image_size[0]), int(image_size[1])
    return int(image_size), int(image_size)


# --- pictures ----------------------------------------------------------------------------------------------------
def display_image(pixel_values: torch.Tensor, processor) -> Image.Image:
    """Undo the processor's normalisation of (1, C, H, W) `pixel_values` -> RGB PIL image of size (W, H)."""
    pixels = pixel_values[0].float()
    if getattr(processor, "do_normalize", True):
        mean = torch.tensor(_channel_values(processor.image_mean, pixels.shape[0]))[:, None, None]
        std = torch.tensor(_channel_values(processor.image_std, pixels.shape[0]))[:, None, None]
        pixels = pixels * std + mean
    if getattr(processor, "do_rescale", True):
        pixels = pixels / float(getattr(processor, "rescale_factor", 1 / 255)) / 255.0
    array = (pixels.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return Image.fromarray(array[..., :3])


def _channel_values(values, channels: int) -> list[float]:
    values = [float(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
    return values * channels if len(values) == 1 else values


def _upsample(grid_map: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Nearest upsampling of a (grid_h, grid_w) map to (H, W) pixels, as DINO shows its maps."""
    return torch.nn.functional.interpolate(grid_map[None, None].float(), size=size, mode="nearest")[0, 0].numpy()


def _normalise(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def heatmap_image(grid_map: torch.Tensor, size: tuple[int, int], cmap: str = "inferno") -> Image.Image:
    """A (grid_h, grid_w) map as a colour heat map of `size` = (H, W) pixels (min..max stretched)."""
    require("viz", "`heatmap_image`")
    from matplotlib import colormaps

    rgba = colormaps[cmap](_normalise(_upsample(grid_map, size)))
    return Image.fromarray((rgba[..., :3] * 255).round().astype(np.uint8))


def overlay_image(
    image: Image.Image, grid_map: torch.Tensor, alpha: float = 0.55, cmap: str = "inferno"
) -> Image.Image:
    """The heat map of `grid_map` blended over `image` (same pixel size as `image`)."""
    heat = heatmap_image(grid_map, (image.height, image.width), cmap)
    return Image.blend(image.convert("RGB"), heat, alpha)


def mask_image(image: Image.Image, mask: torch.Tensor, dim: float = 0.2) -> Image.Image:
    """`image` with the patches outside `mask` darkened to `dim` of their brightness."""
    keep = _upsample(mask.float(), (image.height, image.width))[..., None]
    array = np.asarray(image.convert("RGB")).astype(np.float32)
    return Image.fromarray((array * (keep + (1 - keep) * dim)).round().astype(np.uint8))
