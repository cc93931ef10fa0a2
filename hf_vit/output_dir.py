"""The output folder of a training run: what may be written there, by whom, and how (a user's files are sacred:
docs/architecture.md, Conventions).

- A run replaces only the files it writes itself (`is_run_file`), never empties a folder, and refuses an output
  folder that is, holds or lies inside its input data.
- One run at a time: `RunLock` holds an advisory lock (`fcntl.flock`), which the kernel drops when the process dies,
  so a killed run never leaves the folder locked.
- The final files are written into a hidden staging folder inside the output folder and then moved in one by one
  (`os.replace`: each file is whole, old or new); a run that fails before that leaves the earlier files untouched.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from .checkpoint_io import CODE_FILES, CONFIG_NAME, IMAGE_PROCESSOR_NAME, SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME
from .fileio import move_files_into

# What a training run writes at its end, in the order it is moved in: config.json after the weights it describes
RUN_FILES = (
    SAFE_WEIGHTS_NAME,
    SAFE_WEIGHTS_INDEX_NAME,
    IMAGE_PROCESSOR_NAME,
    *CODE_FILES,
    CONFIG_NAME,
    "README.md",
    "training_curves.png",
    "all_results.json",
    "metrics.jsonl",
)
_SHARD_RE = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")
# folders a run writes into while it trains (kept across runs: resume, tensorboard)
RUN_FOLDERS = ("checkpoints", "runs")
LOCK_NAME = ".hf_vit-run.lock"
STAGING_PREFIX = ".hf_vit-final-"


class OutputDirRefused(ValueError):
    """An output folder a run or a tool must not write to (`check_output_dir`): the user's to fix. The message names
    the parameters in backticks (`output_dir`, `overwrite`), which the command lines show as their flags."""


class OutputDirNotEmpty(OutputDirRefused):
    """The output folder holds files and the caller did not allow replacing the ones it writes there."""

    def __init__(self, folder: Path, entries: list[str], overwrite: str = "overwrite", hint: str = ""):
        self.folder, self.entries = folder, entries
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        super().__init__(
            f"`output_dir` {folder} already holds files ({shown}); choose another folder, {hint}or pass "
            f"`{overwrite}` to replace the files this command writes (nothing else is touched)"
        )


class DiskFullError(OSError):
    """The disk filled up while writing a checkpoint or the final folder; nothing half-written was left."""


class OutputDirBusy(OutputDirRefused):
    """Another run holds the output folder's lock."""


def is_run_file(name: str) -> bool:
    return name in RUN_FILES or bool(_SHARD_RE.match(name))


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def overlap(output: str | os.PathLike, source: str | os.PathLike) -> str | None:
    """How an output folder overlaps an existing input ("is", "lies inside", "contains"), or None: writing there
    would mix with the input or replace it."""
    if not Path(source).exists():
        return None
    output, source = Path(output).resolve(), Path(source).resolve()
    if _inside(output, source):
        return "is" if output == source else "lies inside"
    return "contains" if _inside(source, output) else None


def check_output_dir(
    output_dir: str | os.PathLike,
    *,
    inputs: Mapping[str, str | os.PathLike | None],
    overwrite: bool,
    resuming: bool = False,
    ours: Callable[[str], bool] | None = None,
    overwrite_name: str = "overwrite",
    hint: str = "",
) -> None:
    """The one check of an output folder, for training runs and every tool that writes one: raise `OutputDirRefused`
    (one line) for a folder that must not be written to, before any slow work.

    Refused: a file; a folder that is, holds or lies inside one of the local `inputs` (label -> path; missing or
    non-local ones are ignored), whose files would be replaced or mixed with; and, unless `overwrite` or `resuming`
    (the folder holds the checkpoint being resumed: it is the run's own), a folder holding files this would write:
    any file, or those whose names `ours` accepts (`OutputDirNotEmpty`, naming the caller's `overwrite_name` and
    adding `hint`)."""
    output = Path(output_dir)
    if output.exists() and not output.is_dir():
        raise OutputDirRefused(f"`output_dir` {output} exists and is not a folder")
    for label, value in inputs.items():
        where = overlap(output, value) if value else None
        if where:
            raise OutputDirRefused(
                f"`output_dir` {output} {where} the input {label} {value}: what is written there would replace or mix "
                "with it; choose a folder outside it"
            )
    if not output.is_dir() or resuming or overwrite:
        return
    entries = sorted(
        p.name
        for p in output.iterdir()
        if p.name != LOCK_NAME and not p.name.startswith(STAGING_PREFIX) and (ours is None or ours(p.name))
    )
    if entries:
        raise OutputDirNotEmpty(output, entries, overwrite_name, hint)


class RunLock:
    """An exclusive lock on a run's output folder (created if missing). `release(cleanup=True)` also removes the
    folder again if this lock created it and nothing else was written there."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.created = False
        self._handle = None

    def acquire(self) -> RunLock:
        self.created = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_NAME
        while True:
            handle = open(path, "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "?"
                handle.close()
                raise OutputDirBusy(
                    f"another run (pid {holder}) is writing to {self.folder}; wait for it to end or choose another "
                    "output folder"
                ) from None
            # the holder we waited for may have removed the file on release: lock the file that is there now
            if path.exists() and os.path.samestat(os.fstat(handle.fileno()), os.stat(path)):
                break
            handle.close()
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle
        for stale in self.folder.glob(f"{STAGING_PREFIX}*"):  # left by a run killed while publishing
            shutil.rmtree(stale, ignore_errors=True)
        return self

    def release(self, cleanup: bool = False) -> None:
        if self._handle is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.folder / LOCK_NAME)
        self._handle.close()
        self._handle = None
        if cleanup and self.created:
            with contextlib.suppress(OSError):  # not empty: something was written that is worth keeping
                self.folder.rmdir()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, kind, error, traceback) -> None:
        self.release(cleanup=kind is not None)


@contextlib.contextmanager
def final_files(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden staging folder inside `folder` for the run's final files; on success move them into `folder`
    (`publish`), on error remove the staging folder and leave `folder` as it was."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
    try:
        yield staging
        publish(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish(staging: Path, folder: Path) -> None:
    """Move every file of `staging` into `folder`, then remove the run files of an earlier run that this one did not
    rewrite (e.g. shards where there is now one file). Nothing else in `folder` is touched."""
    written = {p.name for p in staging.iterdir()}
    unexpected = sorted(name for name in written if not is_run_file(name))
    if unexpected:  # a programming error: only run files may replace files in a user's folder
        raise ValueError(f"not a run file: {', '.join(unexpected)}")
    order = {name: i for i, name in enumerate(RUN_FILES)}
    move_files_into(staging, folder, is_stale=is_run_file, order=lambda name: order.get(name, -1))


def write_trained_model(
    folder: str | os.PathLike,
    model,
    processor,
    card: str,
    files: dict | None = None,
    history: list[dict] | None = None,
    max_shard_size: int | str | None = None,
) -> None:
    """The final folder of a training run, for both trainers: the model (safetensors, with its code files; shards of
    at most `max_shard_size` + index above it, default transformers' `save_pretrained` default), the
    image processor, the model card, `files` (name -> text) and, given a metrics `history`, `metrics.jsonl` and
    `training_curves.png`. Written whole first, then moved in (`final_files`): on a full disk `DiskFullError`, and
    the folder is as it was."""
    from .model_card import write_model_card
    from .secrets import redact
    from .training import metrics_jsonl, plot_curves

    folder = Path(folder)
    try:
        with final_files(folder) as staging:
            processor.save_pretrained(staging)  # first: the model then writes no default one of its own
            from .checkpoint_io import default_max_shard_size

            model.save_pretrained(
                staging, safe_serialization=True, max_shard_size=max_shard_size or default_max_shard_size()
            )
            write_model_card(staging, card)
            for name, text in (files or {}).items():
                (staging / name).write_text(redact(text))
            if history is not None:
                plot_curves(history, staging / "training_curves.png")
                (staging / "metrics.jsonl").write_text(redact(metrics_jsonl(history)))
    except Exception as error:
        if is_disk_full(error):
            raise DiskFullError(
                f"disk full while writing the trained model to {folder}; nothing in it was changed "
                "(free space and run again)"
            ) from None
        raise


def is_disk_full(error: BaseException) -> bool:
    """An error from writing a file on a full disk: `OSError` ENOSPC/EDQUOT, or an error of a writer that hides the
    errno in its text: safetensors' `SafetensorError` ("No space left on device (os error 28)"), torch's zip
    writer's RuntimeError ("unexpected pos ... vs ...", "failed writing file")."""
    if isinstance(error, OSError) and error.errno is not None:
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    text = str(error)
    if any(sign in text for sign in ("No space left on device", "os error 28", "Disk quota exceeded", "os error 122")):
        return True
    return isinstance(error, RuntimeError) and ("unexpected pos" in text or "failed writing file" in text)


__all__ = [
    "LOCK_NAME",
    "RUN_FILES",
    "RUN_FOLDERS",
    "DiskFullError",
    "OutputDirBusy",
    "OutputDirNotEmpty",
    "OutputDirRefused",
    "RunLock",
    "check_output_dir",
    "final_files",
    "is_disk_full",
    "is_run_file",
    "publish",
    "write_trained_model",
]
