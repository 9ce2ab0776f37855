"""What the sweep and records tests share: a tiny run's overrides, running `sparseprop train` in this process, a
stand-in for SIGKILL, and the comparison of two runs' records."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd
import torch

from sparseprop import records, train
from sparseprop.cli import train_app as app

TINY = ["dataset=digits", "arch.depth=3", "arch.width=32", "train.iterations=60", "train.eval_interval=30",
        "train.checkpoint_interval=25", "train.log_interval=10", "progress=false", "signal.stages=[]", "threads=1"]
TIMING = re.compile(r"_time_s$")


def tiny(*changes: str, base: list[str] = TINY) -> list[str]:
    """``base`` with some of its overrides replaced or added (one override per key, as Hydra records them)."""
    merged = {o.partition("=")[0]: o for o in base}
    merged.update({o.partition("=")[0]: o for o in changes})
    return list(merged.values())


def job(sweep_dir: Path, *items: str) -> Path:
    """The one job directory of ``sweep_dir`` whose name holds all of ``items`` (e.g. ``seed=1``)."""
    found = [p for p in sweep_dir.iterdir() if p.is_dir() and set(items) <= set(p.name.split(","))]
    assert len(found) == 1, (items, found)
    return found[0]


class Killed(BaseException):
    """Stands in for SIGKILL in-process: like a kill, no ``except Exception`` sees it and nothing is recorded."""


def run_app(monkeypatch, *args: str) -> int:
    """Run `sparseprop train ARGS` in this process (Hydra included) and return its exit code."""
    monkeypatch.setattr(sys, "argv", ["sparseprop-train", *args])
    try:
        app.main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def kill_at(monkeypatch, step: int) -> None:
    """Make training stop dead at ``step``, as a kill would."""
    real = train.fit

    def fit(model, params, masks, splits, cfg, *args, on_step=None, **kwargs):
        def stop(s):
            if on_step is not None:
                on_step(s)
            if s == step:
                raise Killed()

        return real(model, params, masks, splits, cfg, *args, on_step=stop, **kwargs)

    monkeypatch.setattr(train, "fit", fit)


def summary_without_timings(run_dir: Path) -> dict:
    return {k: v for k, v in records.read_json(run_dir / records.SUMMARY).items() if not TIMING.search(k)}


def assert_same_run(a: Path, b: Path) -> None:
    """Same metrics, layers, signal rows, summary (timings aside), masks and final weights."""
    for name in (records.METRICS, records.LAYERS, records.SIGNAL):
        assert (a / name).is_file() == (b / name).is_file(), name
        if (a / name).is_file():
            pd.testing.assert_frame_equal(pd.read_csv(a / name), pd.read_csv(b / name), check_exact=True)
    assert summary_without_timings(a) == summary_without_timings(b)
    ca = torch.load(a / records.CHECKPOINT, weights_only=True)
    cb = torch.load(b / records.CHECKPOINT, weights_only=True)
    assert ca["masks"].keys() == cb["masks"].keys() and ca["model"].keys() == cb["model"].keys()
    for k in ca["masks"]:
        assert torch.equal(ca["masks"][k], cb["masks"][k]), k
    for k in ca["model"]:
        assert torch.equal(ca["model"][k], cb["model"][k]), k
