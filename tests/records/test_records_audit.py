"""Records under attack: links where records go, damaged sweep records, job paths that are files, read-only sweeps."""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import pandas as pd
import pytest

from sparseprop import records
from sparseprop.records import files as record_io
from sparseprop.runner import checkpoint
from sparseprop.sweeps import collect
from sparseprop.paper import reproduce
from sparseprop.sweeps import jobs
from sparseprop.errors import SparsepropError
from tests.conftest import read_only_view, run_cli
from tests.records.helpers import Payload, fail_writes, one_error_line, snapshot
from tests.sweeps.helpers import TINY, run_app

SWEEP_ARGS = ["-m", *TINY, "seed=0,1"]


def test_the_lock_never_follows_a_link(tmp_path, monkeypatch, capsys):
    victim = tmp_path / "notes.txt"
    victim.write_text("the user's own file\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / records.LOCK).symlink_to(victim)
    with pytest.raises(records.RecordsError, match="is a link"):
        with records.run_lock(run_dir):
            pass
    assert records.lock_holder(run_dir) is None
    assert run_app(monkeypatch, *TINY, f"hydra.run.dir={run_dir}") == 2
    assert "is a link" in one_error_line(capsys.readouterr().err)
    assert victim.read_text() == "the user's own file\n"
    assert sorted(p.name for p in run_dir.iterdir()) == [records.LOCK]


def test_a_refused_checkpoint_adds_no_warning_to_stderr(tmp_path):
    path = tmp_path / records.CHECKPOINT
    path.write_bytes(pickle.dumps({"model": Payload(tmp_path / "ran")}, protocol=4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(records.DamagedRecord, match="objects other than tensors"):
            records.load_torch(path)
    assert caught == [] and not (tmp_path / "ran").exists()


def fake_run(run_dir: Path) -> None:
    """The text records `collect` reads, for one completed run."""
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("seed: 0\n")
    records.write_json(run_dir / "summary.json", {"status": "completed", "final_test_error_pct": 5.0})
    records.mark_complete(run_dir)


@pytest.mark.parametrize("damage", ["garbage", "list", "not a sweep", "folder"])
def test_collect_names_a_damaged_multirun_yaml_and_still_tabulates(tmp_path, capsys, damage):
    fake_run(tmp_path / "sweep" / "seed=0")
    path = tmp_path / "sweep" / "multirun.yaml"
    if damage == "folder":
        path.mkdir()
    else:
        path.write_bytes({"garbage": b"\xff\x00{[", "list": b"[1, 2]\n", "not a sweep": b"hydra: 3\n"}[damage])
    with pytest.raises(SparsepropError, match="collect: 1 damaged sweep record "):
        collect.main([str(tmp_path / "sweep")])
    err = capsys.readouterr().err
    assert f"{path} is damaged" in err
    assert list(pd.read_csv(tmp_path / "sweep" / collect.RUNS_CSV).status) == ["completed"]


@pytest.mark.parametrize("kind", ["file", "dangling link"])
def test_a_sweep_whose_job_directory_is_a_file_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys, kind):
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    name = jobs.job_dirname(["seed=1", *TINY], list(jobs.RUNTIME_KEYS), ",", "=")
    if kind == "file":
        (sweep_dir / name).write_text("the user's own file\n")
    else:
        (sweep_dir / name).symlink_to(tmp_path / "nowhere")
    assert run_app(monkeypatch, *SWEEP_ARGS, f"hydra.sweep.dir={sweep_dir}") == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{sweep_dir / name} is a file or a dangling link" in line
    assert sorted(p.name for p in sweep_dir.iterdir()) == [name]  # no multirun.yaml, no other job
    if kind == "file":
        assert (sweep_dir / name).read_text() == "the user's own file\n"


def read_only(monkeypatch, under: Path) -> None:
    """``under`` behaves as a read-only mount: writes fail with EROFS and ``os.access`` says not writable."""
    import errno

    fail_writes(monkeypatch, errno.EROFS, under)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, *a, **k: False if str(path).startswith(str(under))
                        and mode & os.W_OK else real_access(path, mode, *a, **k))


def test_a_read_only_sweep_is_skipped_when_finished_and_refused_otherwise(tmp_path, monkeypatch, no_figures, capsys):
    import torch

    sweep_dir = tmp_path / "sweep"
    args = [*SWEEP_ARGS, f"hydra.sweep.dir={sweep_dir}"]
    assert run_app(monkeypatch, *args) == 0
    first, second = (next(p for p in sweep_dir.iterdir() if f"seed={s}" in p.name) for s in (0, 1))
    capsys.readouterr()

    def attempt() -> tuple[int, str]:
        before = snapshot(sweep_dir)
        with monkeypatch.context() as m:
            read_only(m, sweep_dir)
            code = run_app(m, *args)
        assert snapshot(sweep_dir) == before
        return code, capsys.readouterr().err

    code, err = attempt()
    assert code == 0 and "is read-only and every job in it is finished" in err and "all 2 jobs completed" in err
    # A default changed since the first job ran (its checkpoint holds the config it was made with).
    saved = (first / records.CHECKPOINT).read_bytes()
    ckpt = torch.load(first / records.CHECKPOINT, weights_only=True)
    ckpt["config"]["train"]["lr"] = 0.5
    torch.save(ckpt, first / records.CHECKPOINT)
    code, err = attempt()
    assert code == 2 and "made with another config" in one_error_line(err) and "train.lr: 0.5 ->" in err
    (first / records.CHECKPOINT).write_bytes(saved)
    os.unlink(second / records.COMPLETE)
    code, err = attempt()
    line = one_error_line(err)
    assert code == 2 and f"cannot write to {sweep_dir}" in line and "1 of its 2 jobs are not finished" in line


@pytest.mark.parametrize("text", ["[1, 2]", '{"experiments": [1]}', '{"experiments": {"e2_init": 3}}'])
def test_reproduce_names_a_status_of_the_wrong_type(tmp_path, text):
    path = tmp_path / "collected" / "quick" / "status.json"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(records.DamagedRecord, match="status.json is damaged"):
        reproduce.main(["--figures-only", "--outputs", str(tmp_path)])
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "summary.json").write_text("[1, 2]")
    assert not reproduce._finished(tmp_path / "job")


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts need root")
def test_a_finished_sweep_on_a_real_read_only_mount(tmp_path):
    src = tmp_path / "src"
    assert run_cli("train", *SWEEP_ARGS, "figures=false", f"hydra.sweep.dir={src}").returncode == 0
    with read_only_view(src, tmp_path / "ro") as ro:
        before = snapshot(ro)
        again = run_cli("train", *SWEEP_ARGS, "figures=false", f"hydra.sweep.dir={ro}")
        assert again.returncode == 0 and "all 2 jobs completed" in again.stderr, again.stderr
        assert "Traceback" not in again.stderr and snapshot(ro) == before


@pytest.mark.parametrize("kind", ["folder", "link"])
def test_a_sweep_config_that_is_a_folder_or_a_link_is_refused_untouched(tmp_path, monkeypatch, capsys, kind):
    sweep_dir, victim = tmp_path / "sweep", tmp_path / "notes.yaml"
    sweep_dir.mkdir()
    victim.write_text("the user's own file\n")
    if kind == "folder":
        (sweep_dir / "multirun.yaml").mkdir()
    else:
        (sweep_dir / "multirun.yaml").symlink_to(victim)
    assert run_app(monkeypatch, *SWEEP_ARGS, f"hydra.sweep.dir={sweep_dir}") == 2
    assert f"multirun.yaml is a {kind}" in one_error_line(capsys.readouterr().err)
    assert victim.read_text() == "the user's own file\n" and [p.name for p in sweep_dir.iterdir()] == ["multirun.yaml"]


def test_a_log_that_is_a_link_is_refused_and_its_target_untouched(tmp_path, monkeypatch, capsys):
    run_dir, victim = tmp_path / "run", tmp_path / "notes.txt"
    run_dir.mkdir()
    victim.write_text("the user's own file\n")
    (run_dir / records.LOG).symlink_to(victim)
    assert run_app(monkeypatch, *TINY, "resume=false", f"hydra.run.dir={run_dir}") == 2
    assert "train.log is a link" in one_error_line(capsys.readouterr().err)
    assert victim.read_text() == "the user's own file\n"
    assert not (run_dir / "summary.json").exists()


@pytest.mark.parametrize("reader", [records.read_json, records.read_csv, records.read_npz])
def test_a_record_that_cannot_be_read_is_one_named_error(tmp_path, reader):
    (tmp_path / "folder").mkdir()
    with pytest.raises(records.RecordsError, match=f"cannot read {tmp_path / 'folder'}: "):
        reader(tmp_path / "folder")
    with pytest.raises(FileNotFoundError):  # absent stays absent: callers tell the two apart
        reader(tmp_path / "absent")
    if os.geteuid() != 0:  # root reads anything
        (tmp_path / "locked").write_text("{}")
        os.chmod(tmp_path / "locked", 0)
        with pytest.raises(records.RecordsError, match="Permission denied"):
            reader(tmp_path / "locked")


def test_collect_lists_a_run_with_an_unreadable_summary_as_damaged(tmp_path, monkeypatch, capsys):
    fake_run(tmp_path / "a")
    fake_run(tmp_path / "b")
    locked = tmp_path / "a" / "summary.json"
    real_open = open

    def open_(path, *args, **kwargs):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(record_io, "open", open_, raising=False)  # the readers live there
    with pytest.raises(SparsepropError, match="collect: 1 runs have damaged records"):
        collect.main([str(tmp_path)])
    assert f"cannot read {locked}: Permission denied" in capsys.readouterr().err
    assert sorted(pd.read_csv(tmp_path / collect.RUNS_CSV).status) == ["completed", "damaged"]


@pytest.mark.parametrize("reader", [records.read_json, records.read_csv, records.read_npz, records.load_torch])
def test_a_named_pipe_in_a_records_place_is_refused_not_waited_on(tmp_path, reader):
    import signal

    os.mkfifo(tmp_path / "summary.json")

    def hung(*_):
        raise AssertionError("the reader waited on a named pipe")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    try:
        with pytest.raises(records.RecordsError, match="not a regular file"):
            reader(tmp_path / "summary.json")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_load_run_keeps_the_network_when_the_summary_is_not_a_summary(tmp_path, monkeypatch, no_figures):
    out = tmp_path / "run"
    assert run_app(monkeypatch, *TINY, f"hydra.run.dir={out}") == 0
    for text in ("[1, 2]", '{"step": 3}'):
        (out / "summary.json").write_text(text)
        loaded = checkpoint.load_run(out)
        assert loaded.summary == {} and loaded.step == 60 and loaded.masks
