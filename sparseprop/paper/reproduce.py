"""`make reproduce-figures`: the paper's CPU-sized experiments as sweeps, with profiles, a time estimate and a report."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from sparseprop import records
from sparseprop.errors import SparsepropError
from sparseprop.paper import catalog, gather
from sparseprop.paper.costs import calibrate
from sparseprop.paper.draw import draw
from sparseprop.paper.experiment import Experiment, get, runnable
from sparseprop.paper.plan import (OUTPUTS, Plan, collected_dir, estimate, experiment_dir, make_plan, minutes, print_plan,
                                   wall_estimate)
from sparseprop.paper.profiles import PROFILES, Profile


def data_problem(exp: Experiment, download: bool = True) -> str:
    """Why the data an experiment needs cannot be had (one line), or '' when it can (``download``: fetch what is missing)."""
    from sparseprop import data
    from sparseprop.errors import DataError

    for name in exp.data:
        try:
            data.check_available(name, data.default_root(), download=download)
        except DataError as exc:
            return str(exc)
    return ""


def skip_reason(exp: Experiment, profile: Profile, dry_run: bool = False) -> str:
    """Why ``exp`` does not run under ``profile`` (its profiles, its data; a dry run downloads nothing), or ''."""
    if not exp.runs_under(profile.name):
        return f"runs only under {' or '.join(f'PROFILE={p}' for p in exp.only)}"
    return data_problem(exp, download=not dry_run)


def _finished(run_dir: Path) -> bool:
    """Whether a job has ended, well or not (COMPLETE, or a summary that says it failed)."""
    try:
        return records.is_complete(run_dir) or records.read_summary(run_dir / records.SUMMARY)["status"] == "failed"
    except (OSError, ValueError, SparsepropError):
        return False


def read_status(path: Path) -> dict[str, Any]:
    """The ``status.json`` an earlier call wrote: an object whose ``experiments`` maps names to objects."""
    status = records.read_json(path)
    if not isinstance(status, dict) or not isinstance(status.get("experiments", {}), dict) \
            or not all(isinstance(v, dict) for v in status.get("experiments", {}).values()):
        raise records.DamagedRecord(path, ValueError("not a status written by reproduce; remove it to start afresh"))
    return status


def run_sweep(plan: Plan, n_jobs: int, bar: Any) -> tuple[int, str]:
    """Run the experiment's sweep in a subprocess (joblib launcher), advancing ``bar`` as jobs end; (exit code, error line)."""
    cmd = [sys.executable, "-m", "sparseprop.cli", "train", "-m", *plan.overrides, f"hydra.sweep.dir={plan.sweep_dir}",
           f"hydra.job.config.override_dirname.exclude_keys=[{','.join(plan.exclude)}]",
           "hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}", "threads=1", "progress=false",
           # the experiment draws its own figures; per-run ones would cost seconds per job
           "figures=false"]
    plan.sweep_dir.parent.mkdir(parents=True, exist_ok=True)
    log_path = plan.sweep_dir.parent / f"{plan.experiment}.log"
    pending = {j.dirname for j in plan.todo}
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n$ {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            while True:
                code = proc.poll()
                ended = {name for name in pending if _finished(plan.sweep_dir / name)}
                if ended:
                    bar.update(len(ended))
                    pending -= ended
                if code is not None:
                    break
                time.sleep(2)
        finally:
            # Interrupted (Ctrl-C) or broken here: stop the sweep too; finished jobs stay and are skipped next time.
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
    error = ""
    if code not in (0, None):
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-20:]
        errors = [ln for ln in tail if ln.startswith("sparseprop:")]
        error = errors[0] if errors else (tail[-1] if tail else f"exit code {code}")
    if pending:
        bar.update(len(pending))  # jobs that never ended still count as dealt with, so the bar closes
    return code, error


def outcome(runs: pd.DataFrame, expected: list[str] | None = None) -> dict[str, Any]:
    """Counts of run statuses and the runs that did not complete, from a collected runs table.

    ``expected`` names every job of the sweep; those without a directory at all count as ``missing``.
    """
    counts = {str(k): int(v) for k, v in runs.status.value_counts().items()} if not runs.empty else {}
    problems = [{"run": r.run, "status": r.status, "reason": str(r.reason or "")}
                for r in runs.itertuples() if r.status != "completed"] if not runs.empty else []
    absent = [name for name in expected or [] if runs.empty or name not in set(runs.run)]
    if absent:
        counts["missing"] = len(absent)
        problems += [{"run": name, "status": "missing", "reason": "the sweep never started this job"} for name in absent]
    return {"counts": counts, "problems": problems}


def cores() -> int:
    """CPU cores this process may use: one parallel run per core."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not every platform can say which cores a process may use
        return os.cpu_count() or 1


def _folder(value: str) -> Path:
    if not value.strip():
        raise argparse.ArgumentTypeError("an empty string is not a folder; give a folder")
    return Path(value)


def parse(args: list[str]) -> argparse.Namespace:
    """The command-line options of `scripts/reproduce.py`."""
    from sparseprop.args import ArgumentParser

    p = ArgumentParser(prog="reproduce", description="Run the paper's CPU-sized experiments, collect, draw, judge.")
    p.add_argument("--profile", choices=sorted(PROFILES), default="quick", help="settings to run (default quick)")
    p.add_argument("--only", default=None, help="comma-separated experiments to run (default all: "
                   f"{','.join(e.id for e in runnable())})")
    p.add_argument("--jobs", type=int, default=None, help="parallel runs, one torch thread each (default: the cores)")
    p.add_argument("--figures-only", action="store_true", help="gather existing runs and redraw; train nothing")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the time estimate, run nothing")
    p.add_argument("--outputs", type=_folder, default=OUTPUTS, help="root of experiments/, collected/, figures/, tables/")
    return p.parse_args(args)


def _selection(opts: argparse.Namespace, ids: list[str]) -> list[str]:
    """The experiments to run, after refusing options that mean nothing together (one line each)."""
    if opts.figures_only:
        # Redrawing trains nothing: options that say what to train or how would be silently ignored.
        given = [f for f, v in (("--dry-run", opts.dry_run or None), ("--only", opts.only), ("--jobs", opts.jobs))
                 if v is not None]
        if given:
            raise SparsepropError(f"{', '.join(given)} cannot be used with --figures-only (or `sparseprop figures`), "
                                  "which trains nothing; leave them out")
    selected = [e.strip() for e in (opts.only or "").split(",") if e.strip()] or ids
    if opts.only is not None and not opts.only.replace(",", "").strip():
        raise SparsepropError(f"--only {opts.only!r} names no experiment; give a comma-separated list of "
                              f"{', '.join(ids)} (or leave --only out to run them all)")
    if opts.jobs is None:
        opts.jobs = cores()
    if opts.jobs < 1:
        raise SparsepropError(f"--jobs {opts.jobs}: give at least 1 parallel run")
    root = opts.outputs
    if root.exists() and not root.is_dir() or root.is_symlink() and not root.exists():
        raise SparsepropError(f"--outputs {root}: is a file or a dangling link; give a folder")
    unknown = [e for e in selected if e not in ids]
    if unknown:
        raise SparsepropError(f"--only {','.join(unknown)}: not an experiment this pipeline runs (unknown, or registered "
                              f"without a sweep); choose from {', '.join(ids)}")
    return selected


def redraw(root: Path, profile: Profile, previous: dict[str, Any], status: dict[str, Any],
           experiments: list[Experiment]) -> None:
    """Gather every sweep of ``profile`` already under ``root`` again and redraw; trains nothing."""
    if not any(experiment_dir(root, profile.name, e.id).is_dir() for e in runnable()):
        raise SparsepropError(f"--outputs {root} holds no experiments of profile {profile.name} to draw "
                              f"({root / 'experiments' / profile.name} has none); run them first, or give "
                              "the --outputs and --profile they were run with")
    for key in ("wall_time_s", "estimate_s", "finished", "selected", "n_jobs"):
        if key in previous:
            status[key] = previous[key]
    for exp in runnable():
        if experiment_dir(root, profile.name, exp.id).is_dir():
            runs = gather.gather(experiment_dir(root, profile.name, exp.id), collected_dir(root, profile.name, exp.id),
                                 masks=exp.masks)
            status["experiments"].setdefault(exp.id, {}).update(outcome(runs))
    print(draw(root, profile.name, status, experiments))


def main(args: list[str] | None = None) -> None:
    """Plan, estimate, run the sweeps (resumably), gather, draw, judge."""
    from tqdm import tqdm

    experiments = catalog.load()
    opts = parse(sys.argv[1:] if args is None else args)
    selected = _selection(opts, [e.id for e in runnable()])
    profile, root = PROFILES[opts.profile], opts.outputs
    status_path = root / "collected" / profile.name / "status.json"
    previous = read_status(status_path) if status_path.is_file() else {}
    status: dict[str, Any] = {"profile": profile.name, "description": profile.description, "n_jobs": opts.jobs,
                              "experiments": dict(previous.get("experiments", {}))}
    if opts.figures_only:
        redraw(root, profile, previous, status, experiments)
        return
    t0 = time.time()
    plans = []
    for e in selected:
        plan = make_plan(get(e), profile, root)
        plan.skip_reason = skip_reason(get(e), profile, opts.dry_run)
        plans.append(plan)
    costs = calibrate()
    for plan in plans:
        if get(plan.experiment).runs_under(profile.name):  # estimated even without its data: the plan says what it would take
            estimate(plan, costs)
    print_plan(plans, profile, costs, opts.jobs)
    # The paper-only experiments on CIFAR-10 / Tiny-ImageNet are GPU jobs; E8's LeNet-5 half is paper-only but CPU-sized.
    gpu = [p.experiment for p in plans if get(p.experiment).only and get(p.experiment).runs_under(profile.name)
           and set(get(p.experiment).data) & {"cifar10", "tiny_imagenet"}]
    if gpu:
        print(f"  {', '.join(gpu)}: GPU jobs; their estimates are for this CPU, from each network's multiply-adds "
              "against the measured MLP step (a lower bound on a CPU; no GPU estimate is made)")
    status["estimate_s"] = wall_estimate(plans, costs, opts.jobs)
    if opts.dry_run:
        return
    total = sum(len(p.todo) for p in plans if not p.skip_reason)
    with tqdm(total=total, desc="runs", unit="run", dynamic_ncols=True) as bar:
        for plan in plans:
            st: dict[str, Any] = {"skipped": plan.skip_reason}
            if not plan.skip_reason:
                bar.set_postfix_str(plan.experiment)
                code, error = run_sweep(plan, opts.jobs, bar) if plan.todo else (0, "")
                runs = gather.gather(plan.sweep_dir, plan.collected_dir, masks=get(plan.experiment).masks)
                # Exit code 3 only says some jobs did not complete; the runs table lists them one by one.
                st.update(returncode=code, error=error if code not in (0, 3) else "",
                          **outcome(runs, [j.dirname for j in plan.jobs]))
            status["experiments"][plan.experiment] = st
    status.update(wall_time_s=time.time() - t0, finished=time.strftime("%Y-%m-%d %H:%M"), selected=selected)
    records.write_json(status_path, status)
    print(draw(root, profile.name, status, experiments))
    print(f"sparseprop reproduce: done in {minutes(time.time() - t0)}; report in {root / 'REPRODUCTION.md'}, "
          f"figures in {root / 'figures'}, tables in {root / 'tables'}")
