"""Training helpers shared by the scripts: optimizer parameter groups, layer-wise LR decay, metrics, checkpoints.

Checkpoints are folders `checkpoint-<step>` written by `accelerator.save_state` into a hidden temporary folder and
renamed when complete (with `trainer_state.json` written last), so `latest` never picks a half-written one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch
from torch import nn

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"
_CHECKPOINT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")
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
    """Metrics as JSON lines (one object per evaluation), kept in memory for the curves PNG and checkpoints."""

    def __init__(self, path: str | os.PathLike | None, history: list[dict] | None = None):
        self.path = Path(path) if path else None
        self.history = list(history or [])
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # rewrite from the (possibly restored) history, so a resumed run's file has no rows from after the checkpoint
            self.path.write_text("".join(json.dumps(row) + "\n" for row in self.history))

    def log(self, row: dict) -> None:
        self.history.append(row)
        if self.path is not None:
            with self.path.open("a") as handle:
                handle.write(json.dumps(row) + "\n")


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
    """Complete checkpoints in `folder`, oldest first (by step). Temporary folders and ones without the state
    file (never the case after the rename, but cheap to check) are ignored."""
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
    return Path(folder) / f".tmp-{CHECKPOINT_PREFIX}{step}"


def save_checkpoint(accelerator, folder: str | os.PathLike, step: int, state: dict, total_limit: int | None) -> Path:
    """`accelerator.save_state` into a temporary folder, then rename to `checkpoint-<step>`; keep the newest
    `total_limit`. Every process must call this (each saves its RNG state); only the main process renames."""
    folder = Path(folder)
    staging = staging_path(folder, step)
    final = folder / f"{CHECKPOINT_PREFIX}{step}"
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)  # left by a run killed while saving
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with (staging / STATE_FILE).open("w") as handle:
            json.dump(state, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        if final.exists():  # same step saved before (e.g. a resumed run re-saving); replace it
            shutil.rmtree(final)
        os.replace(staging, final)
        if total_limit is not None and total_limit > 0:
            for old in list_checkpoints(folder)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def resolve_checkpoint(value: str, folder: str | os.PathLike) -> Path | None:
    """`latest` -> the newest complete checkpoint in `folder` (None if there is none); a path -> that folder."""
    if value == "latest":
        checkpoints = list_checkpoints(folder)
        return checkpoints[-1] if checkpoints else None
    path = Path(value)
    if not (path / STATE_FILE).is_file():
        raise ValueError(f"--resume_from_checkpoint {value} is not a complete checkpoint folder (no {STATE_FILE})")
    return path


def read_checkpoint_state(path: str | os.PathLike) -> dict:
    return json.loads((Path(path) / STATE_FILE).read_text())


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
