"""The Hydra application behind `sparseprop train`: one job = one run directory."""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from sparseprop import config, records
from sparseprop.config import CONF_DIR
from sparseprop.errors import SparsepropError

log = logging.getLogger("sparseprop")


def record_failure(out: Path, status: str, reason: str) -> None:
    """Leave a summary that says the run did not finish, so nothing looks like a finished run."""
    records.write_json(out / "summary.json", {"status": status, "reason": reason})


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> dict:
    """Run one job in its Hydra output directory; in a sweep a failing job is recorded, not raised."""
    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    single = hc.mode == RunMode.RUN
    from sparseprop.run import Run

    if cfg.resume and records.is_complete(out):
        log.info("already complete, skipped: %s", out)
        return records.read_json(out / "summary.json")
    try:
        config.validate(cfg)
        summary = Run(cfg, out).execute()
    except SparsepropError as exc:
        record_failure(out, "failed", str(exc))
        if single:
            print(f"sparseprop: error: {exc}", file=sys.stderr)
            sys.exit(2)
        log.error("failed: %s", exc)
        return {"status": "failed", "reason": str(exc)}
    except Exception as exc:  # noqa: BLE001 - in a sweep one broken job must not stop the others
        reason = f"{type(exc).__name__}: {exc}"
        record_failure(out, "failed", reason)
        if single:
            raise
        log.error("failed: %s\n%s", reason, traceback.format_exc())
        return {"status": "failed", "reason": reason}
    if summary["status"] != "completed":
        log.error("%s: %s", summary["status"], summary["reason"])
        if single:
            print(f"sparseprop: {summary['status']}: {summary['reason']} (records in {out})", file=sys.stderr)
            sys.exit(3)
    else:
        log.info("done: test error %.2f%% (best of last %d: %.2f%%) in %s", summary.get("final_test_error_pct", float("nan")),
                 cfg.train.best_of_last, summary.get("best_last_test_error_pct", float("nan")), out)
    return summary
