"""Shared by the tests: the tiny config and a way to run Python in a fresh process."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Small enough for behaviour tests on 2 CPU cores (DESIGN.md: hidden 32-64, 2 layers, image 32, patch 8).
TINY = dict(
    image_size=32,
    patch_size=8,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
)


def run_python(code_or_args, env_extra=None, cwd=None, timeout=600):
    """Run `python -c code` (str) or `python args...` (list) in a fresh process; returns CompletedProcess."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.update(env_extra or {})
    args = [sys.executable, "-c", code_or_args] if isinstance(code_or_args, str) else [sys.executable, *code_or_args]
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd or REPO, timeout=timeout)
