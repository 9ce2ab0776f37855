"""Sweeps: launchers and threads, sweep directories, exact resume, skip, fresh runs and fault isolation."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from sparseprop import config, records
from sparseprop.sweeps import jobs, launchers, report, state, sweep
from sparseprop.runner.run import CHECKPOINT
from tests.conftest import REPO, run_cli, sparseprop_exe
from tests.sweeps.helpers import TIMING, TINY, Killed, assert_same_run, job, kill_at, run_app, summary_without_timings, tiny

# ---- threads, directories, configs ---------------------------------------------------------------


def test_sweep_dir_is_named_by_the_sweep_and_stable():
    args = ["-m", "init=vs_l,orthogonal", "prune=snip,random", "progress=false"]
    named = sweep.with_sweep_dir(args)
    extra = "hydra.sweep.dir='outputs/sweeps/init=vs_l,orthogonal__prune=snip,random'"
    assert named == ["-m", extra, *args[1:]]
    # The same sweep in another order, with runtime-only keys or another launcher, finds the same directory.
    again = sweep.with_sweep_dir(["prune=snip,random", "resume=false", "init=vs_l,orthogonal", "threads=1",
                                  "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "-m"])
    assert again[0] == extra and again[-1] == "-m"
    assert sweep.with_sweep_dir(["-m"]) == ["-m", "hydra.sweep.dir='outputs/sweeps/defaults'"]
    assert sweep.with_sweep_dir(["init=vs_l"]) == ["init=vs_l"]  # a single run keeps hydra.run.dir
    assert sweep.with_sweep_dir(["-m", "seed=0,1", "hydra.sweep.dir=mine"]) == ["-m", "seed=0,1", "hydra.sweep.dir=mine"]
    assert sweep.sweep_name([]) == "defaults"
    odd = [sweep.sweep_name(["signal.stages=[init]"]), sweep.sweep_name(["signal.stages=(init)"])]
    assert odd[0] != odd[1] and all(re.fullmatch(r"[A-Za-z0-9._,=+~-]+", n) for n in odd)
    long = sweep.sweep_name([f"train.lr={i}" for i in range(100)])
    assert len(long) <= 150 and long != sweep.sweep_name([f"train.lr={i}" for i in range(101)])


def test_job_dirs_leave_out_runtime_keys_and_slurm_example_composes():
    with initialize_config_dir(config_dir=str(config.CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    assert list(cfg.hydra.job.config.override_dirname.exclude_keys) == list(jobs.RUNTIME_KEYS)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.max_num_timeout > 0  # resubmission after a timeout resumes from the checkpoint
    assert launchers.job_threads(launcher, 64) == launcher.cpus_per_task > 0
    assert cfg.hydra.callbacks.sweep_report._target_ == "sparseprop.sweeps.sweep.SweepReport"


# ---- exact resume (in-process) -------------------------------------------------------------------


def test_interrupted_run_resumes_exactly(tmp_path, monkeypatch, no_figures):
    # Checkpoints every 25 steps, losses logged every 10, evaluations every 30, signal measured every 20:
    # the checkpoint at step 25 falls inside a logging interval and the kill at 45 comes after a log, an
    # evaluation and a signal measurement, all of which the resumed run must redo exactly once.
    args = tiny("signal.stages=[init,final]", "signal.every=20", "signal.examples=100",
                "signal.layer_examples=30")
    assert run_app(monkeypatch, *args, f"hydra.run.dir={tmp_path / 'ref'}") == 0
    with monkeypatch.context() as m:
        kill_at(m, 45)
        with pytest.raises(Killed):
            run_app(m, *args, f"hydra.run.dir={tmp_path / 'cut'}")
    cut = tmp_path / "cut"
    assert not records.is_complete(cut) and torch.load(cut / CHECKPOINT, weights_only=True)["train_state"]["step"] == 25
    assert run_app(monkeypatch, *args, f"hydra.run.dir={cut}") == 0
    assert "resuming from step 25" in (cut / "train.log").read_text()
    assert_same_run(tmp_path / "ref", cut)
    metrics = pd.read_csv(cut / "metrics.csv")
    assert not metrics.duplicated(["step", "split", "name"]).any()


def test_killed_after_its_final_checkpoint_finishes_without_duplicates(tmp_path, monkeypatch, no_figures):
    args = tiny("signal.stages=[init,final]", "signal.examples=200", "signal.layer_examples=50")
    for name in ("ref", "cut"):
        assert run_app(monkeypatch, *args, f"hydra.run.dir={tmp_path / name}") == 0
    # As if killed between the final checkpoint and the COMPLETE marker.
    os.unlink(tmp_path / "cut" / records.COMPLETE)
    assert state.status_of(tmp_path / "cut").status == "partial"
    assert run_app(monkeypatch, *args, f"hydra.run.dir={tmp_path / 'cut'}") == 0
    assert records.is_complete(tmp_path / "cut")
    assert_same_run(tmp_path / "ref", tmp_path / "cut")
    rows = pd.read_csv(tmp_path / "cut" / "signal.csv")
    assert (rows.stage == "final").sum() == (rows.stage == "init").sum() > 0


def test_diverged_run_is_finished_and_not_trained_further(tmp_path, monkeypatch, no_figures):
    out = tmp_path / "div"
    assert run_app(monkeypatch, *TINY, "train.lr=1e6", f"hydra.run.dir={out}") == report.UNFINISHED_EXIT
    first = records.read_json(out / "summary.json")
    assert first["status"] == "diverged" and "loss" in first["reason"] and first["step"] < 60
    assert records.is_complete(out)  # finished: a sweep skips it
    os.unlink(out / records.COMPLETE)  # killed before the marker: the rerun must not train on from NaN weights
    assert run_app(monkeypatch, *TINY, "train.lr=1e6", f"hydra.run.dir={out}") == report.UNFINISHED_EXIT
    again = records.read_json(out / "summary.json")
    assert (again["status"], again["step"], again["reason"]) == ("diverged", first["step"], first["reason"])


# ---- skip, fresh runs, stale records -------------------------------------------------------------


def test_completed_run_is_skipped_and_resume_false_starts_afresh(tmp_path, monkeypatch, no_figures):
    out = tmp_path / "run"
    assert run_app(monkeypatch, *TINY, f"hydra.run.dir={out}") == 0
    first = (out / "summary.json").read_bytes()
    assert run_app(monkeypatch, *TINY, f"hydra.run.dir={out}") == 0
    assert (out / "summary.json").read_bytes() == first  # skipped: not even rewritten
    assert "already finished (completed), skipped" in (out / "train.log").read_text()
    (out / "training_curves.png").write_bytes(b"left by an older run")
    (out / "notes").mkdir()
    mine = {"thesis.pdf": b"%PDF user's", "budget.csv": b"a,b\n1,2\n", "run.log": b"user's log\n",
            "summary.json.bak": b"{}", "notes/summary.json": b"{}"}
    for name, content in mine.items():
        (out / name).write_bytes(content)
    # A fresh run that is killed must not leave the old COMPLETE marker or old records behind.
    with monkeypatch.context() as m:
        kill_at(m, 40)
        with pytest.raises(Killed):
            run_app(m, *TINY, "resume=false", f"hydra.run.dir={out}")
    assert not records.is_complete(out) and not (out / "training_curves.png").exists()
    # Only the files a run writes went: the user's own files beside them are untouched.
    assert {name: (out / name).read_bytes() for name in mine} == mine
    assert records.read_json(out / "summary.json")["step"] == 25  # the new run's own checkpoint
    assert "skipped" not in (out / "train.log").read_text()  # the old log was emptied
    assert (out / ".hydra" / "config.yaml").is_file()
    assert run_app(monkeypatch, *TINY, f"hydra.run.dir={out}") == 0
    assert summary_without_timings(out) == {k: v for k, v in json.loads(first).items() if not TIMING.search(k)}


def test_records_of_another_config_are_neither_skipped_nor_resumed(tmp_path, monkeypatch, no_figures, capsys):
    out = tmp_path / "run"
    assert run_app(monkeypatch, *TINY, f"hydra.run.dir={out}") == 0
    assert run_app(monkeypatch, *tiny("train.lr=0.2"), f"hydra.run.dir={out}") == 2
    err = capsys.readouterr().err
    assert "train.lr: 0.1 -> 0.2" in err and "resume=false" in err
    assert state.status_of(out).status == "completed"  # a single run with a wrong directory touches nothing
    # In a sweep the job is marked failed (files kept) so the report and `collect` show it.
    sweep_dir = tmp_path / "sweep"
    # (A fixed job directory name stands for a changed default, which would not change the name.)
    fixed = ["hydra.sweep.subdir=job", f"hydra.sweep.dir={sweep_dir}"]
    assert run_app(monkeypatch, "-m", *TINY, *fixed) == 0
    assert run_app(monkeypatch, "-m", *tiny("train.l2=0.001"), *fixed) == report.UNFINISHED_EXIT
    outcome = state.status_of(sweep_dir / "job")
    assert outcome.status == "failed" and "train.l2: 0.00025 -> 0.001" in outcome.reason
    assert (sweep_dir / "job" / CHECKPOINT).is_file()
    assert re.search(r"failed\s+job\s+the records in", capsys.readouterr().err)


# ---- fault isolation in a sweep (in-process) -----------------------------------------------------


def test_failing_and_diverging_jobs_do_not_stop_the_sweep(tmp_path, monkeypatch, no_figures, capsys):
    from sparseprop.runner import run as run_module

    real_prepare = run_module.Run.prepare

    def prepare(self, *a, **kw):
        if self.cfg.train.lr == 0.2:
            raise RuntimeError("boom")
        return real_prepare(self, *a, **kw)

    sweep_dir = tmp_path / "sweep"
    args = ["-m", *TINY, "train.lr=0.2,1e6,0.1", f"hydra.sweep.dir={sweep_dir}"]
    with monkeypatch.context() as m:
        m.setattr(run_module.Run, "prepare", prepare)
        assert run_app(m, *args) == report.UNFINISHED_EXIT
    err = capsys.readouterr().err
    failed, diverged, completed = (job(sweep_dir, f"train.lr={v}") for v in ("0.2", "1000000.0", "0.1"))
    states = [state.status_of(d) for d in (failed, diverged, completed)]
    assert [s.status for s in states] == ["failed", "diverged", "completed"]
    assert states[0].reason == "RuntimeError: boom" and "training loss" in states[1].reason
    assert "RuntimeError: boom" in (failed / "train.log").read_text()  # the traceback is in the job's log
    assert "2 of 3 jobs did not complete" in err
    assert re.search(rf"failed\s+{re.escape(failed.name)}\s+RuntimeError: boom", err)
    assert re.search(rf"diverged\s+{re.escape(diverged.name)}\s+training loss", err)
    assert completed.name not in err.replace(str(sweep_dir), "")
    # Again, with the cause fixed: the failed job is retried, the finished ones are skipped.
    done = {d: (d / "summary.json").read_bytes() for d in (diverged, completed)}
    assert run_app(monkeypatch, *args) == report.UNFINISHED_EXIT  # the diverged job still did not complete
    assert state.status_of(failed).status == "completed"
    assert all((d / "summary.json").read_bytes() == b for d, b in done.items())
    assert "1 of 3 jobs did not complete" in capsys.readouterr().err


@pytest.mark.slow
def test_no_truncated_file_after_a_kill(tmp_path):
    # The writer is killed while a temporary file exists, that is, in the middle of writing a record:
    # the record under its real name must still be the whole previous version.
    target = tmp_path / "summary.json"
    code = ("import itertools, sys\nfrom sparseprop import records\n"
            "for i in itertools.count():\n"
            "    records.write_json(sys.argv[1], {'i': i, 'data': str(i) * 20_000_000})\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(target)])
    try:
        start = time.time()
        while not (target.is_file() and list(tmp_path.glob(".summary.json.*.tmp"))):
            assert proc.poll() is None and time.time() - start < 120, "the writer never wrote through a temporary file"
            time.sleep(0.001)
    finally:
        proc.kill()
        proc.wait()
    data = json.loads(target.read_text())
    assert data["data"] == str(data["i"]) * 20_000_000
    records.remove_temporaries(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


# ---- end to end through the console script (slow) -----------------------------------------------


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    start = time.time()
    while not path.exists():
        assert proc.poll() is None, "finished before it could be killed"
        assert time.time() - start < timeout, f"no {path}"
        time.sleep(0.01)


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the command and every process it started (joblib workers included), as a dying node would."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _popen(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sparseprop_exe(), *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _all_records_whole(run_dir: Path) -> None:
    for p in run_dir.iterdir():
        if p.name.startswith(".") or not p.is_file():
            continue
        if p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".csv":
            pd.read_csv(p)
        elif p.suffix == ".pt":
            torch.load(p, weights_only=True)
        elif p.suffix == ".npz":
            dict(np.load(p))


LONG = ["dataset=digits", "arch.depth=3", "arch.width=32", "train.eval_interval=400", "train.checkpoint_interval=100",
        "train.log_interval=30", "progress=false", "threads=1", "signal.stages=[init,final]", "signal.every=350",
        "signal.examples=300", "signal.layer_examples=100"]


@pytest.mark.slow
def test_sigkill_mid_training_resumes_identically(tmp_path, monkeypatch, no_figures):
    # The reference runs uninterrupted in this process (same code, same single thread; figures,
    # which hold no numbers, are skipped); the other is a real process killed with SIGKILL.
    args = ["train", *LONG, "train.iterations=1500"]
    assert run_app(monkeypatch, *args[1:], f"hydra.run.dir={tmp_path / 'ref'}") == 0
    cut = tmp_path / "cut"
    proc = _popen(*args, f"hydra.run.dir={cut}")
    _wait_for(cut / CHECKPOINT, proc)
    time.sleep(0.2)
    _kill(proc)
    # A kill between the checkpoint's two renames leaves only the previous one, which resuming reads.
    saved = cut / CHECKPOINT if (cut / CHECKPOINT).is_file() else cut / records.PREVIOUS_CHECKPOINT
    step = torch.load(saved, weights_only=True)["train_state"]["step"]
    assert state.status_of(cut).status == "partial" and 100 <= step < 1500
    _all_records_whole(cut)
    again = run_cli(*args, f"hydra.run.dir={cut}")
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming from step {step}" in (cut / "train.log").read_text()
    assert_same_run(tmp_path / "ref", cut)
    assert not list(cut.glob(".*.tmp"))


@pytest.mark.slow
def test_sweep_killed_at_random_points_completes_identically(tmp_path, monkeypatch, no_figures):
    rng = random.Random(2020)
    args = ["train", "-m", *LONG, "train.iterations=800", "seed=0,1"]
    ref_dir, cut_dir = tmp_path / "ref", tmp_path / "cut"
    assert run_app(monkeypatch, *args[1:], f"hydra.sweep.dir={ref_dir}") == 0
    jobs = sorted(p.name for p in ref_dir.iterdir() if p.is_dir())
    assert len(jobs) == 2
    # Kill the whole sweep while its first job trains, then at a random moment of its second job's life
    # (loading, pruning, training or writing), then let it finish.
    for job_name, sign in zip(jobs, (CHECKPOINT, ".hydra")):
        proc = _popen(*args, f"hydra.sweep.dir={cut_dir}")
        _wait_for(cut_dir / job_name / sign, proc)
        time.sleep(rng.uniform(0.0, 2.0))
        _kill(proc)
        assert state.status_of(cut_dir / job_name).status in ("partial", "completed")
    assert state.status_of(cut_dir / jobs[0]).status == "completed"
    last = run_cli(*args, f"hydra.sweep.dir={cut_dir}")
    assert last.returncode == 0, last.stderr[-2000:]
    assert "all 2 jobs completed" in last.stderr
    assert sorted(p.name for p in cut_dir.iterdir() if p.is_dir()) == jobs
    for job_name in jobs:
        assert_same_run(ref_dir / job_name, cut_dir / job_name)
        metrics = pd.read_csv(cut_dir / job_name / "metrics.csv")
        assert not metrics.duplicated(["step", "split", "name"]).any()
        signal_rows = pd.read_csv(cut_dir / job_name / "signal.csv")
        assert not signal_rows.duplicated(["stage", "step", "scope", "layer"]).any()


@pytest.mark.slow
def test_parallel_sweep_isolates_failing_and_diverging_jobs(tmp_path):
    sweep_dir = tmp_path / "sweep"
    fixed = tiny("train.iterations=200", "threads=0")
    broken = sweep_dir / jobs.job_dirname([*fixed, "train.lr=0.05"], list(jobs.RUNTIME_KEYS), ",", "=")
    broken.mkdir(parents=True)
    # Records of another config (another seed): that job is refused and marked failed, the others go on.
    torch.save({"config": {"seed": 12345}}, broken / CHECKPOINT)
    (broken / ".hydra").mkdir()
    (broken / ".hydra" / "config.yaml").write_text("seed: 12345\n")
    res = run_cli("train", "-m", *fixed, "train.lr=0.1,0.05,1e6", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                  f"hydra.sweep.dir={sweep_dir}")
    assert res.returncode == report.UNFINISHED_EXIT, res.stderr[-2000:]
    assert "2 of 3 jobs did not complete" in res.stderr
    assert re.search(rf"failed\s+{re.escape(broken.name)}\s+the records in .* another config \(seed: 12345", res.stderr)
    assert re.search(r"diverged\s+\S*train.lr=1000000.0\s+training loss", res.stderr)
    good = job(sweep_dir, "train.lr=0.1")
    assert state.status_of(good).status == "completed"
    # threads=0 with two joblib workers on this machine's cores: each job gets its share, not all of them.
    share = max(1, launchers.available_cores() // min(2, launchers.available_cores()))
    assert f"{share} torch threads for this job" in (good / "train.log").read_text()


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_sweep(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep_dir = tmp_path / "sweep"
    res = run_cli("train", "-m", *TINY, "seed=0,1", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
                  f"hydra.sweep.dir={sweep_dir}")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "all 2 jobs completed" in res.stderr
    assert [state.status_of(job(sweep_dir, f"seed={s}")).status for s in (0, 1)] == ["completed", "completed"]
    assert (sweep_dir / "multirun.yaml").is_file() and (sweep_dir / ".submitit").is_dir()
