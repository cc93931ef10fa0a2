"""Will a step fit? The memory and disk a load or a conversion needs, against what the machine has, so that a model
too big for it is refused in one line instead of the process being killed by the kernel.

What is available is read through `available_memory` and `free_disk`. For tests only, the environment variables
`HF_VIT_AVAILABLE_MEMORY` and `HF_VIT_FREE_DISK` (bytes) replace the machine's figures, so the refusal can be
exercised without a checkpoint bigger than the machine.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

MEMORY_OVERRIDE = "HF_VIT_AVAILABLE_MEMORY"  # for tests only
DISK_OVERRIDE = "HF_VIT_FREE_DISK"  # for tests only
# Loading holds the weights plus transformers' and torch's own working memory (7% measured on a 7B in bf16).
LOAD_OVERHEAD = 1.1


def available_memory() -> int | None:
    """Bytes of memory a new allocation can get without swapping (MemAvailable); None when it cannot be told."""
    if os.environ.get(MEMORY_OVERRIDE):
        return int(os.environ[MEMORY_OVERRIDE])
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        return int(psutil.virtual_memory().available)
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def free_disk(path: str | os.PathLike) -> int:
    """Free bytes on the disk that holds `path` (or would: its nearest existing parent)."""
    if os.environ.get(DISK_OVERRIDE):
        return int(os.environ[DISK_OVERRIDE])
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def gigabytes(size: int) -> str:
    return f"{size / 1e9:.2f} GB"


def check_fits(what: str, *, memory: int | None = None, disk: int | None = None, disk_path=None) -> None:
    """Refuse, in one ValueError naming both figures and the ways out, a step needing `memory` bytes of memory
    and/or `disk` bytes of disk at `disk_path` when the machine has less."""
    problems = []
    if memory is not None:
        have = available_memory()
        if have is not None and memory > have:
            problems.append(f"about {gigabytes(memory)} of memory, and {gigabytes(have)} is available")
    if disk is not None and disk_path is not None:
        have = free_disk(disk_path)
        if disk > have:
            problems.append(
                f"{gigabytes(disk)} of disk for the converted weights, and {disk_path} has {gigabytes(have)} free"
            )
    if problems:
        raise ValueError(
            f"{what} needs {' and '.join(problems)}: pass a smaller `dtype` (e.g. dtype=torch.bfloat16), "
            '`device_map="auto"` (with `max_memory` and `offload_folder`, to keep part of the weights on disk), '
            "or `cache_dir` on a disk with more room"
        )
