"""Sweeps on top of runs: where a sweep lives, the state of each job, threads per job, and the end-of-sweep report."""

from __future__ import annotations

import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from sparseprop import records
from sparseprop.args import parse_train_args
from sparseprop.errors import SparsepropError

# Keys that say how or where a job runs, not what it computes: they never name a job or a sweep
# directory, and changing them between an interrupted run and its resumption is allowed.
# conf/train.yaml repeats them in hydra.job.config.override_dirname.exclude_keys (a test checks).
RUNTIME_KEYS = ("progress", "resume", "figures", "device", "threads", "dataset.root", "dataset.download")
SWEEPS_DIR = "outputs/sweeps"
FINISHED = ("completed", "diverged")
# Exit code of `sparseprop train` when a run or a sweep job did not complete (2 is bad input).
UNFINISHED_EXIT = 3
_MAX_NAME = 150


@dataclass
class RunState:
    """How a run directory stands: completed, diverged, failed, partial (interrupted or running) or missing."""

    status: str
    reason: str = ""
    step: int | None = None


@dataclass
class JobOutcome:
    """One job of a sweep: its directory name under the sweep, and how it stands."""

    job: str
    state: RunState


@dataclass
class SweepOutcome:
    """The jobs of a finished sweep and which of them did not complete."""

    sweep_dir: Path
    jobs: list[JobOutcome]

    @property
    def unfinished(self) -> list[JobOutcome]:
        """Jobs whose status is not ``completed``."""
        return [j for j in self.jobs if j.state.status != "completed"]


# The report of the last sweep in this process, set by the SweepReport callback and read by
# `sparseprop train` to choose its exit code (Hydra's main function returns nothing).
last_report: SweepOutcome | None = None


def override_key(override: str) -> str:
    """The key (or config group) an override sets, without its ``+``/``++``/``~`` prefix."""
    return override.lstrip("+~").partition("=")[0]


def sweep_name(overrides: list[str]) -> str:
    """A readable, stable directory name for a sweep: its overrides sorted, runtime and Hydra keys left out."""
    kept = sorted(o for o in overrides if override_key(o) not in RUNTIME_KEYS and not override_key(o).startswith("hydra"))
    name = "__".join(kept) or "defaults"
    safe = re.sub(r"[^A-Za-z0-9._,=+~-]", "_", name)
    if safe != name or len(safe) > _MAX_NAME:
        # A hash of the exact overrides keeps two sweeps apart when cleaning or shortening made their names equal.
        safe = f"{safe[:_MAX_NAME - 20]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return safe


def with_sweep_dir(args: list[str]) -> list[str]:
    """The arguments of `sparseprop train`, plus ``hydra.sweep.dir=outputs/sweeps/<name>`` for a sweep without one."""
    flags, overrides, _ = parse_train_args(args)
    if "--multirun" not in flags or any(override_key(o) == "hydra.sweep.dir" for o in overrides):
        return list(args)
    # Quoted, because a name holds ',' and '=' which Hydra's override grammar would otherwise parse.
    extra = f"hydra.sweep.dir='{SWEEPS_DIR}/{sweep_name(overrides)}'"
    # Next to the other overrides: Hydra's argument parser wants them all in one run, before or after -m.
    at = args.index(overrides[0]) if overrides else len(args)
    return [*args[:at], extra, *args[at:]]


def available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def job_threads(launcher: Mapping[str, Any], cores: int) -> int:
    """Torch threads per job under ``launcher`` so parallel jobs do not oversubscribe ``cores`` (0: torch's default)."""
    target = str(launcher.get("_target_", ""))
    if "joblib" in target.lower():
        n_jobs = int(launcher.get("n_jobs") or -1)
        parallel = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)  # joblib: -1 = all cores, -2 = all but one
        return max(1, cores // min(parallel, cores))
    if launcher.get("cpus_per_task"):
        return int(launcher["cpus_per_task"])
    return 0


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one dict of dotted keys to leaf values (lists stay lists)."""
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


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
    if (run_dir / "summary.json").is_file():
        try:
            summary = records.read_summary(run_dir / "summary.json")
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


def job_dirname(overrides: list[str], exclude_keys: list[str], item_sep: str, kv_sep: str) -> str:
    """Hydra's ``job.override_dirname`` of a job with ``overrides`` (sorted, excluded keys left out)."""
    lines = sorted(o for o in overrides if override_key(o) not in exclude_keys)
    return item_sep.join(lines).replace("=", kv_sep)


def expected_jobs(hydra_cfg: DictConfig) -> list[tuple[list[str], str]] | None:
    """(overrides, directory name) of every job a basic-sweeper sweep stands for, or None if that cannot be known.

    ``hydra_cfg`` is the ``hydra`` node of the sweep's config (live, or read back from multirun.yaml).
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        plain = OmegaConf.to_container(hydra_cfg, resolve=False)
        if not str(plain["sweeper"].get("_target_", "")).endswith("BasicSweeper"):
            return None
        if plain["sweep"]["subdir"] != "${hydra:job.override_dirname}":
            return None
        params = [f"{k}={v}" for k, v in (plain["sweeper"].get("params") or {}).items()]
        parsed = OverridesParser.create().parse_overrides([*params, *plain["overrides"]["task"]])
        jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
        od = plain["job"]["config"]["override_dirname"]
        return [(job, job_dirname(job, list(od["exclude_keys"]), od["item_sep"], od["kv_sep"])) for job in jobs]
    except Exception:  # noqa: BLE001 - e.g. glob sweeps need Hydra's config loader: fall back to what is on disk
        return None


def sweep_outcome(sweep_dir: Path, hydra_cfg: DictConfig | None) -> SweepOutcome:
    """The state of every job of the sweep in ``sweep_dir``: the expected ones if known, else those on disk."""
    sweep_dir = Path(sweep_dir)
    expected = expected_jobs(hydra_cfg) if hydra_cfg is not None else None
    if expected is not None:
        names = list(dict.fromkeys(name for _, name in expected))
    else:
        names = sorted(p.parent.name for p in sweep_dir.glob("*/.hydra"))
    return SweepOutcome(sweep_dir, [JobOutcome(name, status_of(sweep_dir / name)) for name in names])


def print_report(outcome: SweepOutcome) -> None:
    """Print to stderr how many jobs completed and one line per job that did not."""
    total, bad = len(outcome.jobs), outcome.unfinished
    if not bad:
        print(f"sparseprop: all {total} jobs completed in {outcome.sweep_dir}", file=sys.stderr)
        return
    print(f"sparseprop: {len(bad)} of {total} jobs did not complete in {outcome.sweep_dir}:", file=sys.stderr)
    width = max(len(j.job) for j in bad)
    for j in bad:
        print(f"  {j.state.status:<8}  {j.job:<{width}}  {j.state.reason}", file=sys.stderr)
    print("sparseprop: run the same command again to retry failed and interrupted jobs (finished ones are skipped); "
          f"`sparseprop collect {outcome.sweep_dir}` tabulates the sweep", file=sys.stderr)


# What joblib's loky workers leave in shared memory when their sweep is killed: memmapping folders and
# named semaphores, each named by the process id of the sweep that made them.
_SHARED_MEMORY = re.compile(r"^(?:joblib_memmapping_folder_(\d+)_.+|sem\.loky-(\d+)-.+)$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_shared_memory(root: Path = Path("/dev/shm")) -> list[str]:
    """Remove what killed joblib sweeps of this user left in ``root``: empty memmapping folders and loky semaphores.

    Only entries whose sweep process is gone are touched; a live sweep's are left alone, and so are folders
    that still hold data.
    """
    gone: list[str] = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return gone
    for entry in entries:
        match = _SHARED_MEMORY.match(entry.name)
        if not match:
            continue
        try:
            if entry.stat(follow_symlinks=False).st_uid != os.getuid() or _alive(int(match[1] or match[2])):
                continue
            if entry.is_dir(follow_symlinks=False):
                os.rmdir(entry.path)  # fails, and is left, if it is not empty
            else:
                os.unlink(entry.path)
            gone.append(entry.name)
        except OSError:
            continue
    return gone


def _refuse(message: str) -> None:
    """Bad input found before any job ran: one line on stderr and exit code 2 (Hydra does not catch SystemExit)."""
    print(f"sparseprop: error: {message}", file=sys.stderr)
    sys.exit(2)


def _base_config(config: DictConfig) -> dict[str, Any] | None:
    """The sweep's config without its ``hydra`` node, resolved where possible (None when it cannot be read)."""
    try:
        plain = OmegaConf.to_container(config, resolve=False)
        plain.pop("hydra", None)
        node = OmegaConf.create(plain)
        try:
            return OmegaConf.to_container(node, resolve=True)
        except Exception:  # noqa: BLE001 - an interpolation that needs a running job: keep it as written
            return OmegaConf.to_container(node, resolve=False)
    except Exception:  # noqa: BLE001
        return None


def read_only_sweep(config: DictConfig, sweep_dir: Path, expected: list[tuple[list[str], str]] | None) -> None:
    """A sweep directory that cannot be written: when every job finished with this config, report and end (nothing
    runs, nothing is written); otherwise refuse. Hydra would write multirun.yaml into it before any job starts."""
    where = f"cannot write to {sweep_dir} (read-only or not permitted)"
    if expected is None:
        _refuse(f"{where}; write the sweep to another directory (hydra.sweep.dir=...)")
    base = _base_config(config)
    jobs, stale = [], []
    for overrides, name in expected:
        state = status_of(sweep_dir / name)
        if state.status in FINISHED and base is not None:
            # Keys a job's own overrides set are in its directory's name; every other key must match the sweep's.
            keys = [override_key(o) for o in overrides]
            changes = [c for c in config_changes(saved_config(sweep_dir / name), base)
                       if not any(c.startswith((f"{k}:", f"{k}.")) for k in keys)]
            if changes:
                stale.append(f"{name} ({changes[0]})")
        jobs.append(JobOutcome(name, state))
    unfinished = [j.job for j in jobs if j.state.status not in FINISHED]
    if stale:
        _refuse(f"{where}, and its records were made with another config: {stale[0]}; write the sweep to another "
                "directory (hydra.sweep.dir=...)")
    if base is None:
        _refuse(f"{where}, and the sweep's config cannot be compared with its records; write the sweep to another "
                "directory (hydra.sweep.dir=...)")
    if unfinished:
        _refuse(f"{where}, and {len(unfinished)} of its {len(jobs)} jobs are not finished ({unfinished[0]}); "
                "write the sweep to another directory (hydra.sweep.dir=...)")
    global last_report
    last_report = SweepOutcome(sweep_dir, jobs)
    print(f"sparseprop: {sweep_dir} is read-only and every job in it is finished: nothing was run", file=sys.stderr)
    print_report(last_report)
    sys.exit(UNFINISHED_EXIT if last_report.unfinished else 0)


def check_sweep(config: DictConfig) -> None:
    """Before any job runs, refuse a sweep whose job directories are files or dangling links (Hydra would raise at
    its mkdir), and settle a sweep directory that cannot be written (``read_only_sweep``)."""
    sweep_dir = Path(str(config.hydra.sweep.dir))
    expected = expected_jobs(config.hydra)
    blocked = [sweep_dir / name for _, name in expected or []
               if (sweep_dir / name).is_symlink() and not (sweep_dir / name).exists()
               or (sweep_dir / name).exists() and not (sweep_dir / name).is_dir()]
    if blocked:
        more = f" (and {len(blocked) - 1} more)" if len(blocked) > 1 else ""
        _refuse(f"{blocked[0]} is a file or a dangling link where the sweep's job directory goes{more}; move it away, "
                "or write the sweep to another directory (hydra.sweep.dir=...)")
    config_file = sweep_dir / "multirun.yaml"
    if config_file.is_symlink() or config_file.exists() and not config_file.is_file():
        # Hydra rewrites it before the first job: through a link it would overwrite the link's target.
        _refuse(f"{config_file} is a {'link' if config_file.is_symlink() else 'folder'}, not the sweep config Hydra "
                "writes there; move it away, or write the sweep to another directory (hydra.sweep.dir=...)")
    if sweep_dir.is_dir() and not os.access(sweep_dir, os.W_OK | os.X_OK):
        read_only_sweep(config, sweep_dir, expected)


class SweepReport(Callback):
    """Hydra callback (conf/train.yaml): after a sweep, report the jobs that did not complete."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Check the sweep's directories, then clear what killed joblib sweeps left in shared memory."""
        check_sweep(config)
        clean_shared_memory()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Read every job's records, print the report and keep it for the exit code."""
        global last_report
        clean_shared_memory()
        last_report = sweep_outcome(Path(str(config.hydra.sweep.dir)), config.hydra)
        print_report(last_report)
