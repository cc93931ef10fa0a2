"""Training helpers shared by the scripts: optimizer parameter groups, layer-wise LR decay, metrics, checkpoints.

Checkpoints are folders `checkpoint-<step>` written by `accelerator.save_state` into a hidden temporary folder and
renamed when complete (with `trainer_state.json` written last), so `latest` never picks a half-written one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

from torch import nn

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"
_CHECKPOINT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")
_STAGING_PREFIX = ".tmp-"
_DISCARD_PREFIX = ".del-"
logger = logging.getLogger(__name__)
# parameters that get no weight decay besides biases and norm weights
_NO_DECAY_NAMES = ("position_embeddings", "cls_token", "register_tokens", "lambda1")


# ---------------------------------------------------------------------------------------------------------------
# Optimizer
# ---------------------------------------------------------------------------------------------------------------
def no_weight_decay(name: str, param: nn.Parameter) -> bool:
    """Biases, LayerNorm weights (1-D), position embeddings, [CLS], registers and LayerScale are not decayed."""
    return param.ndim <= 1 or name.endswith(".bias") or any(key in name for key in _NO_DECAY_NAMES)


def layer_id(name: str, num_layers: int) -> int:
    """Depth of a parameter for layer-wise LR decay: 0 for the embeddings, i+1 for block i, L+1 for the final norm/head."""
    if ".embeddings." in f".{name}":
        return 0
    match = re.search(r"encoder\.layers\.(\d+)\.", name)
    if match:
        return int(match.group(1)) + 1
    return num_layers + 1


def param_groups(
    model: nn.Module, weight_decay: float, learning_rate: float, layer_decay: float | None = None
) -> list[dict]:
    """AdamW parameter groups: weight decay only where it belongs; with `layer_decay` < 1 the learning rate of a
    layer at depth d is `learning_rate * layer_decay ** (L + 1 - d)` (BEiT/MAE fine-tuning)."""
    unwrapped = getattr(model, "module", model)
    num_layers = unwrapped.config.num_hidden_layers
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in unwrapped.named_parameters():
        if not param.requires_grad:
            continue
        decay = not no_weight_decay(name, param)
        depth = layer_id(name, num_layers) if layer_decay not in (None, 1.0) else num_layers + 1
        scale = layer_decay ** (num_layers + 1 - depth) if layer_decay not in (None, 1.0) else 1.0
        group = groups.setdefault(
            (depth, decay),
            {"params": [], "weight_decay": weight_decay if decay else 0.0, "lr": learning_rate * scale, "lr_scale": scale},
        )
        group["params"].append(param)
    return [groups[key] for key in sorted(groups)]


# ---------------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------------
class MetricsLog:
    """Metrics rows (one per evaluation), kept in memory and in every checkpoint; written out as JSON lines only with
    the final folder, so that a failed or killed run never rewrites an earlier run's `metrics.jsonl`."""

    def __init__(self, history: list[dict] | None = None):
        self.history = list(history or [])

    def log(self, row: dict) -> None:
        self.history.append(row)

    def jsonl(self) -> str:
        return "".join(json.dumps(row) + "\n" for row in self.history)


def plot_curves(history: list[dict], path: str | os.PathLike) -> Path | None:
    """Loss (train/eval) and eval accuracy against epoch, as a PNG."""
    rows = [r for r in history if "epoch" in r]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    if any("train_loss" in r for r in rows):
        ax_loss.plot(epochs, [r.get("train_loss") for r in rows], label="train loss", marker=".")
    if any("eval_loss" in r for r in rows):
        ax_loss.plot(epochs, [r.get("eval_loss") for r in rows], label="eval loss", marker=".")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    if any("eval_accuracy" in r for r in rows):
        ax_acc.plot(epochs, [100 * r["eval_accuracy"] for r in rows], marker=".", color="tab:green")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("eval top-1 accuracy (%)")
    ax_acc.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------
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
    return Path(folder) / f"{_STAGING_PREFIX}{CHECKPOINT_PREFIX}{step}"


def _discard(path: Path) -> None:
    """Remove a checkpoint so that a kill midway never leaves anything that looks like one: rename it to a hidden
    name first (atomic), then delete; `rotate_checkpoints` removes what a kill leaves of it."""
    doomed = path.with_name(f"{_DISCARD_PREFIX}{path.name}-{os.getpid()}")
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def discard_checkpoints(paths) -> None:
    for path in paths:
        if Path(path).is_dir():
            _discard(Path(path))


def rotate_checkpoints(folder: str | os.PathLike, total_limit: int | None) -> None:
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
        elif child.name.startswith((_DISCARD_PREFIX + CHECKPOINT_PREFIX, _STAGING_PREFIX + CHECKPOINT_PREFIX)):
            shutil.rmtree(child, ignore_errors=True)


def _file_sizes(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def save_checkpoint(accelerator, folder: str | os.PathLike, step: int, state: dict, total_limit: int | None) -> Path:
    """`accelerator.save_state` into a hidden staging folder, then rename to `checkpoint-<step>` and rotate. The state
    file, written last, records every file's size so that `checkpoint_problem` can tell a damaged checkpoint. Every
    process must call this (each saves its RNG state); only the main process renames. A failed save (e.g. a full
    disk) removes its staging folder and leaves the earlier checkpoints as they were."""
    folder = Path(folder)
    staging = staging_path(folder, step)
    final = folder / f"{CHECKPOINT_PREFIX}{step}"
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)  # left by a run killed while saving
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(staging))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            state = {**state, "files": _file_sizes(staging)}
            with (staging / STATE_FILE).open("w") as handle:
                json.dump(state, handle, indent=1)
                handle.flush()
                os.fsync(handle.fileno())
    except BaseException:
        if accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    if accelerator.is_main_process:
        if final.exists():  # same step saved before (e.g. a resumed run re-saving); replace it
            _discard(final)
        os.replace(staging, final)
        rotate_checkpoints(folder, total_limit)
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


def read_checkpoint_state(path: str | os.PathLike) -> dict:
    return json.loads((Path(path) / STATE_FILE).read_text())


def check_same_run(state: dict, settings: dict, path) -> None:
    """A resumed run must see the same data in the same order and the same schedule as the run that saved the
    checkpoint: otherwise it would resume at the wrong step of another schedule and report a wrong result."""
    saved = state.get("run")
    if saved is None:
        return
    differences = [f"{key} {saved[key]!r} then, {settings.get(key)!r} now" for key in saved
                   if key in settings and saved[key] != settings[key]]
    if differences:
        raise ValueError(
            f"cannot resume from checkpoint {path}: it was saved by a run with other settings ({'; '.join(differences)}); "
            "rerun with the checkpoint's settings, or start over"
        )


# model settings that must match for a checkpoint's weights and optimizer state to fit the model being trained
_SHAPE_KEYS = (
    "image_size", "patch_size", "num_channels", "hidden_size", "num_hidden_layers", "num_attention_heads",
    "intermediate_size", "num_register_tokens", "cls_position_embedding", "layerscale_init", "qkv_bias",
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
    differences = [f"{k}: checkpoint {saved.get(k)!r} vs model {current[k]!r}" for k in current if saved.get(k) != current[k]]
    if differences:
        raise ValueError(f"checkpoint {path} is from an incompatible model ({'; '.join(differences)})")


__all__ = [
    "MetricsLog",
    "check_compatible",
    "check_same_run",
    "checkpoint_problem",
    "damaged_message",
    "discard_checkpoints",
    "rotate_checkpoints",
    "layer_id",
    "list_checkpoints",
    "model_signature",
    "no_weight_decay",
    "param_groups",
    "plot_curves",
    "read_checkpoint_state",
    "resolve_checkpoint",
    "save_checkpoint",
]
