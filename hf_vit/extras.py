"""The optional parts of hf_vit and the pip extras that bring them.

`pip install hf_vit` brings what loading, converting and running a model needs (torch, torchvision, transformers,
safetensors, huggingface-hub, pillow, jinja2 for the model cards). The rest is an extra, named in pyproject.toml:

- `train`: training and fine-tuning (accelerate, datasets, scikit-learn for the embedded digits, matplotlib for the
  training curves);
- `viz`: the attention and feature pictures (matplotlib);
- `benchmark`: the benchmark against its peers (timm, matplotlib for the chart);
- `int8`: static int8 quantization (torchao's PT2E quantizers);
- `test`: everything the tests use.

`import hf_vit` never imports an extra's package. A function that needs one calls `require(extra)` first: a missing
package is then one `MissingExtra` (an `ImportError`) naming the pip command, and the CLIs print it as one line with
exit status 2.
"""

from __future__ import annotations

import importlib.util

EXTRAS = {
    "train": ("accelerate", "datasets", "sklearn", "matplotlib"),
    "viz": ("matplotlib",),
    "benchmark": ("timm", "matplotlib"),
    "int8": ("torchao",),
}


class MissingExtra(ImportError):
    """A feature needs a package of an extra that is not installed; the message names `pip install "hf_vit[extra]"`."""


def require(extra: str, what: str | None = None) -> None:
    """Raise `MissingExtra` unless every package of `extra` (a key of `EXTRAS`) can be imported; `what` names the
    feature in the message (default: the extra)."""
    missing = [module for module in EXTRAS[extra] if not _installed(module)]
    if missing:
        raise MissingExtra(
            f'{what or extra} needs {", ".join(missing)}, not installed: pip install "hf_vit[{extra}]"',
            name=missing[0],
        )


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or half-removed package
        return False
