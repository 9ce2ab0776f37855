"""`sparseprop collect`: one runs table and one per-layer table from runs, sweeps and trees, nothing dropped."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from sparseprop import records
from sparseprop.cli import main as cli
from sparseprop.sweeps import collect
from sparseprop.runner import plots
from sparseprop.sweeps import report
from sparseprop.errors import SparsepropError
from sparseprop.runner.run import Run
from tests.sweeps.helpers import Killed, run_app, tiny

SIGNAL = ("signal.stages=[init,final]", "signal.examples=100", "signal.layer_examples=30")
STATUSES = ["completed", "diverged", "failed", "partial", "missing"]


def sweep_args(sweep_dir: Path) -> list[str]:
    return ["-m", *tiny(*SIGNAL), "seed=0,1,2,3,4", f"hydra.sweep.dir={sweep_dir}"]


@pytest.fixture(scope="module")
def partial_sweep(tmp_path_factory) -> Path:
    """A sweep of seeds 0-4 killed in job 3: seed 0 completed, 1 diverged, 2 failed, 3 partial, 4 never started."""
    sweep_dir = tmp_path_factory.mktemp("collect") / "sweep"
    real_prepare, real_checkpoint = Run.prepare, Run.checkpoint

    def prepare(self, *args, **kwargs):
        if self.cfg.seed == 2:
            raise RuntimeError("boom")
        real_prepare(self, *args, **kwargs)
        if self.cfg.seed == 1:  # a NaN weight makes the loss non-finite without changing the job's config
            self.model.layers[0].weight.data[0, 0] = float("nan")

    def checkpoint(self, state):
        real_checkpoint(self, state)
        if self.cfg.seed == 3 and state.step == 50:
            raise Killed()

    with pytest.MonkeyPatch.context() as m:
        m.setattr(plots, "run_figures", lambda out: None)
        m.setattr(Run, "prepare", prepare)
        m.setattr(Run, "checkpoint", checkpoint)
        with pytest.raises(Killed):
            run_app(m, *sweep_args(sweep_dir))
    return sweep_dir


def test_partial_sweep_lists_every_job_with_its_status(partial_sweep):
    runs, layers, varying = collect.collect([partial_sweep])
    assert list(runs.seed) == [0, 1, 2, 3, 4] and list(runs.status) == STATUSES
    assert varying == ["seed"]
    reason = dict(zip(runs.status, runs.reason))
    assert reason["completed"] == "" and "training loss" in reason["diverged"]
    assert reason["failed"] == "RuntimeError: boom" and reason["partial"] == "not finished: step 50 of 60"
    assert reason["missing"] == "no run directory"
    missing = runs.iloc[4]
    assert "seed=4" in missing.overrides and missing.dataset == "digits" and missing["arch.width"] == 32
    assert Path(missing.run) == partial_sweep / missing.job and not Path(missing.run).exists()
    done = runs.iloc[0]
    summary = records.read_json(Path(done.run) / "summary.json")
    for key in ("final_test_error_pct", "best_last_test_error_pct", "sparsity", "jsv_init_condition", "jsv_final_mean"):
        assert done[key] == summary[key], key
    assert (done.dataset, done.init, done.prune, done["train.iterations"]) == ("digits", "vs_l", "snip", 60)
    # Statistics only signal.csv holds come from its network rows, by stage.
    signal = pd.read_csv(Path(done.run) / "signal.csv")
    net = signal[(signal.scope == "network") & (signal.stage == "final")].iloc[0]
    assert done.jsv_final_q50 == net.q50 and done.jsv_final_q95 == net.q95
    assert pd.isna(runs.iloc[2].get("jsv_init_q50"))  # the failed job measured nothing: an empty cell, not an error


def test_per_layer_table_joins_layers_and_layer_signal(partial_sweep):
    runs, layers, _ = collect.collect([partial_sweep])
    # Jobs that got as far as pruning have layers.csv: seeds 0, 1 and 3, six tensors each.
    assert sorted(layers.seed.unique()) == [0, 1, 3] and len(layers) == 18
    assert not layers.duplicated(["run", "name"]).any()
    row = layers[(layers.seed == 0) & (layers.name == "layers.1.weight")].iloc[0]
    own = pd.read_csv(Path(row.run) / "layers.csv").set_index("name").loc["layers.1.weight"]
    assert row.kept == own.kept and row.sparsity == own.sparsity and row.status == "completed"
    signal = pd.read_csv(Path(row.run) / "signal.csv")
    jac = signal[(signal.scope == "layer") & (signal.stage == "init") & (signal.name == "layers.1.weight")].iloc[0]
    weights = signal[(signal.scope == "weights") & (signal.stage == "final") & (signal.name == "layers.1.weight")].iloc[0]
    assert row.jsv_init_mean == jac["mean"] and row.weights_final_residual == weights.residual
    assert layers[layers.name == "layers.1.bias"].jsv_init_mean.isna().all()  # biases have no Jacobian


def test_cli_writes_both_tables_prints_markdown_and_lists_what_did_not_complete(partial_sweep, capsys):
    collect.main([str(partial_sweep), "--markdown"])
    out, err = capsys.readouterr()
    runs = pd.read_csv(partial_sweep / collect.RUNS_CSV)
    assert list(runs.status) == STATUSES and len(pd.read_csv(partial_sweep / collect.LAYERS_CSV)) == 18
    assert "5 runs: 1 completed, 1 diverged, 1 failed, 1 partial, 1 missing" in err
    for status in STATUSES[1:]:
        assert f"  {status}" in err
    lines = out.strip().splitlines()
    assert lines[0].startswith("| seed | status | sparsity | final_test_error_pct |") and len(lines) == 2 + 5
    assert lines[2].startswith("| 0 | completed | 0.8999 |")
    assert lines[6] == "| 4 | missing |" + "  |" * (lines[0].count("|") - 3)
    collect.main([str(partial_sweep), "--markdown", "--columns", "seed,status,step"])
    diverged_at = int(runs.step[1])
    assert 0 < diverged_at < 60
    assert capsys.readouterr().out.splitlines()[2:] == ["| 0 | completed | 60 |", f"| 1 | diverged | {diverged_at} |",
                                                         "| 2 | failed |  |", "| 3 | partial | 50 |", "| 4 | missing |  |"]
    with pytest.raises(SparsepropError, match="no column nope"):
        collect.main([str(partial_sweep), "--markdown", "--columns", "seed,nope"])


@pytest.mark.parametrize("args,named", [
    (["--columns", "seed"], "add --markdown"),  # the columns of a table that is not printed
    (["--markdown", "--columns", ""], "--columns ''"),
    (["--markdown", "--columns", ",,"], "--columns ',,'"),
    (["--out", ""], "--out ''"),  # would write into the working directory
])
def test_meaningless_collect_options_are_refused(tmp_path, args, named):
    with pytest.raises(SparsepropError) as info:
        collect.main([str(tmp_path), *args])
    assert named in str(info.value) and "\n" not in str(info.value)
    assert not list(tmp_path.iterdir())


def test_trees_single_runs_and_overlapping_paths_give_each_run_once(partial_sweep, tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(partial_sweep, tree / "sweeps" / "a")
    lone = tree / "runs" / "one"
    shutil.copytree(next(p for p in partial_sweep.iterdir() if "seed=0" in p.name.split(",")), lone)
    (lone / "signal.csv").unlink()  # collect works without signal.csv
    first_job = next(p for p in (tree / "sweeps" / "a").iterdir() if "seed=0" in p.name.split(","))
    runs, layers, _ = collect.collect([tree, tree / "sweeps" / "a", first_job])
    assert len(runs) == 6 and runs.run.is_unique
    row = runs[runs.run == str(lone)].iloc[0]
    assert (row.status, row.sweep, row.job) == ("completed", "", "one") and row.jsv_final_mean > 0
    layers_before = (lone / "layers.csv").read_bytes()
    collect.main([str(lone)])
    assert (lone / collect.RUNS_CSV).is_file() and (lone / "layers.csv").read_bytes() == layers_before
    assert len(pd.read_csv(lone / collect.RUNS_CSV)) == 1


def test_bad_paths_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["collect", str(tmp_path / "nowhere")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sparseprop: error:") and "no such directory" in err[0]
    with pytest.raises(SparsepropError, match="no sparseprop runs under"):
        collect.collect([tmp_path])
    with pytest.raises(SparsepropError, match="collect: "):
        collect.main(["--bogus", str(tmp_path)])


def test_rerunning_the_sweep_completes_it_and_collect_sees_it(partial_sweep, tmp_path, monkeypatch):
    copy = tmp_path / "sweep"
    shutil.copytree(partial_sweep, copy)
    monkeypatch.setattr(plots, "run_figures", lambda out: None)
    # The diverged job stays diverged (finished, skipped); the failed, partial and missing ones now complete.
    before, _, _ = collect.collect([copy])
    assert run_app(monkeypatch, *sweep_args(copy)) == report.UNFINISHED_EXIT
    runs, _, _ = collect.collect([copy])
    assert list(runs.status) == ["completed", "diverged", "completed", "completed", "completed"]
    assert list(runs.step) == [60, before.step[1], 60, 60, 60]
    assert runs.final_test_error_pct[0] == before.final_test_error_pct[0]  # the finished job was not redone
