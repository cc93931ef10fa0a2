"""The tests' tool runs fork from a warm interpreter (tests/warm_python.py): a run there must see what it would see in a
fresh `python`, or the tests that use it would prove nothing about real runs."""

import json
import signal

import pytest
from helpers import run_python

PROBE = """\
import json, os, sys
print(json.dumps({
    "argv": sys.argv, "cwd": os.getcwd(), "path0": sys.path[0], "name": __name__,
    "file": globals().get("__file__"), "env": os.environ.get("PROBE_VALUE"), "path_set": "PATH" in os.environ,
    "path": sys.path,
    "hub_imported": "huggingface_hub" in sys.modules, "hf_vit_imported": "hf_vit" in sys.modules,
}))
print("to stderr", file=sys.stderr)
"""


@pytest.mark.parametrize("form", ["script", "-c", "-m"])
def test_a_warm_run_sees_what_a_fresh_interpreter_sees(tmp_path, form):
    (tmp_path / "probe_module.py").write_text(PROBE)
    extra = tmp_path / "extra"
    extra.mkdir()
    env = {"PROBE_VALUE": "42", "PYTHONPATH": str(extra)}
    argv = {
        "script": [tmp_path / "probe_module.py", "a", "b c"],
        "-c": ["-c", PROBE, "a", "b c"],
        "-m": ["-m", "probe_module", "a", "b c"],
    }[form]
    runs = [run_python(argv, env=env, cwd=tmp_path, fresh=fresh) for fresh in (True, False)]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
        assert run.stderr == "to stderr\n"
    fresh, warm = (json.loads(run.stdout) for run in runs)
    assert warm == fresh
    assert warm["env"] == "42" and not warm["path_set"]
    assert warm["path"][1] == str(extra)
    assert not warm["hub_imported"] and not warm["hf_vit_imported"]


@pytest.mark.slow
def test_exit_codes_signals_and_tracebacks_are_a_real_processs(tmp_path):
    for threads in ("1", "2"):  # torch is imported before the run sets OMP_NUM_THREADS: it must still apply
        assert (
            run_python("import torch; print(torch.get_num_threads())", env_extra={"OMP_NUM_THREADS": threads}).stdout
            == f"{threads}\n"
        )
    assert run_python("import sys; sys.exit(3)").returncode == 3
    assert run_python("raise SystemExit('bye')").returncode == 1
    killed = run_python("import os, signal; print('before', flush=True); os.kill(os.getpid(), signal.SIGKILL)")
    assert killed.returncode == -signal.SIGKILL and killed.stdout == "before\n"
    failed = run_python("def f():\n    raise ValueError('boom')\nf()")
    assert failed.returncode == 1
    assert failed.stderr.splitlines()[0] == "Traceback (most recent call last):"
    assert failed.stderr.splitlines()[-1] == "ValueError: boom"
    # a file written by one run is seen by the next; the runs share nothing else
    first = run_python(f"import torch; torch.manual_seed(1); open({str(tmp_path / 'x')!r}, 'w').write('1'); X = 5")
    second = run_python(f"print(open({str(tmp_path / 'x')!r}).read(), 'X' in globals())")
    assert first.returncode == 0 and second.stdout == "1 False\n"


def test_sitecustomize_of_a_pythonpath_folder_runs_first(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import builtins\nbuiltins.CUSTOMIZED = True\n")
    runs = [
        run_python("print(getattr(__builtins__, 'CUSTOMIZED', False))", env={"PYTHONPATH": str(site)}, fresh=fresh)
        for fresh in (True, False)
    ]
    assert [run.stdout for run in runs] == ["True\n", "True\n"]


@pytest.mark.slow
def test_a_run_past_its_timeout_is_killed(tmp_path):
    import subprocess

    with pytest.raises(subprocess.TimeoutExpired):
        run_python("import time; print('started', flush=True); time.sleep(60)", timeout=3)
    assert run_python("print('next')").stdout == "next\n"  # the warm interpreter still serves


def test_importing_hf_vit_writes_nothing_to_stderr():
    """In a fresh interpreter (where torchao, the int8 extra, is imported by transformers at start-up and torch logs
    its pytree deprecation warnings): every tool's stderr starts clean."""
    result = run_python("import hf_vit, hf_vit.hub, hf_vit.cli", fresh=True)
    assert result.returncode == 0 and result.stderr == "", result.stderr[-2000:]
