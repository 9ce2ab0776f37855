"""What parallel launchers need: torch threads per job, and cleaning what killed joblib sweeps left behind."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping


def available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def job_threads(launcher: Mapping[str, Any], cores: int) -> int:
    """Torch threads per job under ``launcher`` so parallel jobs do not oversubscribe ``cores`` (0: torch's default)."""
    target = str(launcher.get("_target_", ""))
    if "joblib" in target.lower():
        n_jobs = int(launcher.get("n_jobs") or -1)
        parallel = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)  # joblib: -1 = all cores, -2 = all but one
        return max(1, cores // min(parallel, cores))
    if launcher.get("cpus_per_task"):
        return int(launcher["cpus_per_task"])
    return 0


# What joblib's loky workers leave in shared memory when their sweep is killed: memmapping folders and
# named semaphores, each named by the process id of the sweep that made them.
_SHARED_MEMORY = re.compile(r"^(?:joblib_memmapping_folder_(\d+)_.+|sem\.loky-(\d+)-.+)$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_shared_memory(root: Path = Path("/dev/shm")) -> list[str]:
    """Remove what killed joblib sweeps of this user left in ``root``: empty memmapping folders and loky semaphores.

    Only entries whose sweep process is gone are touched; a live sweep's are left alone, and so are folders
    that still hold data.
    """
    gone: list[str] = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return gone
    for entry in entries:
        match = _SHARED_MEMORY.match(entry.name)
        if not match:
            continue
        try:
            if entry.stat(follow_symlinks=False).st_uid != os.getuid() or _alive(int(match[1] or match[2])):
                continue
            if entry.is_dir(follow_symlinks=False):
                os.rmdir(entry.path)  # fails, and is left, if it is not empty
            else:
                os.unlink(entry.path)
            gone.append(entry.name)
        except OSError:
            continue
    return gone
