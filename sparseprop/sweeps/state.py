"""How a run directory stands (completed, diverged, failed, partial, busy, damaged, missing), the config its
records were made with, and discarding them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from sparseprop import records
from sparseprop.errors import SparsepropError
from sparseprop.sweeps.jobs import RUNTIME_KEYS

FINISHED = ("completed", "diverged")


@dataclass
class RunState:
    """How a run directory stands: completed, diverged, failed, partial (interrupted or running) or missing."""

    status: str
    reason: str = ""
    step: int | None = None


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one dict of dotted keys to leaf values (lists stay lists)."""
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def plain_config(node: Any) -> Any:
    """A config as plain data, its interpolations resolved where they can be resolved here, else kept as written."""
    try:
        return OmegaConf.to_container(node, resolve=True)
    except Exception:  # noqa: BLE001 - an interpolation that needs a running job or another machine
        return OmegaConf.to_container(node, resolve=False)


def saved_config(run_dir: Path) -> dict[str, Any] | None:
    """The config recorded in ``run_dir``'s last readable checkpoint, or None when there is none.

    Loaded with ``weights_only``: nothing in a checkpoint runs. A damaged checkpoint is set aside when the run resumes.
    """
    for name in (records.CHECKPOINT, records.PREVIOUS_CHECKPOINT):
        path = Path(run_dir) / name
        if path.is_file():
            try:
                ckpt = records.load_torch(path)
            except SparsepropError:
                continue
            if isinstance(ckpt, dict) and isinstance(ckpt.get("config"), dict):
                return ckpt["config"]
    return None


def config_changes(saved: Mapping[str, Any] | None, current: DictConfig | Mapping[str, Any]) -> list[str]:
    """Keys, known to both configs and not runtime-only, whose values differ, as ``key: old -> new``."""
    if saved is None:
        return []
    now = OmegaConf.to_container(current, resolve=True) if OmegaConf.is_config(current) else current
    old, new = flatten(saved), flatten(now)
    # A key only one side knows is a schema change between versions, not a different experiment:
    # new keys default to the old behaviour, so they do not make a finished run stale.
    return [f"{k}: {old[k]!r} -> {new[k]!r}" for k in sorted(old.keys() & new.keys())
            if k not in RUNTIME_KEYS and old[k] != new[k]]


def discard_records(run_dir: Path) -> list[str]:
    """Delete the records an earlier run left in ``run_dir`` (COMPLETE first) and empty its log; returns what went.

    Only the exact names a run writes (``records.record_files``) are touched, never another file of the folder;
    only call it holding the run's lock.
    """
    run_dir = Path(run_dir)
    records.clear_complete(run_dir)
    gone = []
    for name in records.record_files():
        path = run_dir / name
        if path.is_file() and not path.is_symlink():
            path.unlink()
            gone.append(name)
    log = run_dir / records.LOG
    if log.is_file() and not log.is_symlink() and log.stat().st_size:
        # The job's log handler may already have this file open for appending, so empty it in place.
        os.truncate(log, 0)
    return gone


def status_of(run_dir: Path) -> RunState:
    """How ``run_dir`` stands, from its records: COMPLETE and summary.json decide; no directory is ``missing``.

    A directory another process holds is ``busy``; a summary that does not parse is ``damaged`` (named in the reason).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return RunState("missing", "no run directory")
    holder = records.lock_holder(run_dir)
    if holder is not None:
        return RunState("busy", f"in use by another sparseprop process (pid {holder})")
    summary: dict[str, Any] = {}
    if (run_dir / records.SUMMARY).is_file():
        try:
            summary = records.read_summary(run_dir / records.SUMMARY)
        except SparsepropError as exc:
            return RunState("damaged", f"{exc}; run the same command again to redo it from its checkpoint")
    status, step = summary.get("status"), summary.get("step")
    if records.is_complete(run_dir) and status in FINISHED:
        return RunState(status, summary.get("reason") or "", step)
    if status == "failed":
        return RunState("failed", summary.get("reason") or "", step)
    if summary and status in FINISHED:
        return RunState("partial", f"not finished: stopped at step {step} while writing its final records", step)
    if summary:
        return RunState("partial", f"not finished: step {step} of {summary.get('iterations')}", step)
    if (run_dir / records.CHECKPOINT).is_file():
        return RunState("partial", "not finished: a checkpoint but no summary")
    return RunState("partial", "not finished: no records yet")
