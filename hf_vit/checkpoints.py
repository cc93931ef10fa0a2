"""Checkpoints of a training run: `checkpoint-<step>` folders written by `accelerator.save_state`.

- Written into a hidden staging folder and renamed when complete, with the state file (`trainer_state.json`, which
  records every file's size) written last: `latest` never picks a half-written checkpoint.
- Removed by renaming to a hidden name first; each save enforces the limit over everything present, so what a kill
  during rotation leaves is gone by the next save.
- `checkpoint_problem` tells a damaged checkpoint (truncated, emptied, unreadable) before anything is loaded;
  `check_compatible` and `check_same_run` refuse a checkpoint of another model or another run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from pathlib import Path

PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"
_CHECKPOINT_RE = re.compile(rf"^{PREFIX}(\d+)$")
_STAGING_PREFIX = ".tmp-"
_DISCARD_PREFIX = ".del-"
logger = logging.getLogger(__name__)


def step_of(checkpoint: str | os.PathLike) -> int:
    """The step of a `checkpoint-<step>` folder."""
    return int(_CHECKPOINT_RE.match(Path(checkpoint).name).group(1))


def list_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """Checkpoints in `folder` that have their state file, oldest first (by step). Staging folders of a save in
    progress, and leftovers of a killed save or removal, are ignored."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for child in folder.iterdir():
        match = _CHECKPOINT_RE.match(child.name)
        if match and child.is_dir() and (child / STATE_FILE).is_file():
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def staging_path(folder: str | os.PathLike, step: int) -> Path:
    """Where `checkpoint-<step>` is written before the rename (hidden; never matches a checkpoint name)."""
    return Path(folder) / f"{_STAGING_PREFIX}{PREFIX}{step}"


def _discard(path: Path) -> None:
    """Remove a checkpoint so that a kill midway never leaves anything that looks like one: rename it to a hidden
    name first (atomic), then delete; `rotate` removes what a kill leaves of it."""
    doomed = path.with_name(f"{_DISCARD_PREFIX}{path.name}-{os.getpid()}")
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def discard(paths) -> None:
    for path in paths:
        if Path(path).is_dir():
            _discard(Path(path))


def rotate(folder: str | os.PathLike, total_limit: int | None) -> None:
    """Keep the newest `total_limit` checkpoints (all with None or 0) and remove everything else that a run put in
    `folder`: older checkpoints, checkpoints without a state file (left by a kill in an earlier removal), staging
    folders of killed saves and half-removed ones. Files of other names are not touched."""
    folder = Path(folder)
    complete = list_checkpoints(folder)
    keep = set(complete[-total_limit:] if total_limit else complete)
    for child in sorted(folder.iterdir()) if folder.is_dir() else []:
        if not child.is_dir():
            continue
        if _CHECKPOINT_RE.match(child.name) and child not in keep:
            _discard(child)
        elif child.name.startswith((_DISCARD_PREFIX + PREFIX, _STAGING_PREFIX + PREFIX)):
            shutil.rmtree(child, ignore_errors=True)


def _file_sizes(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def save(accelerator, folder: str | os.PathLike, step: int, state: dict, total_limit: int | None) -> Path:
    """`accelerator.save_state` into a hidden staging folder, then rename to `checkpoint-<step>` and rotate. The state
    file, written last, records every file's size so that `checkpoint_problem` can tell a damaged checkpoint. Every
    process must call this (each saves its RNG state); only the main process renames. A failed save (e.g. a full
    disk) removes its staging folder and leaves the earlier checkpoints as they were."""
    folder = Path(folder)
    staging = staging_path(folder, step)
    final = folder / f"{PREFIX}{step}"
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)  # left by a run killed while saving
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(staging))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            state = {**state, "files": _file_sizes(staging)}
            from .secrets import redact

            with (staging / STATE_FILE).open("w") as handle:
                handle.write(redact(json.dumps(state, indent=1)))
                handle.flush()
                os.fsync(handle.fileno())
    except BaseException:
        if accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
            with contextlib.suppress(OSError):  # the folder this save created, if nothing else is in it
                folder.rmdir()
        raise
    if accelerator.is_main_process:
        if final.exists():  # same step saved before (e.g. a resumed run re-saving); replace it
            _discard(final)
        os.replace(staging, final)
        rotate(folder, total_limit)
    accelerator.wait_for_everyone()
    return final


def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """Why checkpoint `path` cannot be resumed from, or None if it looks intact: a missing or unreadable state file,
    a file missing or of another size than when it was saved, a safetensors file whose header does not parse."""
    path = Path(path)
    try:
        state = json.loads((path / STATE_FILE).read_text())
    except FileNotFoundError:
        return f"no {STATE_FILE}"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return f"{STATE_FILE} is unreadable: {error}"
    if not isinstance(state, dict) or not isinstance(state.get("completed_steps"), int):
        return f"{STATE_FILE} has no step count"
    for name, size in (state.get("files") or {}).items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != size:
            return f"{name} has {file.stat().st_size} bytes, {size} when saved"
    from safetensors import SafetensorError, safe_open

    for file in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except (SafetensorError, OSError) as error:
            return f"{file.name} is damaged: {error}"
    return None


def resolve_checkpoint(value: str, folder: str | os.PathLike) -> Path | None:
    """`latest` -> the newest intact checkpoint in `folder` (None if there is none; damaged newer ones are logged and
    passed over); a path -> that folder, which must be an intact checkpoint."""
    if value == "latest":
        for path in reversed(list_checkpoints(folder)):
            problem = checkpoint_problem(path)
            if problem is None:
                return path
            logger.warning("passing over damaged checkpoint %s (%s)", path, problem)
        return None
    path = Path(value)
    if not path.is_dir():
        raise ValueError(f"checkpoint {value} does not exist or is not a folder")
    problem = checkpoint_problem(path)
    if problem is not None:
        raise ValueError(damaged_message(path, problem))
    return path


def damaged_message(path: str | os.PathLike, problem: str) -> str:
    path = Path(path)
    intact = [p for p in list_checkpoints(path.parent) if p != path and checkpoint_problem(p) is None]
    advice = f"resume from checkpoint {intact[-1]} (the newest intact one) or start over" if intact else "start over"
    return f"checkpoint {path} is damaged ({problem}); {advice}"


def read_state(path: str | os.PathLike) -> dict:
    return json.loads((Path(path) / STATE_FILE).read_text())


def check_same_run(state: dict, settings: dict, path) -> None:
    """A resumed run must see the same data in the same order and the same schedule as the run that saved the
    checkpoint: otherwise it would resume at the wrong step of another schedule and report a wrong result."""
    saved = state.get("run")
    if saved is None:
        return
    differences = [
        f"{key} {saved[key]!r} then, {settings.get(key)!r} now"
        for key in saved
        if key in settings and saved[key] != settings[key]
    ]
    if differences:
        raise ValueError(
            f"cannot resume from checkpoint {path}: it was saved by a run with other settings "
            f"({'; '.join(differences)}); "
            "rerun with the checkpoint's settings, or start over"
        )


# model settings that must match for a checkpoint's weights and optimizer state to fit the model being trained (the
# backbone settings out_features, out_indices, apply_layernorm and reshape_hidden_states change no weight: not here)
_SHAPE_KEYS = (
    "image_size",
    "patch_size",
    "num_channels",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "num_register_tokens",
    "cls_position_embedding",
    "layerscale_init",
    "qkv_bias",
    "mlp_type",
    "pre_norm",
    "patch_embedding_bias",
    "use_mask_token",
    "class_token",
    "distillation_token",
    "pooling",
    "absolute_position_embeddings",
    "qk_norm",
)


def model_signature(config) -> dict:
    sig = {key: getattr(config, key, None) for key in _SHAPE_KEYS}
    sig["image_size"] = list(sig["image_size"]) if isinstance(sig["image_size"], (list, tuple)) else sig["image_size"]
    sig["num_labels"] = config.num_labels
    return sig


def check_compatible(state: dict, config, path) -> None:
    saved = state.get("model")
    if saved is None:
        return
    current = model_signature(config)
    differences = [
        f"{k}: checkpoint {saved.get(k)!r} vs model {current[k]!r}"
        for k in current
        if k in saved and saved[k] != current[k]
    ]
    if differences:
        raise ValueError(f"checkpoint {path} is from an incompatible model ({'; '.join(differences)})")


__all__ = [
    "STATE_FILE",
    "check_compatible",
    "check_same_run",
    "checkpoint_problem",
    "damaged_message",
    "discard",
    "list_checkpoints",
    "model_signature",
    "read_state",
    "resolve_checkpoint",
    "rotate",
    "save",
]
