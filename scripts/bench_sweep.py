"""Benchmark: a sweep of short jobs with the joblib launcher (parallel workers) against Hydra's basic launcher.

Both sweeps run the same jobs (seeds 0..N-1) through the installed `sparseprop train -m`, each into
its own temporary sweep directory, in A-B-B-A order from this one script so that a drifting load on
the machine hits both alike. Printed: the wall time of each whole command (start-up included), the CPU
time it used, the load average, and the ratio of the median wall times: figures, never pass/fail
(target: joblib >= 1.6x faster with 2 workers on a 2-core machine). Real MNIST when $SPARSEPROP_DATA
(or ./data) holds it, else scikit-learn's digits; the output says which.
Run ``python scripts/bench_sweep.py [--quick] [--jobs 8] [--repeats 2] [--single-thread-baseline]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sparseprop.sweeps.launchers import available_cores, job_threads


def have_mnist() -> bool:
    """Whether MNIST's raw files are where `sparseprop train` looks by default."""
    raw = Path(os.environ.get("SPARSEPROP_DATA", "data")) / "MNIST" / "raw"
    return raw.is_dir() and any(raw.iterdir())


def children_cpu_s() -> float:
    """CPU seconds (user + system) used so far by this script's finished child processes."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed_sweep(overrides: list[str], sweep_dir: Path) -> tuple[float, float, str]:
    """Wall and CPU seconds of one `sparseprop train -m` command, and its end-of-sweep line (or its error)."""
    exe = Path(sys.executable).parent / "sparseprop"
    cpu, t = children_cpu_s(), time.perf_counter()
    res = subprocess.run([str(exe), "train", "-m", *overrides, f"hydra.sweep.dir={sweep_dir}"],
                         capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t, children_cpu_s() - cpu
    lines = [ln.removeprefix("sparseprop: ") for ln in res.stderr.splitlines() if ln.startswith("sparseprop:")]
    if res.returncode != 0:
        return wall, cpu, f"FAILED (exit {res.returncode}): " + (" | ".join(lines) or res.stderr[-500:])
    return wall, cpu, (lines[-1].split(" in ")[0] if lines else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 jobs, one repeat")
    ap.add_argument("--jobs", type=int, default=None, help="jobs in each sweep (seeds 0..jobs-1; default 8)")
    ap.add_argument("--repeats", type=int, default=None, help="A-B-B-A rounds (default 2, 1 with --quick)")
    ap.add_argument("--workers", type=int, default=2, help="joblib workers (hydra.launcher.n_jobs)")
    ap.add_argument("--steps", type=int, default=None, help="training steps per job (default 300 on MNIST, 2000 on digits)")
    ap.add_argument("--single-thread-baseline", action="store_true",
                    help="also time the basic launcher with threads=1 (one torch thread, jobs one after another)")
    args = ap.parse_args()
    args.jobs = args.jobs or (4 if args.quick else 8)
    repeats = args.repeats or (1 if args.quick else 2)

    mnist = have_mnist()
    steps = args.steps or (300 if mnist else 2000)
    data = ["dataset=mnist", "dataset.download=false"] if mnist else ["dataset=digits"]
    # Short but whole jobs: SNIP on the full training split, signal measured on a subset, figures drawn.
    job = [*data, f"train.iterations={steps}", f"train.eval_interval={steps}", f"train.checkpoint_interval={steps}",
           "signal.examples=1000", "signal.layer_examples=100", "progress=false"]
    seeds = "seed=" + ",".join(str(s) for s in range(args.jobs))
    cores = available_cores()
    per_job = job_threads({"_target_": "joblib", "n_jobs": args.workers}, cores)
    import torch

    launchers = {
        "basic": (f"basic launcher, one job at a time, torch default ({torch.get_num_threads()} threads)", [seeds]),
        "joblib": (f"joblib launcher, {args.workers} workers, {per_job} torch thread(s) per job",
                   [seeds, "hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.workers}"]),
    }
    if args.single_thread_baseline:
        launchers["basic1"] = ("basic launcher, threads=1", [seeds, "threads=1"])
    print(f"sweep benchmark: {args.jobs} jobs (seeds 0-{args.jobs - 1}) per sweep, "
          f"{'MNIST (real, from $SPARSEPROP_DATA)' if mnist else 'digits (scikit-learn; no MNIST found)'}, "
          f"MLP-7 tanh, SNIP 90%, {steps} steps each; {cores} cores; load average {os.getloadavg()[0]:.1f}")
    order = [name for r in range(repeats) for name in (list(launchers) if r % 2 == 0 else list(launchers)[::-1])]
    walls: dict[str, list[float]] = {name: [] for name in launchers}
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(order):
            label, extra = launchers[name]
            wall, cpu, line = timed_sweep([*job, *extra], Path(tmp) / f"sweep{i}")
            walls[name].append(wall)
            print(f"  {label:<60s} wall {wall:6.1f} s  cpu {cpu:6.1f} s  {line}")
    median = {name: statistics.median(w) for name, w in walls.items()}
    print(f"  load average at the end {os.getloadavg()[0]:.1f} (the machine's other work slows every figure above)")
    print(f"  speed-up joblib / basic (median wall): {median['basic'] / median['joblib']:.2f}x (target >= 1.6x)")
    if args.single_thread_baseline:
        print(f"  speed-up joblib / basic with threads=1 (median wall): {median['basic1'] / median['joblib']:.2f}x")


if __name__ == "__main__":
    main()
