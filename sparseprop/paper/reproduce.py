"""`make reproduce-figures`: the paper's CPU-sized experiments as sweeps, with profiles, a time estimate and a report."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from sparseprop import records
from sparseprop.paper.costs import COST_KEYS, Costs, calibrate, run_cost
from sparseprop.errors import SparsepropError

# The paper experiments in the order they run; each is conf/experiment/<id>.yaml.
EXPERIMENTS = ("e1_masks", "e2_init", "e3_isometry", "e5_supervision", "e6_transfer", "sparsity_sweep")
OUTPUTS = Path("outputs")

_QUICK_TRAIN = ["train.iterations=1000", "train.eval_interval=200"]  # 5 evaluations: best-of-last-5 still means something
_QUICK_SIGNAL = ["signal.examples=1000", "signal.layer_examples=100"]  # JSV on 1,000 / 100 training examples
_QUICK_AI = ["isometry.steps=2000"]  # the AI objective has levelled off by about 2,000 steps on MLP-7


@dataclass(frozen=True)
class Profile:
    """A named set of overrides per experiment, added to the experiment's own config (a comma list sweeps)."""

    name: str
    description: str
    overrides: dict[str, list[str]] = field(default_factory=dict)


PROFILES: dict[str, Profile] = {
    "quick": Profile(
        "quick",
        "every experiment at reduced settings: 1,000 iterations, JSV on 1,000 examples (layerwise 100), AI 2,000 "
        "steps; 2 seeds for E1, E2, E3, 1 seed for E5, E6 and the sweep; MLP-3/7 in E5, MLP-7 in E6; sparsity "
        "10/50/90% in E1 (at VS-L and at N(0, 1), as in the paper profile) and 50/90/99% in the sweep",
        {
            "e1_masks": ["prune.sparsity=0.1,0.5,0.9", "seed=0,1"],
            "e2_init": [*_QUICK_TRAIN, *_QUICK_SIGNAL, "seed=0,1"],
            "e3_isometry": [*_QUICK_TRAIN, *_QUICK_SIGNAL, *_QUICK_AI, "seed=0,1"],
            "e5_supervision": [*_QUICK_TRAIN, "arch.depth=3,7", "seed=0"],
            "e6_transfer": [*_QUICK_TRAIN, "arch.depth=7", "seed=0"],
            "sparsity_sweep": [*_QUICK_TRAIN, *_QUICK_SIGNAL, *_QUICK_AI, "prune.sparsity=0.5,0.9,0.99", "seed=0"],
        },
    ),
    # The experiment files hold the paper's settings (10,000 iterations, 3 seeds, full signal measurements).
    "paper": Profile("paper", "the paper's settings: 10,000 iterations, 3 seeds, JSV on every training example",
                     {e: [] for e in EXPERIMENTS}),
}


@dataclass
class Job:
    """One run of a sweep: its overrides, its directory name, whether it is done, and its estimated cost."""

    overrides: list[str]
    dirname: str
    done: bool = False
    cost_s: float = 0.0


@dataclass
class Plan:
    """One experiment under one profile: where its sweep lives and the jobs it stands for."""

    experiment: str
    profile: str
    overrides: list[str]
    sweep_dir: Path
    collected_dir: Path
    jobs: list[Job] = field(default_factory=list)
    skip_reason: str = ""
    # Keys left out of job directory names: conf/train.yaml's runtime keys, plus the experiment and the
    # profile's fixed settings, which are the same for every job of this sweep directory.
    exclude: list[str] = field(default_factory=list)

    @property
    def todo(self) -> list[Job]:
        """Jobs not finished yet."""
        return [j for j in self.jobs if not j.done]


def experiment_dir(root: Path, profile: str, experiment: str) -> Path:
    """The fixed sweep directory of ``experiment`` under ``profile`` (fixed, so a second call resumes)."""
    return root / "experiments" / profile / experiment


def collected_dir(root: Path, profile: str, experiment: str) -> Path:
    """Where the gathered tables of ``experiment`` under ``profile`` go."""
    return root / "collected" / profile / experiment


def _compose(overrides: list[str], hydra: bool = False) -> Any:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from sparseprop.config import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="reproduce"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=hydra)


def expand_jobs(params: dict[str, str], task: list[str]) -> list[list[str]]:
    """The override lists of every job of a basic-sweeper sweep: ``params`` from the config, ``task`` from the command line."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([*(f"{k}={v}" for k, v in params.items()), *task])
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def job_dirname(overrides: list[str], exclude: list[str]) -> str:
    """Hydra's ``override_dirname`` for a job (``kv_sep='='``, ``item_sep=','``, as conf/train.yaml sets)."""
    return ",".join(sorted(o for o in overrides if o.lstrip("+~").partition("=")[0] not in exclude))


def make_plan(experiment: str, profile: Profile, root: Path = OUTPUTS) -> Plan:
    """The jobs of ``experiment`` under ``profile``, with which of them are already complete."""
    overrides = [f"experiment={experiment}", *profile.overrides.get(experiment, [])]
    plan = Plan(experiment, profile.name, overrides, experiment_dir(root, profile.name, experiment),
                collected_dir(root, profile.name, experiment))
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    parsed = OverridesParser.create().parse_overrides(overrides)
    fixed = [o for o in parsed if not o.is_sweep_override()]
    hcfg = _compose([o.input_line for o in fixed], hydra=True).hydra
    params = OmegaConf.to_container(hcfg.sweeper.params) or {}
    plan.exclude = [*hcfg.job.config.override_dirname.exclude_keys, *(o.key_or_group for o in fixed)]
    for job in expand_jobs({k: str(v) for k, v in params.items()}, overrides):
        name = job_dirname(job, plan.exclude)
        plan.jobs.append(Job(job, name, records.is_complete(plan.sweep_dir / name)))
    return plan


def estimate(plan: Plan, costs: Costs) -> None:
    """Fill in every job's estimated cost (composing one config per distinct cost-relevant setting)."""
    cache: dict[tuple[str, ...], float] = {}
    for job in plan.jobs:
        key = tuple(o for o in job.overrides if o.partition("=")[0] in (*COST_KEYS, "experiment"))
        if key not in cache:
            cache[key] = run_cost(_compose(list(key)), costs)
        job.cost_s = cache[key]


def wall_estimate(plans: list[Plan], costs: Costs, n_jobs: int) -> float:
    """Seconds to finish every plan's remaining jobs with ``n_jobs`` in parallel."""
    return sum(sum(j.cost_s for j in p.todo) / n_jobs + (costs.per_sweep if p.todo else 0) for p in plans if not p.skip_reason)


def minutes(seconds: float) -> str:
    """``seconds`` as a short human duration."""
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def print_plan(plans: list[Plan], costs: Costs, n_jobs: int) -> None:
    """Print what will run and how long it should take."""
    print(f"sparseprop reproduce: profile '{plans[0].profile}' - {PROFILES[plans[0].profile].description}")
    print(f"  measured here (1 thread): training step {costs.train_step * 1e3:.1f} ms, SNIP batch "
          f"{costs.snip_batch * 1e3:.1f} ms, AI step {costs.ai_step * 1e3:.1f} ms, JSV {costs.io_example * 1e3:.2f} ms "
          f"per example (input-output), {costs.layer_example * 1e3:.2f} ms (layerwise)")
    for p in plans:
        if p.skip_reason:
            print(f"  {p.experiment:<15} skipped: {p.skip_reason}")
            continue
        todo = p.todo
        print(f"  {p.experiment:<15} {len(p.jobs):>4} runs, {len(p.jobs) - len(todo):>4} already complete, "
              f"about {minutes(sum(j.cost_s for j in todo) / n_jobs)}  -> {p.sweep_dir}")
    print(f"  estimated time: {minutes(wall_estimate(plans, costs, n_jobs))} with {n_jobs} parallel jobs "
          "(longer if other processes share the cores)")


# ---- running -------------------------------------------------------------------------------------

def data_problem(experiment: str) -> str:
    """Why the data an experiment needs cannot be had (one line), or '' when it can."""
    from sparseprop import data
    from sparseprop.errors import DataError

    needed = ("mnist", "fashion_mnist") if experiment == "e6_transfer" else ("mnist",)
    for name in needed:
        try:
            data.check_available(name, data.default_root(), download=True)
        except DataError as exc:
            return str(exc)
    return ""


def _finished(run_dir: Path) -> bool:
    """Whether a job has ended, well or not (COMPLETE, or a summary that says it failed)."""
    try:
        return records.is_complete(run_dir) or records.read_summary(run_dir / "summary.json")["status"] == "failed"
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


def draw(root: Path, profile: str, status: dict[str, Any]) -> str:
    """Gathered results -> figures, tables and REPRODUCTION.md; returns the verdict table."""
    from sparseprop.paper import claims
    from sparseprop.paper import figures
    from sparseprop.paper import gather
    from sparseprop.paper import report
    from sparseprop.paper import tables

    results = {e: gather.load(collected_dir(root, profile, e)) for e in EXPERIMENTS
               if (collected_dir(root, profile, e) / gather.RUNS).is_file()}
    fig_paths, missing = figures.draw_all(results, root / "figures")
    table_paths = tables.write_tables(results, root / "tables")
    skipped = {e: st["skipped"] for e, st in status.get("experiments", {}).items() if st.get("skipped")}
    verdicts = claims.verdicts(results, skipped)
    report.write(root / "REPRODUCTION.md", verdicts, status, fig_paths, missing, table_paths, claims.explanations(results))
    return report.verdict_table(verdicts)


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
    p.add_argument("--only", default=None, help=f"comma-separated experiments to run (default all: {','.join(EXPERIMENTS)})")
    p.add_argument("--jobs", type=int, default=None, help="parallel runs, one torch thread each (default: the cores)")
    p.add_argument("--figures-only", action="store_true", help="gather existing runs and redraw; train nothing")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the time estimate, run nothing")
    p.add_argument("--outputs", type=_folder, default=OUTPUTS, help="root of experiments/, collected/, figures/, tables/")
    return p.parse_args(args)


def main(args: list[str] | None = None) -> None:
    """Plan, estimate, run the sweeps (resumably), gather, draw, judge."""
    from tqdm import tqdm

    from sparseprop.paper import gather

    opts = parse(sys.argv[1:] if args is None else args)
    profile, root = PROFILES[opts.profile], opts.outputs
    if opts.figures_only:
        # Redrawing trains nothing: options that say what to train or how would be silently ignored.
        given = [f for f, v in (("--dry-run", opts.dry_run or None), ("--only", opts.only), ("--jobs", opts.jobs))
                 if v is not None]
        if given:
            raise SparsepropError(f"{', '.join(given)} cannot be used with --figures-only (or `sparseprop figures`), "
                                  "which trains nothing; leave them out")
    selected = [e.strip() for e in (opts.only or "").split(",") if e.strip()] or list(EXPERIMENTS)
    if opts.only is not None and not opts.only.replace(",", "").strip():
        raise SparsepropError(f"--only {opts.only!r} names no experiment; give a comma-separated list of "
                              f"{', '.join(EXPERIMENTS)} (or leave --only out to run them all)")
    if opts.jobs is None:
        opts.jobs = cores()
    if opts.jobs < 1:
        raise SparsepropError(f"--jobs {opts.jobs}: give at least 1 parallel run")
    if root.exists() and not root.is_dir() or root.is_symlink() and not root.exists():
        raise SparsepropError(f"--outputs {root}: is a file or a dangling link; give a folder")
    unknown = [e for e in selected if e not in EXPERIMENTS]
    if unknown:
        raise SparsepropError(f"--only {','.join(unknown)}: unknown experiment; choose from {', '.join(EXPERIMENTS)}")
    status_path = root / "collected" / profile.name / "status.json"
    previous = read_status(status_path) if status_path.is_file() else {}
    status: dict[str, Any] = {"profile": profile.name, "description": profile.description, "n_jobs": opts.jobs,
                              "experiments": dict(previous.get("experiments", {}))}
    if opts.figures_only:
        if not any(experiment_dir(root, profile.name, e).is_dir() for e in EXPERIMENTS):
            raise SparsepropError(f"--outputs {root} holds no experiments of profile {profile.name} to draw "
                                  f"({root / 'experiments' / profile.name} has none); run them first, or give "
                                  "the --outputs and --profile they were run with")
        for key in ("wall_time_s", "estimate_s", "finished", "selected", "n_jobs"):
            if key in previous:
                status[key] = previous[key]
        for e in EXPERIMENTS:
            if experiment_dir(root, profile.name, e).is_dir():
                runs = gather.gather(experiment_dir(root, profile.name, e), collected_dir(root, profile.name, e),
                                     masks=e == "e1_masks")
                status["experiments"].setdefault(e, {}).update(outcome(runs))
        print(draw(root, profile.name, status))
        return
    t0 = time.time()
    plans = []
    for e in selected:
        plan = make_plan(e, profile, root)
        plan.skip_reason = data_problem(e)
        plans.append(plan)
    costs = calibrate()
    for plan in plans:
        estimate(plan, costs)
    print_plan(plans, costs, opts.jobs)
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
                runs = gather.gather(plan.sweep_dir, plan.collected_dir, masks=plan.experiment == "e1_masks")
                # Exit code 3 only says some jobs did not complete; the runs table lists them one by one.
                st.update(returncode=code, error=error if code not in (0, 3) else "",
                          **outcome(runs, [j.dirname for j in plan.jobs]))
            status["experiments"][plan.experiment] = st
    status.update(wall_time_s=time.time() - t0, finished=time.strftime("%Y-%m-%d %H:%M"), selected=selected)
    records.write_json(status_path, status)
    print(draw(root, profile.name, status))
    print(f"sparseprop reproduce: done in {minutes(time.time() - t0)}; report in {root / 'REPRODUCTION.md'}, "
          f"figures in {root / 'figures'}, tables in {root / 'tables'}")
