"""The Hydra application behind `sparseprop train`: one job = one run directory, skipped, resumed or run afresh."""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from sparseprop import config, records, sweep
from sparseprop.config import CONF_DIR
from sparseprop.errors import SparsepropError

log = logging.getLogger("sparseprop")


def record_failure(out: Path, reason: str, error_type: str) -> None:
    """Mark the run failed with its reason, keeping what its last checkpoint recorded (step, metrics so far)."""
    records.clear_complete(out)
    path = out / "summary.json"
    summary: dict[str, Any] = {}
    if path.is_file():
        try:
            summary = records.read_json(path)
        except ValueError:
            summary = {}
    summary.update(status="failed", reason=reason, error_type=error_type)
    records.write_json(path, summary)


def stale_reason(out: Path, cfg: DictConfig) -> str | None:
    """Why the records in ``out`` cannot be skipped or resumed under ``cfg`` (another config made them), or None."""
    changes = sweep.config_changes(sweep.saved_config(out), cfg)
    if not changes:
        return None
    shown = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3 else "")
    return (f"the records in {out} were made with another config ({shown}); rerun with resume=false to discard "
            "them, or write to another directory (hydra.sweep.dir=... or hydra.run.dir=...)")


def apply_job_threads(hc: Any, cfg: DictConfig) -> None:
    """In a parallel sweep with ``threads=0``, give torch a fair share of the cores so jobs do not oversubscribe."""
    if cfg.threads != 0 or hc.mode != RunMode.MULTIRUN:
        return
    cores = sweep.available_cores()
    threads = sweep.job_threads(hc.launcher, cores)
    if threads:
        import torch

        torch.set_num_threads(threads)
        log.info("%d torch threads for this job (%d cores, launcher %s)", threads, cores,
                 hc.runtime.choices.get("hydra/launcher"))


def finish_single(out: Path, summary: dict[str, Any]) -> None:
    """A single run that ended without completing says so on stderr and exits non-zero."""
    print(f"sparseprop: {summary['status']}: {summary.get('reason', '')} (records in {out})", file=sys.stderr)
    sys.exit(sweep.UNFINISHED_EXIT)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def task(cfg: DictConfig) -> dict:
    """Run one job in its Hydra output directory; in a sweep a failing job is recorded, not raised."""
    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    single = hc.mode == RunMode.RUN
    from sparseprop.run import Run

    sweep.remove_temporaries(out)
    if not cfg.resume:
        gone = sweep.discard_records(out)
        if gone:
            log.info("resume=false: discarded %s", ", ".join(gone))
    else:
        reason = stale_reason(out, cfg)
        if reason is not None:
            if single:  # bad input: nothing is touched
                print(f"sparseprop: error: {reason}", file=sys.stderr)
                sys.exit(2)
            # In a sweep the job is marked failed, so the report and `collect` show it; its files stay.
            record_failure(out, reason, "StaleRecords")
            log.error("failed: %s", reason)
            return {"status": "failed", "reason": reason}
        if records.is_complete(out) and (out / "summary.json").is_file():
            summary = records.read_json(out / "summary.json")
            log.info("already finished (%s), skipped: %s", summary["status"], out)
            if single and summary["status"] != "completed":
                finish_single(out, summary)
            return summary
    apply_job_threads(hc, cfg)
    try:
        config.validate(cfg)
        summary = Run(cfg, out).execute()
    except SparsepropError as exc:
        record_failure(out, str(exc), type(exc).__name__)
        if single:
            print(f"sparseprop: error: {exc}", file=sys.stderr)
            sys.exit(2)
        log.error("failed: %s", exc)
        return {"status": "failed", "reason": str(exc)}
    except Exception as exc:  # noqa: BLE001 - in a sweep one broken job must not stop the others
        reason = f"{type(exc).__name__}: {exc}"
        record_failure(out, reason, type(exc).__name__)
        if single:
            raise
        log.error("failed: %s\n%s", reason, traceback.format_exc())
        return {"status": "failed", "reason": reason}
    if summary["status"] != "completed":
        log.error("%s: %s", summary["status"], summary["reason"])
        if single:
            finish_single(out, summary)
    else:
        log.info("done: test error %.2f%% (best of last %d: %.2f%%) in %s",
                 summary.get("final_test_error_pct", float("nan")), cfg.train.best_of_last,
                 summary.get("best_last_test_error_pct", float("nan")), out)
    return summary


def main() -> None:
    """`sparseprop train` with Hydra's arguments in ``sys.argv``; exits 3 if a sweep job did not complete."""
    sys.argv = [sys.argv[0], *sweep.with_sweep_dir(sys.argv[1:])]
    sweep.last_report = None
    task()
    if sweep.last_report is not None and sweep.last_report.unfinished:
        sys.exit(sweep.UNFINISHED_EXIT)
