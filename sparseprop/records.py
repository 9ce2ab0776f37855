"""Everything a run writes goes through here: atomic files under the run's output directory."""

from __future__ import annotations

import errno
import fcntl
import io
import json
import math
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import pandas as pd
import torch

from sparseprop.errors import SparsepropError

COMPLETE = "COMPLETE"
METRIC_COLUMNS = ["step", "split", "name", "value"]
CHECKPOINT = "checkpoint.pt"
# The checkpoint before the last one, kept so a damaged checkpoint costs one interval, not the run.
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"
# Hydra's job log (``${hydra.job.name}.log``): emptied, never deleted, by ``resume=false``.
LOG = "train.log"
# Held (fcntl.flock) by the one process writing a run directory; it holds that process's id.
LOCK = ".sparseprop.lock"
# The figures a run draws of itself, each as PNG and PDF (sparseprop.runner.plots.run_figures).
FIGURES = ("training_curves", "layer_kept", "jsv_histogram", "layer_jsv", "jsv_training", "isometry_curve")
# Every record file a run writes besides its figures, its log, its lock and .hydra/.
DATA_FILES = ("summary.json", "metrics.csv", "layers.csv", "signal.csv", "isometry.csv", "spectra.npz",
              CHECKPOINT, PREVIOUS_CHECKPOINT, COMPLETE)


def record_files() -> tuple[str, ...]:
    """The exact names of the files a run writes and ``resume=false`` deletes (its log is emptied instead)."""
    return (*DATA_FILES, *(f"{stem}.{ext}" for stem in FIGURES for ext in ("png", "pdf")))


class RecordsError(SparsepropError):
    """A record that cannot be written or read (full disk, read-only directory, a file where a folder should be)."""


class DamagedRecord(RecordsError, ValueError):
    """A record file that exists but cannot be parsed (truncated, garbage)."""

    def __init__(self, path: str | os.PathLike, exc: BaseException) -> None:
        self.path = Path(path)
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        super().__init__(f"{self.path} is damaged ({type(exc).__name__}{': ' + detail[:120] if detail else ''})")


class RunBusy(SparsepropError):
    """Another process holds the lock of a run directory."""


def os_error(path: str | os.PathLike, exc: OSError, doing: str = "write") -> RecordsError:
    """An OSError as a one-line RecordsError that names the path and the reason."""
    return RecordsError(f"cannot {doing} {path}: {exc.strerror or exc}")


def temporary_name(path: Path) -> Path:
    """A fresh temporary name beside ``path``: ``.<name>.<random>.tmp`` (what ``remove_temporaries`` matches)."""
    return path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"


def create_temporary(path: Path) -> Path:
    """Create an empty temporary file beside ``path`` with the permissions the user's umask gives (not mkstemp's 0600)."""
    while True:
        tmp = temporary_name(path)
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666))
            return tmp
        except FileExistsError:
            continue


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, flush it to disk, then rename it into place.

    Any OSError (full disk, read-only directory) removes the temporary and becomes a one-line ``RecordsError``.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = create_temporary(path)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if isinstance(exc, OSError):
            raise os_error(path, exc) from None
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write ``text`` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no inf/nan; strings keep them readable and parseable.
    if hasattr(value, "item") and callable(value.item):
        return _jsonable(value.item())
    return value


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON (non-finite floats as strings)."""
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")


def check_regular(path: str | os.PathLike) -> None:
    """Refuse to read anything but a regular file: a named pipe in a record's place would block the reader for ever."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise os_error(path, exc, "read") from None
    if not stat.S_ISREG(mode):
        raise RecordsError(f"cannot read {path}: not a regular file")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file written by ``write_json``; a file that does not parse raises ``DamagedRecord``."""
    check_regular(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise DamagedRecord(path, exc) from None
    except FileNotFoundError:
        raise
    except OSError as exc:  # unreadable (permissions), a folder: one line naming it
        raise os_error(path, exc, "read") from None


def read_summary(path: str | os.PathLike) -> dict[str, Any]:
    """A run's ``summary.json``: a JSON object with a ``status``, else ``DamagedRecord``."""
    summary = read_json(path)
    if not isinstance(summary, dict) or not isinstance(summary.get("status"), str):
        raise DamagedRecord(path, ValueError("not a summary: no status"))
    return summary


def read_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read a CSV record; a file that does not parse raises ``DamagedRecord`` (an empty file is an empty table)."""
    check_regular(path)
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (ValueError, pd.errors.ParserError) as exc:
        raise DamagedRecord(path, exc) from None
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise os_error(path, exc, "read") from None


def write_csv(path: str | os.PathLike, rows: Iterable[dict[str, Any]] | pd.DataFrame,
              columns: list[str] | None = None) -> None:
    """Atomically write rows (dicts or a DataFrame) as CSV."""
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows), columns=columns)
    atomic_write_text(path, frame.to_csv(index=False))


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    """Atomically ``torch.save`` ``obj``."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def write_npz(path: str | os.PathLike, arrays: dict[str, Any]) -> None:
    """Atomically write named arrays as a compressed NumPy ``.npz`` file."""
    import numpy as np

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def read_npz(path: str | os.PathLike) -> dict[str, Any]:
    """All arrays of an ``.npz`` file, loaded into memory (never pickles); one that does not parse is ``DamagedRecord``."""
    import zipfile

    import numpy as np

    check_regular(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise DamagedRecord(path, exc) from None
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise os_error(path, exc, "read") from None


def load_torch(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """Load a checkpoint without running code from it (``weights_only``); one that does not load is ``DamagedRecord``."""
    import warnings

    check_regular(path)
    try:
        with warnings.catch_warnings():
            # A file sparseprop did not write can make torch warn (an unusual pickle protocol) before refusing
            # it; the refusal is named as one DamagedRecord, so the warning would only add lines to stderr.
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except OSError as exc:
        raise os_error(path, exc, "read") from None
    except Exception as exc:  # noqa: BLE001 - unpickling garbage raises anything; a refused payload too
        if "weights only load failed" in str(exc).lower():
            # torch's own message suggests loading it unsafely; say what it means for a run directory instead.
            exc = ValueError("it holds objects other than tensors and plain data, so it was not loaded")
        raise DamagedRecord(path, exc) from None


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
