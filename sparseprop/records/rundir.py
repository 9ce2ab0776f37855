"""A run directory held by one process: its lock, the temporaries a killed writer left, damaged records set aside,
and the marker of a finished run."""

from __future__ import annotations

import errno
import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sparseprop.errors import SparsepropError
from sparseprop.records.files import RecordsError, atomic_write_text, os_error
from sparseprop.records.names import COMPLETE, LOCK, record_files


class RunBusy(SparsepropError):
    """Another process holds the lock of a run directory."""


def set_aside(path: Path) -> Path:
    """Rename a damaged record to ``<name>.damaged-<n>`` (kept for inspection, never read again); returns the new path."""
    n = 1
    while (path.parent / f"{path.name}.damaged-{n}").exists():
        n += 1
    target = path.parent / f"{path.name}.damaged-{n}"
    os.replace(path, target)
    return target


def remove_temporaries(run_dir: str | os.PathLike) -> list[str]:
    """Delete the temporaries a killed writer of ``run_dir`` left behind; only call it holding the run's lock.

    Records are written to ``.<name>.<random>.tmp``; figures by older versions to ``.<name>.<random>.<ext>``.
    Only temporaries of the names in ``record_files`` are touched.
    """
    run_dir = Path(run_dir)
    names = record_files()
    gone = []
    for path in run_dir.glob(".*"):
        inner = path.name[1:]
        if not path.is_file() or path.is_symlink():
            continue
        base, _, rest = inner.rpartition(".")  # rest: tmp (or an older figure's extension)
        stem, _, token = base.rpartition(".")
        if stem in names and token and (rest == "tmp" or (rest in ("png", "pdf") and stem.endswith(f".{rest}"))):
            path.unlink(missing_ok=True)
            gone.append(path.name)
    return gone


def lock_holder(run_dir: str | os.PathLike) -> str | None:
    """The process id (as text) holding ``run_dir``'s lock, or None when no process holds it."""
    path = Path(run_dir) / LOCK
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except BlockingIOError:
        return os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
    finally:
        os.close(fd)


@contextmanager
def run_lock(run_dir: str | os.PathLike) -> Iterator[bool]:
    """Hold the exclusive lock of ``run_dir`` while the block runs; yields False when the directory cannot be written.

    The lock is ``fcntl.flock`` on ``.sparseprop.lock``, so the system releases it when the process dies,
    however it dies. Another process holding it raises ``RunBusy`` naming the directory and its process id.
    """
    run_dir = Path(run_dir)
    path = run_dir / LOCK
    fd = None
    try:
        # Never through a link: the lock file is truncated and rewritten, so a link would clobber its target.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP and path.is_symlink():
            raise RecordsError(f"{path} is a link, not the lock file sparseprop writes; remove the link, or write to "
                               "another directory") from None
        if exc.errno in (errno.ENOTDIR, errno.ENOENT, errno.EEXIST, errno.ELOOP):
            raise RecordsError(f"{run_dir} is not a directory (a file or a dangling link)") from None
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise os_error(path, exc) from None
    if fd is None:
        yield False  # nobody can write here, so nobody can race us: finished runs can still be read
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            raise RunBusy(f"{run_dir} is in use by another sparseprop process (pid {holder}); wait for it to "
                          "finish, or write to another directory") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        except OSError as exc:
            raise os_error(path, exc) from None
        yield True
    finally:
        os.close(fd)  # closing the only descriptor releases the lock


def mark_complete(run_dir: str | os.PathLike) -> None:
    """Write the completion marker; it is always the last file a finished run writes."""
    atomic_write_text(Path(run_dir) / COMPLETE, "complete\n")


def is_complete(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` holds a finished run."""
    return (Path(run_dir) / COMPLETE).is_file()


def clear_complete(run_dir: str | os.PathLike) -> None:
    """Remove the completion marker (a run is being redone)."""
    try:
        os.unlink(Path(run_dir) / COMPLETE)
    except FileNotFoundError:
        pass
