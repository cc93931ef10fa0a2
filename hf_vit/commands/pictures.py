"""The output folder of the picture tools (hf-vit-attention, hf-vit-features): one file stem per image, PNG bytes,
and the refusal to replace files of the tool's names that are already there (a user's files are sacred)."""

from __future__ import annotations

import io
import re
from pathlib import Path

from hf_vit.cli import UserError


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def output_stems(image_paths) -> list[str]:
    """A distinct file stem per image: the file's stem, with _2, _3 ... for repeated stems."""
    stems, seen = [], set()
    for path in image_paths:
        stem = base = Path(path).stem
        n = 1
        while stem in seen:
            n += 1
            stem = f"{base}_{n}"
        seen.add(stem)
        stems.append(stem)
    return stems


def check_output_dir(output_dir: Path, stems, suffixes: str, overwrite: bool) -> None:
    """Refuse (`UserError`) an `output_dir` that is a file, or that holds files this tool would write (STEM_SUFFIX,
    `suffixes` a regular expression) unless `overwrite`: they may be a user's, or an earlier run's kept on purpose."""
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"--output_dir {output_dir} exists and is not a folder")
    if overwrite or not output_dir.is_dir():
        return
    pattern = re.compile(f"^(?:{'|'.join(re.escape(stem) for stem in stems)})_(?:{suffixes})$")
    existing = sorted(path.name for path in output_dir.iterdir() if pattern.match(path.name))
    if existing:
        raise UserError(
            f"--output_dir {output_dir} already holds {', '.join(existing[:3])}{', ...' if len(existing) > 3 else ''}; "
            "choose another folder, or pass --overwrite to replace the files this command writes"
        )
