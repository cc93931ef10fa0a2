"""DINOv2's patch-feature picture: the first three principal components of the patch features, shown as RGB, with the
background removed, at each image's own aspect ratio.

The logic behind `scripts/visualize_features.py`, as in DINOv2's paper (Fig. 1) and its widely copied PCA demo:

- `patch_features` runs the model at the image's aspect ratio (`attention_maps.input_size_for`, position embeddings
  interpolated) and takes the last layer's patch tokens as the model returns them in `last_hidden_state` (after the
  final LayerNorm for [CLS]-pooled models, DINOv2's `x_norm_patchtokens`), the [CLS] and register tokens dropped.
- `pca_pictures` fits one PCA over the patches of all images together, so that colours mean the same across images:
  1. the first component, standardised (divided by its standard deviation over all patches; PCA centres it), splits
     foreground from background: foreground = pc1 > `threshold` (0 by default: above the mean). The sign of a
     principal component is arbitrary, so it is oriented first: by default ("auto") so that the patches on the
     image borders lie lower than the inner ones on average (the background is what surrounds the object);
     `invert=True` takes the other side;
  2. a second PCA over the foreground patches only; its first three components, each min-max normalised over the
     foreground patches of all images, are the R, G and B of the picture; background patches are black.
  With `remove_background=False` the second step runs on all patches and nothing is black.
- `picture_image` upsamples a picture (nearest neighbour: one block per patch) to the input's pixel size, and
  `side_by_side` puts it beside the image as the model saw it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .attention_maps import input_size_for, preprocess, processor_size, size_pair
from .modeling_hf_vit import check_every_patch_token


def principal_components(features: torch.Tensor, count: int) -> torch.Tensor:
    """The projections (N, count) of `features` (N, D) on their first `count` principal components (centred, float64,
    by SVD). Each component's sign is fixed so that its largest loading is positive (deterministic across runs); a
    component the data cannot give (count > min(N, D)) is zero."""
    if features.ndim != 2 or features.shape[0] == 0:
        raise ValueError(f"`features` must be a non-empty (patches, dim) matrix, got shape {tuple(features.shape)}")
    centred = features.double() - features.double().mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    vh = vh[:count]
    largest = vh.gather(1, vh.abs().argmax(dim=1, keepdim=True))
    vh = vh * torch.where(largest < 0, -1.0, 1.0).to(vh.dtype)
    projections = centred @ vh.T
    if projections.shape[1] < count:
        projections = torch.cat([projections, projections.new_zeros(len(projections), count - projections.shape[1])], 1)
    return projections


def border_mask(grid_size: tuple[int, int]) -> torch.Tensor:
    """(rows, columns) bool: the patches on the grid's outer ring."""
    mask = torch.zeros(grid_size, dtype=torch.bool)
    mask[0, :] = mask[-1, :] = True
    mask[:, 0] = mask[:, -1] = True
    return mask


@dataclass
class PcaPicture:
    """One image's picture on its patch grid (rows, columns)."""

    rgb: torch.Tensor  # (rows, columns, 3) in [0, 1]; background patches 0
    foreground: torch.Tensor  # (rows, columns) bool
    first_component: torch.Tensor  # (rows, columns): pc1 over all images' patches, oriented and standardised


def _orient(first: torch.Tensor, borders: torch.Tensor) -> torch.Tensor:
    """`first` with the sign that puts the border patches lower than the inner ones on average; where every patch is
    on a border (grids of one or two rows or columns), the sign that makes the foreground (pc1 > 0) the smaller
    side."""
    if borders.all():
        return -first if (first > 0).sum() > (first <= 0).sum() else first
    return -first if first[borders].mean() > first[~borders].mean() else first


def pca_pictures(
    features: Sequence[torch.Tensor],
    threshold: float = 0.0,
    invert: bool = False,
    remove_background: bool = True,
) -> list[PcaPicture]:
    """DINOv2's picture for each of `features`, one (rows, columns, dim) grid of patch features per image (the grids
    may differ in size); see the module docstring. `threshold` is in standard deviations of the first component."""
    if not features:
        raise ValueError("`features` is empty: give at least one image's patch features")
    if not np.isfinite(threshold):
        raise ValueError(f"`threshold` must be a finite number, got {threshold}")
    grids = [tuple(grid.shape[:2]) for grid in features]
    dims = {grid.shape[-1] for grid in features}
    if len(dims) != 1 or any(grid.ndim != 3 for grid in features):
        raise ValueError("`features` must be (rows, columns, dim) grids with the same dim")
    flat = torch.cat([grid.reshape(-1, grid.shape[-1]) for grid in features])
    borders = torch.cat([border_mask(grid).reshape(-1) for grid in grids])

    first = principal_components(flat, 1)[:, 0]
    spread = first.std(unbiased=False)
    first = first / spread if spread > 0 else first
    first = _orient(first, borders)
    if invert:
        first = -first
    foreground = first > threshold if remove_background else torch.ones_like(first, dtype=torch.bool)

    rgb = torch.zeros(len(flat), 3, dtype=torch.float64)
    if foreground.any():
        colours = principal_components(flat[foreground], 3)
        low, high = colours.min(dim=0).values, colours.max(dim=0).values
        rgb[foreground] = (colours - low) / torch.where(high > low, high - low, torch.ones_like(high))

    pictures, start = [], 0
    for rows, columns in grids:
        end = start + rows * columns
        pictures.append(
            PcaPicture(
                rgb=rgb[start:end].reshape(rows, columns, 3).float(),
                foreground=foreground[start:end].reshape(rows, columns),
                first_component=first[start:end].reshape(rows, columns).float(),
            )
        )
        start = end
    return pictures


@torch.no_grad()
def patch_features(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """The last layer's patch tokens (rows, columns, dim) of `model` (an HfViTModel, or a model with one as `.vit`) for
    one image (1, C, H, W): `last_hidden_state` without the prefix tokens ([CLS], distillation, registers)."""
    backbone = getattr(model, "vit", model)
    config = backbone.config
    check_every_patch_token(config, "a feature picture")
    parameter = next(backbone.parameters())
    tokens = backbone(pixel_values.to(parameter.device, parameter.dtype)).last_hidden_state[0]
    patch = int(config.patch_size)
    grid = (pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch)
    return tokens[config.num_prefix_tokens :].float().cpu().reshape(*grid, -1)


@dataclass
class FeaturePicture(PcaPicture):
    """One image's picture, with the input it was computed from."""

    pixel_values: torch.Tensor  # (1, C, H, W) as fed to the model
    input_size: tuple[int, int]  # (H, W) in pixels


def compute_feature_pictures(
    model,
    images: Sequence[Image.Image],
    processor,
    size: tuple[int, int] | None = None,
    threshold: float = 0.0,
    invert: bool = False,
    remove_background: bool = True,
) -> list[FeaturePicture]:
    """DINOv2's patch-feature picture of each image, from one PCA over all of them. Each image runs at its own aspect
    ratio at about the processor's pixel count, each side a multiple of the patch size (or at `size` (H, W))."""
    config = model.config
    patch = int(config.patch_size)
    if size is not None:
        size = (int(size[0]), int(size[1]))
        if size[0] <= 0 or size[1] <= 0 or size[0] % patch or size[1] % patch:
            raise ValueError(f"`size` must be positive multiples of the patch size {patch}, got {size[0]}x{size[1]}")
    reference = processor_size(processor, size_pair(config.image_size))
    inputs = []
    for image in images:
        input_size = size or input_size_for((image.height, image.width), reference, patch)
        inputs.append((preprocess(image, processor, input_size), input_size))
    features = [patch_features(model, pixel_values) for pixel_values, _ in inputs]
    pictures = pca_pictures(features, threshold=threshold, invert=invert, remove_background=remove_background)
    return [
        FeaturePicture(
            rgb=picture.rgb,
            foreground=picture.foreground,
            first_component=picture.first_component,
            pixel_values=pixel_values,
            input_size=input_size,
        )
        for picture, (pixel_values, input_size) in zip(pictures, inputs, strict=True)
    ]


# --- pictures ----------------------------------------------------------------------------------------------------
def picture_image(rgb: torch.Tensor, size: tuple[int, int]) -> Image.Image:
    """A (rows, columns, 3) picture in [0, 1] as an RGB PIL image of `size` = (H, W) pixels, each patch a block
    (nearest-neighbour upsampling)."""
    grid = rgb.permute(2, 0, 1)[None].float()
    upsampled = torch.nn.functional.interpolate(grid, size=tuple(size), mode="nearest")[0].permute(1, 2, 0)
    return Image.fromarray((upsampled.clamp(0, 1) * 255).round().byte().numpy())


def side_by_side(*images: Image.Image, gap: int = 4) -> Image.Image:
    """The images in a row on white, `gap` pixels apart, top-aligned."""
    width = sum(image.width for image in images) + gap * (len(images) - 1)
    canvas = Image.new("RGB", (width, max(image.height for image in images)), "white")
    left = 0
    for image in images:
        canvas.paste(image.convert("RGB"), (left, 0))
        left += image.width + gap
    return canvas


__all__ = [
    "FeaturePicture",
    "PcaPicture",
    "border_mask",
    "compute_feature_pictures",
    "patch_features",
    "pca_pictures",
    "picture_image",
    "principal_components",
    "side_by_side",
]
