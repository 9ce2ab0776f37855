"""Record files written atomically (a temporary beside the file, flushed, renamed into place) and read back with
damage named in one line: JSON, CSV, NumPy arrays and checkpoints."""

from __future__ import annotations

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


class RecordsError(SparsepropError):
    """A record that cannot be written or read (full disk, read-only directory, a file where a folder should be)."""


class DamagedRecord(RecordsError, ValueError):
    """A record file that exists but cannot be parsed (truncated, garbage)."""

    def __init__(self, path: str | os.PathLike, exc: BaseException) -> None:
        self.path = Path(path)
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        super().__init__(f"{self.path} is damaged ({type(exc).__name__}{': ' + detail[:120] if detail else ''})")


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


def overwrite_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON into the blocks of the existing file ``path``: no temporary, so not atomic.

    For the one record that must still be written when the disk is full (a failed run's summary, which
    must not go on saying "running"): truncating the old text frees the room the new one needs.
    """
    data = (json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n").encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "wb") as f:
            f.truncate(0)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise os_error(path, exc) from None


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


@contextmanager
def reading(path: str | os.PathLike, damaged: tuple[type[BaseException], ...]) -> Iterator[None]:
    """Read a record inside the block: only a regular file is read, the ``damaged`` errors (a file that does not
    parse) become ``DamagedRecord``, and any other OSError but a missing file one line naming the path."""
    check_regular(path)
    try:
        yield
    except damaged as exc:
        raise DamagedRecord(path, exc) from None
    except FileNotFoundError:
        raise
    except OSError as exc:  # unreadable (permissions), a folder: one line naming it
        raise os_error(path, exc, "read") from None


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file written by ``write_json``; a file that does not parse raises ``DamagedRecord``."""
    with reading(path, (ValueError,)):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        with open(path, encoding="utf-8") as f:
            return json.load(f)


def read_summary(path: str | os.PathLike) -> dict[str, Any]:
    """A run's ``summary.json``: a JSON object with a ``status``, else ``DamagedRecord``."""
    summary = read_json(path)
    if not isinstance(summary, dict) or not isinstance(summary.get("status"), str):
        raise DamagedRecord(path, ValueError("not a summary: no status"))
    return summary


def read_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read a CSV record; a file that does not parse raises ``DamagedRecord`` (an empty file is an empty table)."""
    with reading(path, (ValueError, pd.errors.ParserError)):
        try:
            return pd.read_csv(path)
        except pd.errors.EmptyDataError:
            return pd.DataFrame()


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

    with reading(path, (ValueError, EOFError, zipfile.BadZipFile, KeyError)):
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}


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
