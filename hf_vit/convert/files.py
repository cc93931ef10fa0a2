"""File conversion entry points: one foreign checkpoint (`--source`) -> an hf_vit folder."""

from __future__ import annotations

import json
from pathlib import Path

from ..configuration_hf_vit import HfViTConfig
from ..fileio import check_links_inside
from ..output_dir import check_output_dir
from .core import (
    DEFAULT_MAX_SHARD_SIZE,
    SOURCES,
    VERIFY_TOLERANCE,
    Conversion,
    ConversionResult,
    verify_conversion,
    with_source_license,
    write_hf_vit_folder,
)
from .dino import convert_dino_file
from .npz import convert_npz_file
from .timm import convert_timm_file
from .transformers_vit import convert_transformers_folder


def _folder_model_type(path: Path) -> str | None:
    try:
        return json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def load_foreign_checkpoint(
    source: str, checkpoint, *, timm_model=None, preset=None, num_heads=None, checkpoint_key="teacher"
) -> Conversion:
    """The conversion of a local checkpoint of a named `source`, with the licence its folder states."""
    conversion = _load_foreign_checkpoint(
        source, checkpoint, timm_model=timm_model, preset=preset, num_heads=num_heads, checkpoint_key=checkpoint_key
    )
    return with_source_license(conversion, checkpoint)


def _load_foreign_checkpoint(
    source: str, checkpoint, *, timm_model=None, preset=None, num_heads=None, checkpoint_key="teacher"
) -> Conversion:
    path = Path(checkpoint)
    if path.is_dir():
        check_links_inside(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    # said first: otherwise each source's reader would complain about the folder as if it were a foreign one
    if path.is_dir() and _folder_model_type(path) == HfViTConfig.model_type:
        raise ValueError(
            f"{path} is already an hf_vit folder: nothing to convert; load it directly with "
            "AutoModel.from_pretrained (after `import hf_vit`)"
        )
    if source == "timm":
        return convert_timm_file(checkpoint, timm_model=timm_model, num_heads=num_heads, preset=preset)
    if source == "dino":
        return convert_dino_file(checkpoint, checkpoint_key=checkpoint_key, num_heads=num_heads, preset=preset)
    if source == "transformers":
        return convert_transformers_folder(checkpoint)
    if source == "npz":
        return convert_npz_file(checkpoint)
    raise ValueError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")


def convert_checkpoint(
    source: str,
    checkpoint,
    output_dir,
    *,
    verify: bool = False,
    overwrite: bool = False,
    tolerance: float = VERIFY_TOLERANCE,
    command: str | None = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    **options,
) -> dict:
    """Convert a foreign checkpoint into an hf_vit folder; with `verify`, compare with the source library first
    (above `tolerance` nothing is written); weights above `max_shard_size` are sharded with an index. Returns
    {"output_dir", "max_abs_diff", "model", "conversion"} ("model" built when first read)."""
    check_output_dir(output_dir, inputs={"checkpoint": checkpoint}, overwrite=overwrite)
    conversion = load_foreign_checkpoint(source, checkpoint, **options)
    diff = verify_conversion(conversion, tolerance) if verify else None
    folder = write_hf_vit_folder(
        conversion, output_dir, overwrite=overwrite, max_abs_diff=diff, command=command, max_shard_size=max_shard_size
    )
    return ConversionResult(output_dir=folder, max_abs_diff=diff, conversion=conversion)
