"""The output folder of the picture tools (hf-vit-attention, hf-vit-features): one file stem per image, PNG bytes,
the refusal to replace files of the tool's names that are already there (a user's files are never replaced unasked),
and token merging off for the pictures (`unmerged`)."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path


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
    """`hf_vit.output_dir.check_output_dir` for the pictures of `stems`: an `output_dir` that is a file, or that holds
    files this tool would write (STEM_SUFFIX, `suffixes` a regular expression) unless `overwrite`, is refused: they
    may be a user's, or an earlier run's kept on purpose. Other files in the folder do not matter."""
    from hf_vit.output_dir import check_output_dir as check

    pattern = re.compile(f"^(?:{'|'.join(re.escape(stem) for stem in stems)})_(?:{suffixes})$")
    check(output_dir, inputs={}, overwrite=overwrite, ours=lambda name: bool(pattern.match(name)))


def unmerged(config) -> dict:
    """The options that load a model for the pictures with token merging off (they need every patch token; merging
    only makes inference faster and leaves the weights alone), and a note on stderr when the folder had it on."""
    r = getattr(config, "token_merging_r", 0)
    if not (any(r) if isinstance(r, (list, tuple)) else r):
        return {}
    print(
        f"note: token merging (token_merging_r = {r}) is off here: the pictures need every patch token",
        file=sys.stderr,
    )
    return {"token_merging_r": 0}
