"""Everything a run writes goes through here: atomic files under the run's output directory."""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import torch

COMPLETE = "COMPLETE"
METRIC_COLUMNS = ["step", "split", "name", "value"]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, flush it to disk, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
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


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file written by ``write_json``."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


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
    """All arrays of an ``.npz`` file, loaded into memory."""
    import numpy as np

    with np.load(path) as z:
        return {k: z[k] for k in z.files}


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
