"""Ctrl-C while a command starts: `import hf_vit` takes seconds (torch, transformers), and an interrupt then would
print the import's traceback. While a command imports hf_vit, an interrupt ends the process the way the commands'
exit convention does (`hf_vit.cli`): one `error: interrupted` line, exit status 130. Only the standard library here:
this runs before the heavy imports."""

from __future__ import annotations

import signal
import sys
import threading

COMMAND_IMPORT = "from hf_vit.commands."  # what a console entry point (and each scripts/ shim) runs first


def _starting_a_command() -> bool:
    """Whether this process's main module is an hf_vit command's entry point or shim (and not a user's program that
    imports hf_vit, whose interrupt stays Python's own)."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if not path:
        return False
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return COMMAND_IMPORT in file.read(8192)
    except OSError:
        return False


def _interrupted(signum, frame):
    print("error: interrupted", file=sys.stderr, flush=True)
    raise SystemExit(130)


def quiet_interrupt():
    """While a command imports hf_vit, Ctrl-C is `error: interrupted` and exit 130; returns the function that gives
    the interrupt back to Python (called once the imports are done)."""
    if threading.current_thread() is not threading.main_thread() or not _starting_a_command():
        return lambda: None
    previous = signal.signal(signal.SIGINT, _interrupted)
    return lambda: signal.signal(signal.SIGINT, previous)
