"""A Python interpreter that the tests' tool runs fork from, instead of starting a fresh one each time.

Most of a tool's start-up on a small CPU is importing torch and what transformers pulls in with it (torch._dynamo,
torch.distributed.tensor, sympy, scipy: about 5 of the 7 seconds on 2 cores). This process imports those once, then
forks one child per run. Each child is a real process of its own (its own exit status, signals, files, memory; a
SIGKILL kills it alone), set up as `python script.py args` / `python -c code` / `python -m module` would set itself
up: the run's environment, working directory, argv, sys.path (the script's folder, then PYTHONPATH), the sitecustomize
of a PYTHONPATH folder, the thread count of OMP_NUM_THREADS, stdout and stderr in files. Nothing that reads the
environment at import time is imported here: not transformers, huggingface_hub, hf_vit, timm, accelerate or datasets.

Run as `python warm_python.py SOCKET`: prints "ready" once the imports are done, then serves one run at a time on the
Unix socket SOCKET (a JSON request per connection; the reply is the child's pid, then its exit code as
`subprocess` reports it: negative for a signal). `WarmPython` below is the client side.
"""

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

# Environment-independent, and the bulk of every tool's start-up.
PRELOAD = (
    "torch",
    "torch._dynamo",
    "torch.distributed.tensor",
    "torch.fx.experimental.symbolic_shapes",
    "torchvision",
    "sympy",
    "scipy.optimize",
    "numpy",
    "PIL.Image",
    "safetensors.torch",
    "torchao",  # the int8 extra; transformers imports it at start-up wherever it is installed
)
# Must not be imported before a run sets its environment (they read it at import time) or decides to hide them.
NEVER_PRELOADED = ("transformers", "huggingface_hub", "hf_vit", "timm", "accelerate", "datasets")


def _serve(path: str) -> dict | None:
    """The server loop; returns the request in a forked child (which then runs it), None when told to stop."""
    import importlib

    _end_with_the_parent()
    for name in PRELOAD:
        with contextlib.suppress(ImportError):  # not installed: imported by the runs themselves, if at all
            importlib.import_module(name)
    leaked = [name for name in NEVER_PRELOADED if name in sys.modules]
    assert not leaked, f"imported before any run set its environment: {leaked}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen()
    print("ready", flush=True)
    while True:
        conn, _ = server.accept()
        with conn, conn.makefile("r") as reader:
            request = json.loads(reader.readline())
            if request is None:
                return None
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                server.close()
                return request
            with contextlib.suppress(OSError):  # a client that gave up has gone; the child is reaped all the same
                conn.sendall(f"{pid}\n".encode())
            _, status = os.waitpid(pid, 0)
            with contextlib.suppress(OSError):
                conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())


def _end_with_the_parent() -> None:
    """Linux: ask the kernel for SIGTERM when the test process that started this one dies, so a killed pytest run
    leaves no server behind (the forked children do not inherit this)."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the parent died before the request took effect
        sys.exit(0)


def _run(request: dict, base_path: list[str]) -> None:
    """In the child: become `python argv...` with the request's environment, folder and output files, and run."""
    import io
    import runpy
    import types

    import torch

    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for fd, name in ((1, "stdout"), (2, "stderr")):
        out = os.open(request[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(out, fd)
        os.close(out)
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))

    def text_stream(fd: int, line_buffering: bool) -> io.TextIOWrapper:
        raw = io.FileIO(fd, "w", closefd=False)
        if unbuffered:
            return io.TextIOWrapper(raw, encoding="utf-8", errors="backslashreplace", write_through=True)
        return io.TextIOWrapper(io.BufferedWriter(raw), encoding="utf-8", line_buffering=line_buffering)

    sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
    sys.stdout = sys.__stdout__ = text_stream(1, line_buffering=False)
    sys.stderr = sys.__stderr__ = text_stream(2, line_buffering=True)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 0) or os.cpu_count() or 1)

    argv = request["argv"]
    python_path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if argv[0] == "-c":
        first = ""
    elif argv[0] == "-m":
        first = os.getcwd()
    else:
        first = str(Path(argv[0]).resolve().parent)
    sys.path[:] = [first, *python_path, *base_path]
    sys.modules.pop("sitecustomize", None)
    if any((Path(p) / "sitecustomize.py").is_file() for p in python_path):
        import sitecustomize  # noqa: F401  (as site.py does at start-up)

    if argv[0] == "-c":
        sys.argv = ["-c", *argv[2:]]
        main = types.ModuleType("__main__")
        main.__dict__["__builtins__"] = __builtins__
        sys.modules["__main__"] = main
        exec(compile(argv[1], "<string>", "exec"), main.__dict__)
    elif argv[0] == "-m":
        sys.argv = [argv[1], *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(argv)
        runpy.run_path(argv[0], run_name="__main__")


class WarmPython:
    """The client: starts the server once, then `run(argv, env, cwd, timeout)` -> `subprocess.CompletedProcess`."""

    def __init__(self):
        self._folder = tempfile.TemporaryDirectory(prefix="warm_python-")
        self._socket = os.path.join(self._folder.name, "socket")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        self._server = subprocess.Popen(
            [sys.executable, __file__, self._socket], env=env, stdout=subprocess.PIPE, text=True
        )
        import selectors

        with selectors.DefaultSelector() as selector:
            selector.register(self._server.stdout, selectors.EVENT_READ)
            ready = selector.select(timeout=300)
        line = self._server.stdout.readline().strip() if ready else "(nothing within 300 s)"
        if line != "ready":
            self._server.kill()
            raise RuntimeError(f"the warm Python did not start (exit {self._server.poll()}, said {line!r})")
        self._lock = threading.Lock()

    @staticmethod
    def handles(argv: list[str]) -> bool:
        """Whether `python argv...` is a form this runs: a script, -c code or -m module, without other options."""
        return bool(argv) and (argv[0] in ("-c", "-m") and len(argv) > 1 or not argv[0].startswith("-"))

    def run(self, argv: list[str], env: dict, cwd, timeout: float) -> subprocess.CompletedProcess:
        with self._lock, tempfile.TemporaryDirectory(prefix="run-", dir=self._folder.name) as folder:
            out, err = os.path.join(folder, "stdout"), os.path.join(folder, "stderr")
            request = {"argv": argv, "env": env, "cwd": str(cwd), "stdout": out, "stderr": err}
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.connect(self._socket)
                conn.sendall((json.dumps(request) + "\n").encode())
                buffer = bytearray()
                pid = int(_line(conn, buffer))
                conn.settimeout(timeout)
                try:
                    code = int(_line(conn, buffer))
                except TimeoutError:
                    os.kill(pid, 9)
                    conn.settimeout(None)
                    _line(conn, buffer)  # the server has reaped it
                    raise subprocess.TimeoutExpired(["python", *argv], timeout, _read(out), _read(err)) from None
            return subprocess.CompletedProcess(["python", *argv], code, _read(out), _read(err))

    def close(self) -> None:
        if self._server.poll() is None:
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                    conn.connect(self._socket)
                    conn.sendall(b"null\n")
                self._server.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self._server.kill()
        self._folder.cleanup()


def _line(conn: socket.socket, buffer: bytearray) -> str:
    """The next newline-ended reply on `conn` (`buffer` keeps what came after it; the socket's timeout applies)."""
    while b"\n" not in buffer:
        chunk = conn.recv(64)
        if not chunk:
            raise ConnectionError("the warm Python closed the connection")
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return line.decode()


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


if __name__ == "__main__":
    base_path = sys.path[1:]  # without this file's folder, as a fresh interpreter's path would be
    run_request = _serve(sys.argv[1])
    if run_request is not None:
        _run(run_request, base_path)
