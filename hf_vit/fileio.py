"""Atomic writes: a failed run leaves no half-written checkpoint, export or card (docs/architecture.md, Conventions)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Weight files a new folder's weights replace: an earlier single file, or shards and their index, left beside new
# weights of another layout would be loaded instead of them (or waste space).
_WEIGHT_FILE = re.compile(r"^model(-\d{5}-of-\d{5})?\.safetensors(\.index\.json)?$")


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; on success its files become `target`'s, on error it is removed.

    `target` must not exist, or be an empty folder (the staging folder is then renamed to it), or `overwrite=True`:
    the new files are then moved into `target` one by one once all are written, replacing files of the same name and
    earlier weight files (`model*.safetensors`, their index); every other file there is left alone (a user's
    files are sacred)."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise ValueError(f"output path {target} exists and is not a folder")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise ValueError(f"output folder {target} already exists and is not empty; choose another or allow overwriting")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700; give the folder the mode mkdir() would have
    try:
        yield staging
        if target.is_dir() and any(target.iterdir()):
            move_files_into(staging, target, is_stale=lambda name: bool(_WEIGHT_FILE.match(name)))
        else:
            _give_files_the_umask_mode(staging)
            os.replace(staging, target)  # onto a missing or empty folder: one step
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def move_files_into(staging: Path, target: Path, is_stale, order=lambda name: name == "config.json") -> None:
    """Move every file of `staging` into `target` (in `order`: by default config.json after the weights it
    describes), each whole (`os.replace`), then remove the files of `target` that `is_stale` names and this did not
    rewrite. Nothing else in `target` is touched."""
    _give_files_the_umask_mode(staging)
    written = {path.name for path in staging.iterdir()}
    for name in sorted(written, key=order):
        os.replace(staging / name, target / name)
    for old in target.iterdir():
        if old.name not in written and is_stale(old.name) and old.is_file():
            old.unlink()


def _give_files_the_umask_mode(folder: Path) -> None:
    mode = 0o666 & ~_umask()
    for path in folder.iterdir():  # some writers (safetensors via transformers) leave 0600; others read it too
        if path.is_file():
            os.chmod(path, mode)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a file through a temporary file in the same folder and `os.replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would have
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    """The process umask, read without changing it (os.umask would, for a moment, for every thread)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0)  # no /proc (not Linux): set and restore
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """`text` written atomically, with every secret left out (`hf_vit.secrets.redact`)."""
    from .secrets import redact

    atomic_write_bytes(path, redact(text).encode("utf-8"))


def read_json_object(path: str | os.PathLike) -> dict:
    """A JSON file that must hold an object (a config, an index): unreadable or other JSON is a one-line ValueError."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read {path}: {error}") from None
    if isinstance(value, dict):
        return value
    raise ValueError(f"{path} holds JSON but not an object (a mapping of settings)")


def check_links_inside(folder: str | os.PathLike, names=None) -> None:
    """Refuse a symbolic link in `folder` (each of `names`, or everything under it) that leads outside it: a folder
    that is read, converted or uploaded must never bring in a file from elsewhere (`modeling_hf_vit.py ->
    /etc/passwd`). A link between the files of a Hugging Face cache snapshot and its `blobs/` is the cache's own."""
    folder = Path(folder)
    root = folder.resolve()
    allowed = [root]
    if root.parent.name == "snapshots":  # huggingface_hub's cache: snapshots/<commit>/file -> ../../blobs/<hash>
        allowed.append(root.parent.parent / "blobs")
    if names is None:
        paths = []
        for parent, dirs, files in os.walk(folder):  # links to folders are listed, never followed
            paths += [Path(parent) / name for name in (*dirs, *files)]
    else:
        paths = [folder / name for name in names]
    for path in paths:
        target = path.resolve()
        if not any(target == place or target.is_relative_to(place) for place in allowed):
            raise ValueError(
                f"{path} is a symbolic link to {target}, outside {folder}: refused (copy the file into the folder "
                "if it belongs there)"
            )
