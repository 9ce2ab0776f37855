"""The Hydra application behind `sparseprop train`: one job = one run directory, skipped, resumed or run afresh."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sparseprop import config, plugins, records
from sparseprop.runner import checks
from sparseprop.sweeps import sweep
from sparseprop.sweeps.jobs import override_key
from sparseprop.sweeps.launchers import available_cores, job_threads
from sparseprop.sweeps.report import UNFINISHED_EXIT
from sparseprop.sweeps.state import config_changes, discard_records, saved_config
from sparseprop.args import exit_bad_input, parse_train_args
from sparseprop.config import CONF_DIR
from sparseprop.errors import SparsepropError

log = logging.getLogger("sparseprop")
# Every option (plugins' included) is registered when this module is imported: a launcher's worker process
# imports it to unpickle the job's task, before the job's config, whose nodes are the options' schemas.
plugins.load()


def record_failure(out: Path, reason: str, error_type: str) -> None:
    """Mark the run failed with its reason, keeping what its last checkpoint recorded (step, metrics so far).

    Best effort: when the failure is that nothing can be written (full disk), it is only logged.
    """
    path = out / records.SUMMARY
    summary: dict[str, Any] = {}
    try:
        records.clear_complete(out)
        if path.is_file():
            try:
                summary = records.read_summary(path)
            except SparsepropError:
                summary = {}
        summary.update(status="failed", reason=reason, error_type=error_type)
        try:
            records.write_json(path, summary)
        except records.RecordsError:
            if not path.is_file():
                raise
            # A full disk leaves no room for a temporary file: the stale summary's own blocks take the
            # failure instead (not atomic, but a summary still saying "running" would hide it).
            records.overwrite_json(path, summary)
    except (OSError, SparsepropError) as exc:
        log.error("could not record the failure: %s", exc)


def stale_reason(out: Path, cfg: DictConfig) -> str | None:
    """Why the records in ``out`` cannot be skipped or resumed under ``cfg`` (another config made them), or None."""
    changes = config_changes(saved_config(out), cfg)
    if not changes:
        return None
    shown = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3 else "")
    return (f"the records in {out} were made with another config ({shown}); rerun with resume=false to discard "
            "them, or write to another directory (hydra.sweep.dir=... or hydra.run.dir=...)")


def apply_job_threads(hc: Any, cfg: DictConfig) -> None:
    """In a parallel sweep with ``threads=0``, give torch a fair share of the cores so jobs do not oversubscribe."""
    if cfg.threads != 0 or hc.mode != RunMode.MULTIRUN:
        return
    cores = available_cores()
    threads = job_threads(hc.launcher, cores)
    if threads:
        import torch

        torch.set_num_threads(threads)
        log.info("%d torch threads for this job (%d cores, launcher %s)", threads, cores,
                 hc.runtime.choices.get("hydra/launcher"))


def finish_single(out: Path, summary: dict[str, Any]) -> None:
    """A single run that ended without completing says so on stderr and exits non-zero."""
    print(f"sparseprop: {summary['status']}: {summary.get('reason', '')} (records in {out})", file=sys.stderr)
    sys.exit(UNFINISHED_EXIT)


def write_hydra_records(out: Path, cfg: DictConfig, hc: Any) -> None:
    """Write .hydra/ (config, Hydra config, overrides) as Hydra would, but only once this job holds the directory.

    conf/train.yaml turns Hydra's own copy off (``hydra.output_subdir: null``): Hydra writes it before the job
    starts, so a second process on a busy directory would overwrite the config of the run it belongs to.
    """
    records.atomic_write_text(out / records.HYDRA_CONFIG, OmegaConf.to_yaml(cfg))
    records.atomic_write_text(out / records.HYDRA_SETTINGS, OmegaConf.to_yaml(OmegaConf.create({"hydra": hc})))
    records.atomic_write_text(out / records.HYDRA_OVERRIDES, OmegaConf.to_yaml(list(hc.overrides.task)))


def finished_summary(out: Path) -> dict[str, Any] | None:
    """The summary of a finished run in ``out`` (COMPLETE and a readable summary), else None.

    A damaged summary of a finished run is named on the log; the run is then redone from its checkpoint.
    """
    if not records.is_complete(out):
        return None
    try:
        return records.read_summary(out / records.SUMMARY)
    except FileNotFoundError:
        return None
    except SparsepropError as exc:
        log.warning("%s; redoing the run from its checkpoint", exc)
        return None


def detach_file_logs(out: Path) -> None:
    """Stop logging into files under ``out`` (a read-only directory: a log line must not become a traceback)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).is_relative_to(out):
            root.removeHandler(handler)
            handler.close()


def read_only_job(out: Path, cfg: DictConfig, single: bool) -> dict:
    """A job whose directory cannot be written: a finished run of this config is skipped, anything else refused."""
    detach_file_logs(out)
    summary = finished_summary(out) if cfg.resume else None
    stale = stale_reason(out, cfg) if cfg.resume else None
    reason = stale or f"cannot write to {out} (read-only or not permitted)"
    if summary is not None and stale is None:
        log.info("already finished (%s), skipped (read-only): %s", summary["status"], out)
        if single and summary["status"] != "completed":
            finish_single(out, summary)
        return summary
    if single:
        exit_bad_input(reason + ("" if stale else "; write to another directory (hydra.run.dir=...)"))
    print(f"sparseprop: failed: {reason}", file=sys.stderr)
    return {"status": "failed", "reason": reason}


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def task(cfg: DictConfig) -> dict:
    """Run one job in its Hydra output directory, holding its lock; in a sweep a failing job is recorded, not raised."""
    for key in checks.drop_foreign_settings(cfg):
        log.info("%s is set for the jobs of this sweep whose option has it; this job's does not", key)
    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    single = hc.mode == RunMode.RUN
    # A directory sparseprop has written before has its lock file or .hydra/ (older versions).
    locked_before = (out / records.LOCK).exists()
    ours = locked_before or (out / records.HYDRA_CONFIG).is_file()
    try:
        with records.run_lock(out) as writable:
            if not writable:
                return read_only_job(out, cfg, single)
            if (out / records.LOG).is_symlink():
                # The job's log handler appends to it: through a link it would write into the link's target.
                raise records.RecordsError(f"{out / records.LOG} is a link, not the log sparseprop writes; remove the "
                                           "link, or write to another directory")
            foreign = [name for name in records.record_files() if (out / name).exists()]
            if foreign and not ours:
                # Its files would be overwritten or deleted; they are not sparseprop's to touch. Nor is the
                # folder: the lock file goes again, so a second try is refused the same way.
                if not locked_before:
                    os.unlink(out / records.LOCK)
                raise records.RecordsError(
                    f"{out} holds {', '.join(foreign[:3])} but is not a sparseprop run directory; write to "
                    "another directory (hydra.run.dir=...)")
            return run_job(cfg, out, hc, single)
    except (records.RunBusy, records.RecordsError, OSError) as exc:
        # Not logged: the job's log file may belong to the process that holds the directory.
        busy = isinstance(exc, records.RunBusy)
        if isinstance(exc, OSError):
            exc = records.os_error(exc.filename or out, exc, "use")
        if single:
            exit_bad_input(str(exc))
        print(f"sparseprop: {'busy' if busy else 'failed'}: {exc}", file=sys.stderr)
        return {"status": "busy" if busy else "failed", "reason": str(exc)}


def run_job(cfg: DictConfig, out: Path, hc: Any, single: bool) -> dict:
    """The job itself, under the lock of ``out``: clean up, then skip, resume or run afresh."""
    from sparseprop.runner.run import Run

    records.remove_temporaries(out)
    if not cfg.resume:
        gone = discard_records(out)
        if gone:
            log.info("resume=false: discarded %s", ", ".join(gone))
    else:
        reason = stale_reason(out, cfg)
        if reason is not None:
            if single:  # bad input: nothing is touched
                exit_bad_input(reason)
            # In a sweep the job is marked failed, so the report and `collect` show it; its files stay.
            record_failure(out, reason, "StaleRecords")
            log.error("failed: %s", reason)
            return {"status": "failed", "reason": reason}
        summary = finished_summary(out)
        if summary is not None:
            log.info("already finished (%s), skipped: %s", summary["status"], out)
            if single and summary["status"] != "completed":
                finish_single(out, summary)
            return summary
    apply_job_threads(hc, cfg)
    try:
        if hc.runtime.choices.get("hydra/launcher") not in config.LOCAL_LAUNCHERS:
            # The sweep's check ran on the submitting machine: only the job's own machine knows its free memory.
            checks.check_memory_here(cfg)
        write_hydra_records(out, cfg, hc)
        summary = Run(cfg, out).execute()
    except SparsepropError as exc:
        record_failure(out, str(exc), type(exc).__name__)
        if single:
            exit_bad_input(str(exc))
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


def check_output_dir(args: list[str]) -> None:
    """Refuse, before Hydra starts, a ``hydra.run.dir`` / ``hydra.sweep.dir`` that is empty, a file or a dangling
    link, or that does not exist and cannot be made (a read-only place)."""
    flags, overrides, _ = parse_train_args(args)
    if any(f in flags for f in ("--help", "--hydra-help", "--info", "--version", "--shell-completion", "--cfg")):
        return  # help, info or the config printed: nothing is written
    key = "hydra.sweep.dir" if "--multirun" in flags else "hydra.run.dir"
    given = [o for o in overrides if override_key(o) == key]
    # Without one, runs go under outputs/ (conf/train.yaml; a sweep gets outputs/sweeps/<name> from main).
    for o in given or [f"{key}=outputs"]:
        value = o.partition("=")[2].strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1].strip()
        if not value:
            raise SparsepropError(f"{key}='' is not valid: give the directory for the run's records")
        if "${" in value:
            continue  # an interpolation: Hydra resolves it
        path = Path(value)
        if path.is_symlink() and not path.exists():
            raise SparsepropError(f"{key}={value} is not valid: it is a dangling link")
        while not path.exists() and path != path.parent:
            path = path.parent
        if path.exists() and not path.is_dir():
            raise SparsepropError(f"{key}={value} is not valid: {path} is a file, not a directory")
        if path != Path(value) and not os.access(path, os.W_OK | os.X_OK):
            if not given:
                raise SparsepropError(f"runs go under {Path(value).absolute()}, which cannot be created: {path} is "
                                      f"read-only or not writable; choose a folder with {key}=...")
            raise SparsepropError(f"{key}={value} is not valid: it cannot be created, {path} is read-only "
                                  "or not writable")


def main() -> None:
    """`sparseprop train` with Hydra's arguments in ``sys.argv``; exits 3 if a sweep job did not complete."""
    try:
        check_output_dir(sys.argv[1:])
    except SparsepropError as exc:
        exit_bad_input(str(exc))
    sys.argv = [sys.argv[0], *sweep.with_sweep_dir(sys.argv[1:])]
    sweep.last_report = None
    # A log line that cannot be written (full disk) is dropped, not printed as a traceback; the error that
    # stops the run still reaches stderr as one line.
    logging.raiseExceptions = False
    task()
    if sweep.last_report is not None and sweep.last_report.unfinished:
        sys.exit(UNFINISHED_EXIT)
