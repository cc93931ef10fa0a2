"""Shared by the tests: the tiny config, random weights and output differences, the one-error-line check, and ways to
run a tool in a fresh process or in this one."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Small enough for behaviour tests on 2 CPU cores (hidden 32-64, 2 layers, image 32, patch 8).
TINY = dict(
    image_size=32,
    patch_size=8,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
)


def perturb(model, scale=0.02, seed=None):
    """Random, not-at-init values added to every parameter (biases, norms, tokens too), so that no wrong mapping hides
    behind a default initialisation; from the global RNG, or from its own generator with `seed`. Returns the model in
    eval mode."""
    import torch

    generator = None if seed is None else torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * scale)
    return model.eval()


def max_diff(a, b) -> float:
    """The largest absolute difference between two tensors."""
    return (a - b).abs().max().item()


def error_line(result, *fragments, code=2, alone=True) -> str:
    """A tool's refusal: exit `code` (2: the user's mistake, 1: a failure of the run) with exactly one `error: ...` line
    on stderr, holding each of `fragments`, and no traceback; with `alone`, nothing else on stderr either (otherwise
    warnings may come before it). Returns the line."""
    assert result.returncode == code, (result.returncode, result.stdout[-2000:], result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if not alone:
        lines = [line for line in lines if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (other test processes may use torch.distributed at the same time)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_warm = None


def _warm_python():
    """One warm interpreter per test process (tests/warm_python.py), closed when the process ends."""
    global _warm
    if _warm is None:
        import atexit

        from warm_python import WarmPython

        _warm = WarmPython()
        atexit.register(_warm.close)
    return _warm


def run_python(code_or_args, env_extra=None, cwd=None, timeout=600, env=None, fresh=False):
    """Run `python -c code` (str) or `python args...` (list) in a process of its own; returns CompletedProcess.

    The environment is this process's with `env_extra` on top, or exactly `env`. The process is forked from a warm
    interpreter that has torch imported (tests/warm_python.py: seconds saved per run on 2 cores); `fresh=True`, or
    HF_VIT_TESTS_FRESH_PYTHON=1 for every run, starts a new interpreter instead, for runs that must see nothing
    imported before them."""
    if env is None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false", **(env_extra or {})}
    argv = ["-c", code_or_args] if isinstance(code_or_args, str) else [str(a) for a in code_or_args]
    cwd = cwd or REPO
    fresh = fresh or os.environ.get("HF_VIT_TESTS_FRESH_PYTHON") == "1" or not hasattr(os, "fork")
    from warm_python import WarmPython

    if fresh or not WarmPython.handles(argv):
        return subprocess.run(
            [sys.executable, *argv], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout
        )
    return _warm_python().run(argv, env, cwd, timeout)


def run_main(args):
    """Run a script of scripts/ (`[script, *argv]`) in this process through the `main(argv)` its shim calls: the same
    tool as `run_python(args)` without a fresh interpreter's start-up (seconds on 2 cores), for runs that end early.
    Returns an object with returncode, stdout and stderr; torch's thread count and hf_vit's logging are restored."""
    import contextlib
    import importlib
    import io
    import logging
    import re
    import types

    import torch

    shim = (REPO / args[0]).read_text()
    module = importlib.import_module(re.search(r"from (hf_vit\.commands\.\w+) import main", shim)[1])
    logger = logging.getLogger("hf_vit")
    saved = (logger.handlers[:], logger.propagate, logger.level, torch.get_num_threads())
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = module.main([str(a) for a in args[1:]])
            except SystemExit as exit:  # argparse
                code = exit.code if isinstance(exit.code, int) else 1
    finally:
        logger.handlers[:], logger.propagate, logger.level = saved[0], saved[1], saved[2]
        torch.set_num_threads(saved[3])
    return types.SimpleNamespace(returncode=code, stdout=stdout.getvalue(), stderr=stderr.getvalue())
