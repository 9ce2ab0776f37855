"""Records safety: one writer per run directory, exact deletions, no code from checkpoints, damaged and unwritable records."""

from __future__ import annotations

import errno
import gzip
import os
import subprocess
import time

import pandas as pd
import pytest
import torch

from sparseprop import data, records
from sparseprop.runner import checkpoint
from sparseprop.sweeps import collect
from sparseprop.runner import plots
from sparseprop.paper import reproduce
from sparseprop.sweeps import report, state
from sparseprop.errors import SparsepropError
from tests.conftest import REPO, read_only_view, run_cli, sparseprop_exe
from tests.records.helpers import Payload, fail_writes, one_error_line, snapshot
from tests.sweeps.helpers import TINY, Killed, assert_same_run, kill_at, run_app, tiny


# ---- one writer per run directory ----------------------------------------------------------------


def test_a_held_directory_refuses_a_second_writer_who_writes_nothing(tmp_path, monkeypatch, no_figures, capsys):
    out = tmp_path / "run"
    assert run_app(monkeypatch, *TINY, f"hydra.run.dir={out}") == 0
    before = snapshot(out)
    with records.run_lock(out):  # this process is the writer now
        assert records.lock_holder(out) == str(os.getpid())
        assert state.status_of(out).status == "busy"
        capsys.readouterr()
        for extra in ("resume=false", "train.lr=0.05"):
            assert run_app(monkeypatch, *TINY, extra, f"hydra.run.dir={out}") == 2
            line = one_error_line(capsys.readouterr().err)
            assert str(out) in line and f"pid {os.getpid()}" in line
        assert snapshot(out) == before  # neither .hydra/, nor the log, nor a record was touched
    assert records.lock_holder(out) is None and state.status_of(out).status == "completed"


def test_two_processes_on_one_directory_never_mix_their_records(tmp_path):
    out = tmp_path / "run"
    long = tiny("train.iterations=1000000", "train.eval_interval=100000", "train.checkpoint_interval=200",
                "figures=false")
    first = subprocess.Popen([sparseprop_exe(), "train", *long, f"hydra.run.dir={out}"], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        start = time.time()
        while not (out / records.CHECKPOINT).is_file():
            assert first.poll() is None and time.time() - start < 120, "the first run never checkpointed"
            time.sleep(0.05)
        second = run_cli("train", *long, "train.lr=0.05", "resume=false", f"hydra.run.dir={out}", timeout=120)
        assert first.poll() is None, "the first run ended before the second one tried"
        assert second.returncode == 2
        line = one_error_line(second.stderr)
        assert str(out) in line and f"pid {first.pid}" in line
    finally:
        first.kill()
        first.wait()
    # Everything in the directory is the first run's: its config, its checkpoint's config, its log alone.
    assert "lr: 0.1" in (out / ".hydra" / "config.yaml").read_text()
    # Killed between its two renames, the first run leaves only its previous checkpoint (which resuming reads).
    kept = [out / name for name in (records.CHECKPOINT, records.PREVIOUS_CHECKPOINT) if (out / name).is_file()]
    assert kept and all(records.load_torch(path)["config"]["train"]["lr"] == 0.1 for path in kept)
    assert "0.05" not in (out / ".hydra" / "overrides.yaml").read_text()


def test_a_busy_sweep_job_is_reported_and_the_others_go_on(tmp_path, monkeypatch, no_figures, capsys):
    sweep_dir = tmp_path / "sweep"
    args = ["-m", *TINY, "seed=0,1", f"hydra.sweep.dir={sweep_dir}"]
    assert run_app(monkeypatch, *args) == 0
    busy = next(p for p in sweep_dir.iterdir() if "seed=1" in p.name)
    other = next(p for p in sweep_dir.iterdir() if "seed=0" in p.name)
    before, redone = snapshot(busy), (other / "summary.json").stat().st_mtime_ns
    capsys.readouterr()
    with records.run_lock(busy):
        assert run_app(monkeypatch, *args, "resume=false") == report.UNFINISHED_EXIT
        assert snapshot(busy) == before
    err = capsys.readouterr().err
    assert "1 of 2 jobs did not complete" in err and f"pid {os.getpid()}" in err and "busy" in err
    assert records.is_complete(other) and (other / "summary.json").stat().st_mtime_ns != redone


# ---- resume=false deletes only what a run writes -------------------------------------------------


def test_every_file_a_run_writes_is_in_the_record_list(tmp_path, monkeypatch):
    out = tmp_path / "run"
    full = tiny("signal.stages=[init,pruned,isometry,final]", "signal.every=30", "signal.examples=50",
                "signal.layer_examples=20", "isometry=ai", "isometry.steps=20", "figures=true")
    assert run_app(monkeypatch, *full, f"hydra.run.dir={out}") == 0
    written = {p.name for p in out.iterdir() if p.is_file()}
    assert written - {records.LOG, records.LOCK} <= set(records.record_files())
    # every kind of record was exercised: all figures, the kept previous checkpoint, the isometry curve
    assert {f"{s}.png" for s in records.FIGURES} <= written and records.PREVIOUS_CHECKPOINT in written
    assert state.discard_records(out) and {p.name for p in out.iterdir()} == {".hydra", records.LOG, records.LOCK}
    assert (out / records.LOG).stat().st_size == 0


def test_remove_temporaries_touches_only_record_temporaries(tmp_path):
    keep = [".thesis.pdf.abc123.tmp", ".cache", "summary.json", ".summary.json.x.y.tmp.txt", "notes.tmp"]
    gone = [".summary.json.1a2b3c4d.tmp", ".checkpoint.pt.k9_x.tmp", ".layer_kept.png.ab_12cd.png"]
    for name in keep + gone:
        (tmp_path / name).write_text("x")
    assert sorted(records.remove_temporaries(tmp_path)) == sorted(gone)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)


@pytest.mark.parametrize("bad, why", [("hydra.run.dir=", "''"), ("hydra.run.dir=''", "''"),
                                      ("hydra.run.dir={file}", "is a file"), ("hydra.run.dir={file}/sub", "is a file"),
                                      ("hydra.run.dir={link}", "dangling link")])
def test_run_directory_that_is_empty_a_file_or_a_dangling_link_is_one_line(tmp_path, monkeypatch, capsys, bad, why):
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    before = sorted(os.listdir(tmp_path))
    assert run_app(monkeypatch, *TINY, bad.format(file=tmp_path / "file", link=tmp_path / "link")) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "hydra.run.dir=" in line and why in line
    assert sorted(os.listdir(tmp_path)) == before and not (REPO / "train.log").exists()


def test_a_folder_sparseprop_did_not_write_is_refused_untouched(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "metrics.csv").write_text("my,own\n1,2\n")
    (folder / "thesis.pdf").write_bytes(b"%PDF")
    before = snapshot(folder)
    for extra in ("resume=false", "resume=true"):
        assert run_app(monkeypatch, *TINY, extra, f"hydra.run.dir={folder}") == 2
        line = one_error_line(capsys.readouterr().err)
        assert "metrics.csv" in line and "not a sparseprop run directory" in line
        assert snapshot(folder) == before and not (folder / ".hydra").exists() and not (folder / records.LOCK).exists()


# ---- no code runs from a checkpoint --------------------------------------------------------------


def test_a_planted_pickle_payload_never_runs(tmp_path, monkeypatch, no_figures):
    marker = tmp_path / "payload-ran"
    out = tmp_path / "run"
    (out / ".hydra").mkdir(parents=True)  # a run directory from elsewhere: its config and a planted checkpoint
    (out / ".hydra" / "config.yaml").write_text("seed: 0\n")
    torch.save({"config": Payload(marker), "model": Payload(marker)}, out / records.CHECKPOINT)
    # `collect` with no .hydra/: the config is not read from the checkpoint at all
    result = run_cli("collect", str(out))
    assert result.returncode == 0 and not marker.exists(), result.stderr
    with pytest.raises(SparsepropError, match="is damaged"):
        checkpoint.load_run(out)
    assert state.saved_config(out) is None and not marker.exists()
    # `train` pointed at it: the checkpoint is set aside, named, and the run starts from scratch
    assert run_app(monkeypatch, *TINY, f"hydra.run.dir={out}") == 0
    assert not marker.exists() and records.is_complete(out)
    assert (out / f"{records.CHECKPOINT}.damaged-1").is_file()
    notes = " ".join(records.read_json(out / "summary.json")["warnings"])
    assert f"{out / records.CHECKPOINT} is damaged" in notes and "starting from scratch" in notes
    # The payload is live: loading it the unsafe way does run it, so the checks above could have failed.
    torch.load(out / f"{records.CHECKPOINT}.damaged-1", weights_only=False)
    assert marker.read_text() == "ran"


def test_checkpoints_load_with_weights_only(tmp_path, monkeypatch, no_figures):
    out = tmp_path / "run"
    assert run_app(monkeypatch, *tiny("train.optimizer=momentum"), f"hydra.run.dir={out}") == 0
    for name in (records.CHECKPOINT, records.PREVIOUS_CHECKPOINT):
        ckpt = torch.load(out / name, weights_only=True)
        assert {"model", "masks", "optimizer", "sampler", "train_state", "rng", "config"} <= set(ckpt)
    loaded = checkpoint.load_run(out)
    assert loaded.step == 60 and loaded.masks


# ---- damaged records -----------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["garbage", "truncated", "both"])
def test_damaged_checkpoint_is_set_aside_and_the_run_resumes_from_the_previous_good_one(
        tmp_path, monkeypatch, no_figures, damage):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert run_app(monkeypatch, *TINY, f"hydra.run.dir={whole}") == 0
    with monkeypatch.context() as m:
        kill_at(m, 55)  # checkpoints at steps 25 and 50
        with pytest.raises(Killed):
            run_app(m, *TINY, f"hydra.run.dir={cut}")
    ckpt, prev = cut / records.CHECKPOINT, cut / records.PREVIOUS_CHECKPOINT
    assert records.load_torch(prev)["train_state"]["step"] == 25
    damaged = [ckpt, prev] if damage == "both" else [ckpt]
    for path in damaged:
        good = path.read_bytes()
        path.write_bytes(os.urandom(len(good)) if damage == "garbage" else good[: len(good) // 2])
    bad = {p: p.read_bytes() for p in damaged}
    assert run_app(monkeypatch, *TINY, f"hydra.run.dir={cut}") == 0
    for path, content in bad.items():
        assert (cut / f"{path.name}.damaged-1").read_bytes() == content  # set aside, not deleted
    summary = records.read_json(cut / "summary.json")
    notes = " ".join(summary["warnings"])
    assert all(f"{p} is damaged" in notes for p in damaged)
    assert ("starting from scratch" if damage == "both" else "resumed from checkpoint.prev.pt (step 25)") in notes
    records.write_json(cut / "summary.json", {**summary, "warnings": []})
    assert_same_run(whole, cut)  # from step 25 or from scratch, the numbers are those of an uninterrupted run
    assert run_app(monkeypatch, *TINY, f"hydra.run.dir={cut}") == 0 and records.is_complete(cut)  # not for ever


def test_truncated_summary_of_a_finished_job_does_not_stop_the_sweep(tmp_path, monkeypatch, no_figures, capsys):
    sweep_dir = tmp_path / "sweep"
    args = ["-m", *TINY, "seed=0,1", f"hydra.sweep.dir={sweep_dir}"]
    assert run_app(monkeypatch, *args) == 0
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    good = (jobs[0] / "summary.json").read_bytes()
    (jobs[0] / "summary.json").write_bytes(good[: len(good) // 3])
    assert state.status_of(jobs[0]).status == "damaged"
    assert run_app(monkeypatch, *args) == 0  # both complete: the damaged one redone from its final checkpoint
    assert all(state.status_of(j).status == "completed" for j in jobs)
    assert "summary.json is damaged" in (jobs[0] / records.LOG).read_text()


def test_collect_lists_a_damaged_run_and_goes_on(tmp_path, monkeypatch, no_figures, capsys):
    sweep_dir = tmp_path / "sweep"
    assert run_app(monkeypatch, "-m", *tiny("signal.stages=[init]", "signal.examples=50", "signal.layer_examples=20"),
                   "seed=0,1,2,3,4", f"hydra.sweep.dir={sweep_dir}") == 0
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    (jobs[0] / "summary.json").write_text('{"status": "compl')
    (jobs[1] / "layers.csv").write_bytes(b"\xff\xfe\x00garbage\x00\n\x01,\x02\n")
    (jobs[2] / "signal.csv").write_text("no,such,columns\n1,2,3\n")
    (jobs[3] / ".hydra" / "config.yaml").write_text("seed: [0, 1\n  init: {")
    capsys.readouterr()
    with pytest.raises(SparsepropError, match="collect: 4 runs have damaged records"):
        collect.main([str(sweep_dir)])
    err = capsys.readouterr().err
    runs = pd.read_csv(sweep_dir / collect.RUNS_CSV)
    assert list(runs.status) == ["damaged", "damaged", "damaged", "damaged", "completed"]
    for job, name in zip(jobs, ("summary.json", "layers.csv", "signal.csv", ".hydra/config.yaml")):
        assert f"{job / name} is damaged" in err
    assert runs.final_test_error_pct.notna().tolist() == [False, True, True, True, True]  # the rest is still read


def test_plot_names_each_damaged_file_and_draws_the_others(tmp_path, monkeypatch, capsys):
    runs = [tmp_path / f"run{i}" for i in range(3)]
    for r in runs:
        assert run_app(monkeypatch, *TINY, "figures=false", f"hydra.run.dir={r}") == 0
    (runs[0] / "metrics.csv").write_bytes(b"\x00\xff\xfe garbage")
    (runs[1] / "layers.csv").write_text("index,name\n0,a\n")  # parses, but has no kind or kept_fraction
    capsys.readouterr()
    with pytest.raises(SparsepropError, match="2 of 3 runs could not be drawn"):
        plots.main([str(r) for r in runs])
    out, err = capsys.readouterr()
    assert f"{runs[0] / 'metrics.csv'} is damaged" in err and f"{runs[1] / 'layers.csv'} is damaged" in err
    assert f"{runs[2]}: 4 files" in out and not list(runs[0].glob(".*.tmp"))


def test_load_run_of_garbage_is_one_clean_error(tmp_path):
    (tmp_path / records.CHECKPOINT).write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(SparsepropError, match=r"checkpoint\.pt is damaged"):
        checkpoint.load_run(tmp_path)


# ---- unwritable places ---------------------------------------------------------------------------


def test_finished_run_on_a_read_only_mount_is_skipped_without_writing(tmp_path, monkeypatch, no_figures, capsys):
    done, unfinished = tmp_path / "done", tmp_path / "unfinished"
    assert run_app(monkeypatch, *TINY, f"hydra.run.dir={done}") == 0
    with monkeypatch.context() as m:
        kill_at(m, 40)
        with pytest.raises(Killed):
            run_app(m, *TINY, f"hydra.run.dir={unfinished}")
    before = {d: snapshot(d) for d in (done, unfinished)}
    capsys.readouterr()
    with monkeypatch.context() as m:
        fail_writes(m, errno.EROFS, tmp_path)
        assert run_app(m, *TINY, f"hydra.run.dir={done}") == 0
        assert capsys.readouterr().err == ""
        assert run_app(m, *TINY, f"hydra.run.dir={unfinished}") == 2
        line = one_error_line(capsys.readouterr().err)
        assert f"cannot write to {unfinished}" in line
    assert {d: snapshot(d) for d in (done, unfinished)} == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_by_permissions(tmp_path, monkeypatch, no_figures, capsys):
    done = tmp_path / "done"
    assert run_app(monkeypatch, *TINY, f"hydra.run.dir={done}") == 0
    os.unlink(done / records.LOCK)
    before = snapshot(done)
    done.chmod(0o555)
    try:
        assert run_app(monkeypatch, *TINY, f"hydra.run.dir={done}") == 0
    finally:
        done.chmod(0o755)
    assert snapshot(done) == before


def test_full_disk_is_one_line_and_leaves_no_temporary(tmp_path, monkeypatch, no_figures, capsys):
    out = tmp_path / "run"
    real_fsync = os.fsync
    calls = []

    def fsync(fd):
        calls.append(fd)
        if len(calls) > 4:  # the first few records fit; then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", fsync)
        assert run_app(m, *TINY, f"hydra.run.dir={out}") == 2
    line = one_error_line(capsys.readouterr().err)
    assert "No space left on device" in line and str(out) in line
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")] and not records.is_complete(out)
    assert run_app(monkeypatch, *TINY, f"hydra.run.dir={out}") == 0  # space again: it resumes and finishes


def test_full_extraction_cache_leaves_no_partial_file(tmp_path, monkeypatch):
    folder, md5 = data.idx._IDX_SOURCES["mnist"]
    raw = tmp_path / "root" / folder / "raw"
    raw.mkdir(parents=True)
    for name in data.idx._IDX_FILES:
        with gzip.open(raw / f"{name}.gz", "wb") as f:
            f.write(os.urandom(1000))
    monkeypatch.setattr(data.idx, "_md5", lambda p: md5[p.name])
    monkeypatch.setenv("SPARSEPROP_CACHE", str(tmp_path / "cache"))

    def copy(src, dst, *args):
        dst.write(src.read(100))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(data.idx.shutil, "copyfileobj", copy)
    with pytest.raises(data.DataError, match="No space left on device"):
        data.locate_idx("mnist", tmp_path / "root", download=False)
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_collect_out_and_reproduce_outputs_pointing_at_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SparsepropError, match="--out .*file.* is not valid"):
        collect.main([str(tmp_path), "--out", str(tmp_path / "file")])
    with pytest.raises(SparsepropError, match="--outputs .*file"):
        reproduce.main(["--outputs", str(tmp_path / "file"), "--dry-run"])


# ---- permissions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_records_and_figures_get_the_umask_permissions(tmp_path, umask):
    old = os.umask(umask)
    try:
        records.write_json(tmp_path / "summary.json", {"status": "completed"})
        records.save_torch(tmp_path / records.CHECKPOINT, {"x": torch.zeros(2)})
        import matplotlib.pyplot as plt

        written = plots.save(plt.figure(), tmp_path / "training_curves")
    finally:
        os.umask(old)
    for path in [tmp_path / "summary.json", tmp_path / records.CHECKPOINT, *written]:
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["summary.json", records.CHECKPOINT,
                                                                 "training_curves.png", "training_curves.pdf"])


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts need root")
def test_on_a_real_read_only_mount(tmp_path, capsys):
    src = tmp_path / "src"
    assert run_cli("train", *TINY, "figures=false", f"hydra.run.dir={src / 'done'}").returncode == 0
    with read_only_view(src, tmp_path / "ro") as ro:
        before = snapshot(ro / "done")
        skipped = run_cli("train", *TINY, "figures=false", f"hydra.run.dir={ro / 'done'}")
        assert skipped.returncode == 0 and skipped.stderr == "" and snapshot(ro / "done") == before
        for args, expected in [((f"hydra.run.dir={ro / 'new'}",), "cannot be created"),
                               (("resume=false", f"hydra.run.dir={ro / 'done'}"), f"cannot write to {ro / 'done'}"),
                               (("collect", str(ro / "done")), "cannot write the tables")]:
            result = run_cli(*args) if args[0] == "collect" else run_cli("train", *TINY, *args)
            assert result.returncode == 2 and expected in one_error_line(result.stderr), result.stderr
        assert snapshot(ro / "done") == before and not (ro / "new").exists()


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small file system needs root")
def test_on_a_real_full_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("this machine does not allow mounts")
    try:
        result = run_cli("train", *TINY, "signal.stages=[init]", f"hydra.run.dir={disk / 'run'}")
        assert result.returncode == 2
        assert "No space left on device" in one_error_line(result.stderr)
        assert not [p for p in (disk / "run").iterdir() if p.name.endswith(".tmp")]
        assert records.read_json(disk / "run" / "summary.json")["status"] == "failed"
    finally:
        subprocess.run(["umount", str(disk)], check=True)
