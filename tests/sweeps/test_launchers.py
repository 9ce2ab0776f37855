"""Parallel launchers: torch threads per job, and what killed joblib sweeps leave in shared memory."""

from __future__ import annotations

import os
import subprocess

from sparseprop.sweeps import launchers


def test_job_threads_share_the_cores():
    joblib = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert launchers.job_threads({"_target_": joblib, "n_jobs": 2}, 2) == 1
    assert launchers.job_threads({"_target_": joblib, "n_jobs": -1}, 2) == 1
    assert launchers.job_threads({"_target_": joblib, "n_jobs": 10}, 2) == 1
    assert launchers.job_threads({"_target_": joblib, "n_jobs": 1}, 8) == 8
    assert launchers.job_threads({"_target_": joblib, "n_jobs": 2}, 16) == 8
    assert launchers.job_threads({"_target_": joblib, "n_jobs": -2}, 16) == 1
    assert launchers.job_threads({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, 2) == 0
    assert launchers.job_threads({"_target_": "x.SlurmLauncher", "cpus_per_task": 4}, 64) == 4


def test_shared_memory_of_dead_sweeps_only_is_cleaned(tmp_path):
    dead = subprocess.Popen(["true"])  # a process that has exited: its id belongs to nobody now
    dead.wait()
    live = os.getpid()
    names = {f"joblib_memmapping_folder_{dead.pid}_ab12_cd34": "empty", f"sem.loky-{dead.pid}-x1y2": "file",
             f"joblib_memmapping_folder_{live}_ab12_cd34": "empty", f"sem.loky-{live}-x1y2": "file",
             f"joblib_memmapping_folder_{dead.pid}_full": "full", "unrelated": "empty", f"sem.other-{dead.pid}": "file"}
    for name, kind in names.items():
        if kind == "file":
            (tmp_path / name).write_bytes(b"")
        else:
            (tmp_path / name).mkdir()
            if kind == "full":
                (tmp_path / name / "array.pkl").write_bytes(b"data")
    removed = launchers.clean_shared_memory(tmp_path)
    assert sorted(removed) == sorted([f"joblib_memmapping_folder_{dead.pid}_ab12_cd34", f"sem.loky-{dead.pid}-x1y2"])
    assert sorted(os.listdir(tmp_path)) == sorted(set(names) - set(removed))
