"""The light install: `pip install hf_vit` without extras loads, converts and runs a model, and what needs an extra says
which one. Proved in a fresh interpreter whose import system behaves as if the extras' packages were not installed
(their modules are not found and their distributions have no metadata, so transformers' own availability checks agree).
"""

import json
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO, TINY, run_python

from hf_vit.extras import EXTRAS

# the extras' import names -> their distributions on PyPI
DISTRIBUTIONS = {"accelerate": "accelerate", "datasets": "datasets", "sklearn": "scikit-learn"}
DISTRIBUTIONS |= {"matplotlib": "matplotlib", "timm": "timm", "torchao": "torchao"}

HIDE_EXTRAS = r"""
import importlib.abc, importlib.metadata, sys

HIDDEN = {"accelerate", "datasets", "sklearn", "matplotlib", "torchao"}
HIDDEN_DISTRIBUTIONS = {"accelerate", "datasets", "scikit-learn", "scikit_learn", "matplotlib", "torchao"}


class NotInstalled(importlib.abc.MetaPathFinder):
    # every other finder, behind one that does not find the hidden packages nor their metadata
    def __init__(self, finders):
        self.finders = finders

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            return None
        for finder in self.finders:
            spec = finder.find_spec(name, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None:
                return spec
        return None

    def find_distributions(self, context=importlib.metadata.DistributionFinder.Context()):
        for finder in self.finders:
            for distribution in getattr(finder, "find_distributions", lambda context: ())(context):
                if distribution.metadata["Name"].lower() not in HIDDEN_DISTRIBUTIONS:
                    yield distribution

    def invalidate_caches(self):
        for finder in self.finders:
            getattr(finder, "invalidate_caches", lambda: None)()


sys.meta_path[:] = [NotInstalled(list(sys.meta_path))]
"""

LIGHT = r"""
import importlib.util, json, sys
from pathlib import Path

import torch

for name in HIDDEN:
    assert importlib.util.find_spec(name) is None, name
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise AssertionError(f"{name} imported")

import hf_vit
from transformers import AutoModel, AutoModelForImageClassification

tmp = Path(sys.argv[1])
x = torch.load(tmp / "x.pt")
model = AutoModelForImageClassification.from_pretrained(tmp / "hf_vit").eval()
base = AutoModel.from_pretrained(tmp / "hf_vit").eval()
converted = hf_vit.from_pretrained(str(tmp / "vit"), cache_dir=str(tmp / "cache"), verify=True).eval()
with torch.no_grad():
    outputs = dict(logits=model(x).logits, pooled=base(x).pooler_output, converted=converted(x).logits)
torch.save(outputs, tmp / "out.pt")

from hf_vit.commands import attention, train

refusals = {}
for tool, argv in [
    (train, ["--output_dir", str(tmp / "run"), "--num_train_epochs", "1"]),
    (attention, [str(tmp / "hf_vit"), str(tmp / "image.png"), "--output_dir", str(tmp / "pictures")]),
]:
    code = tool.main(argv)
    refusals[tool.__name__] = code

# every command's --help, extra or not
import contextlib, importlib, io, tomllib

helps = {}
for name, target in tomllib.loads(Path(sys.argv[2]).read_text())["project"]["scripts"].items():
    module, _, function = target.partition(":")
    shown = io.StringIO()
    with contextlib.redirect_stdout(shown), contextlib.redirect_stderr(io.StringIO()):
        try:
            code = getattr(importlib.import_module(module), function)(["--help"])
        except SystemExit as exit:
            code = exit.code
    helps[name] = [code, "usage:" in shown.getvalue()]
print(json.dumps(dict(refusals=refusals, helps=helps, loaded=sorted(m for m in HIDDEN if m in sys.modules))))
"""


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is Python 3.11's")
def test_extras_match_pyproject():
    """Every package `hf_vit.extras.require` checks is in its pip extra, and `[test]` brings every extra."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    for extra, modules in EXTRAS.items():
        assert {DISTRIBUTIONS[module] for module in modules} <= set(extras[extra]), extra
        assert not {DISTRIBUTIONS[module] for module in modules} & set(project["dependencies"]), extra
    assert f"hf_vit[{','.join(EXTRAS)}]" in extras["test"]


@pytest.mark.slow
def test_load_convert_and_run_without_the_extras(tmp_path, tiny_config):
    from PIL import Image
    from transformers import ViTConfig, ViTForImageClassification

    from hf_vit import HfViTForImageClassification

    HfViTForImageClassification(tiny_config(num_labels=3)).save_pretrained(tmp_path / "hf_vit")
    vit = ViTForImageClassification(ViTConfig(**TINY, num_labels=3)).eval()  # transformers' own writer
    vit.save_pretrained(tmp_path / "vit")
    Image.new("RGB", (32, 32), (90, 140, 200)).save(tmp_path / "image.png")
    x = torch.randn(2, 3, 32, 32)
    torch.save(x, tmp_path / "x.pt")

    result = run_python([*("-c", HIDE_EXTRAS + LIGHT), str(tmp_path), REPO / "pyproject.toml"], fresh=True)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["loaded"] == []
    assert report["helps"] and all(shown == [0, True] for shown in report["helps"].values()), report["helps"]
    # the tools that need an extra: exit 2, one line naming the pip command, nothing written
    assert report["refusals"] == {"hf_vit.commands.train": 2, "hf_vit.commands.attention": 2}
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: hf-vit-train needs accelerate, datasets, sklearn, matplotlib, not installed: "
        'pip install "hf_vit[train]"',
        'error: hf-vit-attention needs matplotlib, not installed: pip install "hf_vit[viz]"',
    ]
    assert not (tmp_path / "run").exists() and not (tmp_path / "pictures").exists()

    outputs = torch.load(tmp_path / "out.pt")
    reloaded = HfViTForImageClassification.from_pretrained(tmp_path / "hf_vit").eval()
    with torch.no_grad():
        assert torch.equal(outputs["logits"], reloaded(x).logits)
        assert (outputs["converted"] - vit(x).logits).abs().max().item() <= 1e-5  # against transformers' forward
    assert outputs["pooled"].shape == (2, TINY["hidden_size"])
    assert Path(tmp_path / "cache").is_dir()
