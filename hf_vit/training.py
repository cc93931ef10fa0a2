"""Training helpers: optimizer parameter groups with layer-wise LR decay, the metrics log and its curves."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from torch import nn

from .extras import require

# parameters that get no weight decay besides biases and norm weights
_NO_DECAY_NAMES = ("position_embeddings", "cls_token", "register_tokens", "lambda1")


# ---------------------------------------------------------------------------------------------------------------
# Optimizer
# ---------------------------------------------------------------------------------------------------------------
def no_weight_decay(name: str, param: nn.Parameter) -> bool:
    """Biases, LayerNorm weights (1-D), position embeddings, [CLS], registers and LayerScale are not decayed."""
    return param.ndim <= 1 or name.endswith(".bias") or any(key in name for key in _NO_DECAY_NAMES)


def layer_id(name: str, num_layers: int) -> int:
    """Depth of a parameter for layer-wise LR decay: 0 for the embeddings, i+1 for block i, L+1 for the final
    norm/head."""
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
            {
                "params": [],
                "weight_decay": weight_decay if decay else 0.0,
                "lr": learning_rate * scale,
                "lr_scale": scale,
            },
        )
        group["params"].append(param)
    return [groups[key] for key in sorted(groups)]


# ---------------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------------
def metrics_jsonl(history: list[dict]) -> str:
    """A run's metrics rows (one per evaluation; kept in every checkpoint) as JSON lines: written only with the final
    folder, so that a failed or killed run never rewrites an earlier run's `metrics.jsonl`."""
    return "".join(json.dumps(row) + "\n" for row in history)


def plot_curves(history: list[dict], path: str | os.PathLike) -> Path | None:
    """Loss (train/eval) and eval accuracy against epoch, as a PNG."""
    rows = [r for r in history if "epoch" in r]
    if not rows:
        return None
    require("viz", "`plot_curves`")
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


__all__ = ["layer_id", "metrics_jsonl", "no_weight_decay", "param_groups", "plot_curves"]
