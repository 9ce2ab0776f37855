"""What the records tests share: a run directory's files as they stand, a refused command's one line, a pickle that
would run code, and writes that fail as on a read-only mount or a full disk."""

from __future__ import annotations

import os
from pathlib import Path

from sparseprop import records


def snapshot(run_dir: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``run_dir`` (hidden ones included, the lock its holder writes aside) with bytes and mtime."""
    return {str(p.relative_to(run_dir)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(run_dir.rglob("*")) if p.is_file() and p.name != records.LOCK}


def one_error_line(err: str) -> str:
    """The one stderr line of a refused command (a traceback would add lines)."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("sparseprop: error: "), err
    return lines[0]


class Payload:
    """Pickles to a call of ``exec``: loading it with ``weights_only=False`` writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def fail_writes(monkeypatch, code: int, under: Path) -> None:
    """Every file opened for writing under ``under`` fails with ``code`` (EROFS: a read-only mount, even for root)."""
    real_open = os.open

    def open_(path, flags, *args, **kwargs):
        if str(path).startswith(str(under)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)
