"""End to end: the installed console script, and whole runs in-process."""

import os

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from sparseprop import config, data, records, train
from sparseprop.cli import main as cli
from sparseprop.runner.checkpoint import load_run
from sparseprop.errors import SparsepropError
from sparseprop.runner.run import Run
from tests.conftest import mnist_root, run_cli

TINY = ["dataset=digits", "arch.depth=3", "arch.width=32", "train.iterations=200", "train.eval_interval=50",
        "train.checkpoint_interval=50", "train.log_interval=25", "progress=false", "signal.examples=300",
        "signal.layer_examples=50"]


def compose_cfg(overrides):
    with initialize_config_dir(config_dir=str(config.CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def check_run_dir(run_dir, sparsity):
    for f in ("metrics.csv", "layers.csv", "summary.json", "checkpoint.pt", "COMPLETE", "training_curves.png",
              "training_curves.pdf", "layer_kept.png", "layer_kept.pdf"):
        assert (run_dir / f).is_file(), f
    layers = pd.read_csv(run_dir / "layers.csv")
    m = int(layers.parameters.sum())
    assert int(layers.kept.sum()) == round((1 - sparsity) * m)
    summary = records.read_json(run_dir / "summary.json")
    assert summary["status"] == "completed" and summary["pruned_nonzero"] == 0
    run = load_run(run_dir)
    for name, p in run.model.named_parameters():
        if name in run.masks:
            assert torch.count_nonzero(p[~run.masks[name]]) == 0, name
            assert int(run.masks[name].sum()) == int(layers.set_index("name").kept[name])
    return summary, run


def test_console_script_end_to_end_on_digits(tmp_path):
    out = tmp_path / "run"
    res = run_cli("train", *TINY, f"hydra.run.dir={out}")
    assert res.returncode == 0, res.stderr[-2000:]
    summary, run = check_run_dir(out, 0.9)
    # The recorded final test error is the loaded network's error on the test split.
    splits = data.load("digits", "unused")
    res = train.evaluate(run.model, splits.x_test, splits.y_test)
    assert summary["final_test_error_pct"] == pytest.approx(res["error_pct"])
    metrics = pd.read_csv(out / "metrics.csv")
    assert set(metrics.columns) == {"step", "split", "name", "value"}
    assert sorted(metrics[metrics.split == "test"].step.unique()) == [50, 100, 150, 200]
    assert (out / "train.log").read_text().count("test error") >= 4


@pytest.mark.parametrize("bad", [["prune.sparsity=1.0"], ["train.lr=0"], ["init=nope"], ["prune.batches=many"]])
def test_console_script_bad_input_one_line_no_run_dir(tmp_path, bad):
    out = tmp_path / "run"
    res = run_cli("train", "dataset=digits", *bad, f"hydra.run.dir={out}")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sparseprop: error:") and bad[0].split("=")[0] in lines[0]
    assert "Traceback" not in res.stderr + res.stdout
    assert not out.exists()


def test_unknown_command():
    res = run_cli("trian")
    assert res.returncode == 2 and "unknown command" in res.stderr


def test_same_seed_same_results_and_different_seed_differs(tmp_path):
    outs = []
    for i, seed in enumerate([3, 3, 4]):
        cfg = compose_cfg([*TINY, f"seed={seed}", "train.iterations=60", "train.eval_interval=30"])
        Run(cfg, tmp_path / str(i)).execute()
        outs.append(pd.read_csv(tmp_path / str(i) / "metrics.csv"))
    pd.testing.assert_frame_equal(outs[0], outs[1])
    assert not outs[0].equals(outs[2])


def test_random_pruning_and_no_pruning_runs(tmp_path):
    for name, sparsity in [("random", 0.8), ("none", 0.0)]:
        cfg = compose_cfg([*TINY, f"prune={name}", f"prune.sparsity={sparsity}", "train.iterations=20", "train.eval_interval=10"])
        Run(cfg, tmp_path / name).execute()
        check_run_dir(tmp_path / name, sparsity)


def test_layer_collapse_is_warned_and_recorded(tmp_path):
    # At 99.9% sparsity a 3-layer digits MLP keeps about 4 of ~4,800 weights: some layer must empty out.
    cfg = compose_cfg([*TINY, "prune=random", "prune.sparsity=0.999", "train.iterations=10", "train.eval_interval=10"])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # e.g. numpy's mean of an empty slice
        summary = Run(cfg, tmp_path).execute()
    assert any("lost all its weights" in w for w in summary["warnings"])
    assert any(w.startswith("layer collapse:") for w in summary["warnings"]) and summary["collapsed_layers"] >= 1
    layers = pd.read_csv(tmp_path / "layers.csv")
    weights = layers[layers["kind"] == "weight"]
    assert weights["collapsed"].any() and (weights["effective_sparsity"] >= weights["sparsity"] - 1e-12).all()
    assert summary["effective_sparsity"] >= summary["weight_sparsity"]
    # The run's figures are still drawn: a collapsed spectrum is labelled, not a numerical accident.
    assert not any("could not draw figures" in w for w in summary["warnings"])
    assert (tmp_path / "jsv_histogram.png").is_file()
    assert records.read_json(tmp_path / "summary.json")["warnings"] == summary["warnings"]


def test_transfer_pruning_scores_on_another_dataset(tmp_path, monkeypatch):
    # Scoring on a shifted copy of digits must give a different mask from scoring on digits itself.
    real = data.DATASETS.get("digits")

    def shifted(**kw):
        s = real(**kw)
        s.x_train = torch.roll(s.x_train, 2, dims=-1)
        return s

    monkeypatch.setitem(data.DATASETS._items, "digits_shifted", shifted)
    base = compose_cfg([*TINY, "train.iterations=10", "train.eval_interval=10"])
    Run(base, tmp_path / "a").execute()
    with initialize_config_dir(config_dir=str(config.CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*TINY, "train.iterations=10", "train.eval_interval=10"])
    cfg.prune.dataset = "digits_shifted"
    Run(cfg, tmp_path / "b").execute()
    a, b = load_run(tmp_path / "a").masks, load_run(tmp_path / "b").masks
    assert any(not torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_console_script_on_real_mnist(tmp_path):
    root = mnist_root()
    if root is None:
        pytest.skip("MNIST not under SPARSEPROP_DATA")
    out = tmp_path / "mnist"
    res = run_cli("train", "train.iterations=500", "train.eval_interval=250", "progress=false", f"hydra.run.dir={out}")
    assert res.returncode == 0, res.stderr[-2000:]
    summary, _ = check_run_dir(out, 0.9)
    assert summary["prunable_parameters"] == 130_010
    # 500 steps of a 90%-sparse MLP-7 reach well under 20% test error on MNIST (chance is 90%).
    assert summary["final_test_error_pct"] < 20.0


def test_figures_false_draws_nothing_and_plot_draws_the_same_files_later(tmp_path):
    drawn = {}
    for flag in ("true", "false"):
        cfg = compose_cfg([*TINY, "train.iterations=20", "train.eval_interval=10", f"figures={flag}"])
        Run(cfg, tmp_path / flag).execute()
        drawn[flag] = sorted(p.name for p in (tmp_path / flag).iterdir() if p.suffix in (".png", ".pdf"))
    assert drawn["false"] == [] and "training_curves.png" in drawn["true"] and "jsv_histogram.pdf" in drawn["true"]
    # figures is how a run is recorded, not what it computes: the records themselves are the same.
    for name in ("metrics.csv", "layers.csv", "signal.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "true" / name), pd.read_csv(tmp_path / "false" / name))
    res = run_cli("plot", str(tmp_path / "false"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "false").iterdir() if p.suffix in (".png", ".pdf")) == drawn["true"]


def test_plot_rejects_a_directory_without_records(tmp_path):
    res = run_cli("plot", str(tmp_path / "missing"))
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "RUN_DIR=" in lines[0] and "Traceback" not in res.stderr


def test_layer_table_saliency_statistics_match_a_brute_force_quantile():
    from sparseprop.runner.run import layer_table

    torch.manual_seed(0)
    params = {"w": torch.nn.Parameter(torch.randn(7, 13)), "b": torch.nn.Parameter(torch.randn(7))}
    sal = {k: torch.rand_like(p) ** 3 for k, p in params.items()}
    masks = {k: torch.rand_like(p) < 0.5 for k, p in params.items()}

    def quantile(values, q):  # linear interpolation between the sorted values at position q*(n-1)
        v = sorted(values)
        pos = q * (len(v) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(v) - 1)
        return v[lo] + (pos - lo) * (v[hi] - v[lo])

    for row in layer_table(params, masks, sal):
        values = [float(x) for x in sal[row["name"]].flatten()]
        assert row["kept"] == int(masks[row["name"]].sum())
        assert row["saliency_sum"] == pytest.approx(sum(values))
        assert row["saliency_mean"] == pytest.approx(sum(values) / len(values))
        assert row["saliency_max"] == pytest.approx(max(values))
        for key, q in (("q05", 0.05), ("q25", 0.25), ("median", 0.5), ("q75", 0.75), ("q95", 0.95)):
            assert row[f"saliency_{key}"] == pytest.approx(quantile(values, q)), key


# Bad input through the real console script: one line, exit 2, no traceback, nothing written.
# Flag errors return before anything is imported; the others are found before any data is loaded.
CLI_BAD = [
    (["--foo"], "--foo"),
    (["--cfg", "job", "-m", "seed=0,1"], "--cfg"),
    (["--config-name", "nope"], "--config-name"),
    (["--package", "train"], "--package"),
    (["--resolve"], "--resolve"),
    (["--info", "bogus"], "--info='bogus'"),
    (["--config-dir", "no_such_folder"], "--config-dir"),  # would have trained with no check at all
    (["seed=0,1"], "-m"),
    (["hydra/launcher=nope"], "hydra/launcher"),
    (["-m", "init=glob(zz*)"], "init=glob(zz*)"),
    (["seed=-10000000000000000"], "seed"),
    (["dataset.val_fraction=0.0001"], "dataset.val_fraction"),
    (["arch.width=10000000"], "arch=mlp"),
    (["prune.sparsity=0.999999"], "prune.sparsity"),
    (["train.warmup=-1"], "train.warmup"),
    (["method=ldi", "init=vs_l"], "method=ldi sets init and isometry itself, so init=vs_l"),
    (["-m", "method=vs_l,ldi", "isometry=ai"], "isometry=ai beside it"),
]


@pytest.mark.parametrize("args,named", CLI_BAD)
def test_console_script_refuses_bad_input_in_one_line(tmp_path, args, named):
    res = run_cli("train", "dataset=digits", *args, f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, res.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("sparseprop: error:") and named in lines[0], lines
    assert "Traceback" not in res.stderr + res.stdout
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("args,named", [
    (["plot"], "sparseprop plot: the following arguments are required"),
    (["plot", "--bogus", "x"], "unrecognized arguments: --bogus"),
    (["figures", "--jobs", "2"], "--jobs cannot be used with --figures-only"),
    (["figures", "--dry-run"], "--dry-run cannot"),
    (["nope"], "unknown command 'nope'"),
])
def test_other_commands_refuse_bad_arguments_in_one_line(capsys, monkeypatch, args, named):
    import signal

    monkeypatch.setattr(signal, "signal", lambda *a: None)  # main() would keep its SIGTERM handler in this process
    with pytest.raises(SystemExit) as info:
        cli.main(args)
    lines = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2
    assert len(lines) == 1 and lines[0].startswith("sparseprop: error:") and named in lines[0], lines


@pytest.mark.parametrize("args,named", [
    (["-c", "job", "--cfg", "hydra"], "option --cfg is given twice"),
    (["--config-path", "no_such_folder"], "--config-path='no_such_folder'"),
    (["--experimental-rerun", "no_such.pickle"], "--experimental-rerun='no_such.pickle'"),
    (["--hydra-help", "bogus"], "--hydra-help takes no overrides"),
    (["--version", "seed=1"], "--version takes no overrides"),
    (["--info", "config", "seed=abc"], "seed='abc'"),
    (["--help", "prune.sparsity=2"], "prune.sparsity=2"),
    (["--cfg", "job", "--package", "nosuch"], "--package='nosuch'"),
])
def test_flag_combinations_are_checked_before_hydra(args, named):
    with pytest.raises(SparsepropError) as info:
        cli.check_args(["dataset=digits", *args])
    assert named in str(info.value) and "\n" not in str(info.value)


def test_a_bare_info_is_written_out_so_the_next_override_stays_an_override():
    assert cli.check_args(["--info", "seed=1"]) == ["--info", "all", "seed=1"]


def test_flags_may_follow_the_overrides(tmp_path):
    res = run_cli("train", "dataset=digits", "seed=0,1", "train.iterations=0", "signal.stages=[]", "figures=false",
                  "progress=false", f"hydra.sweep.dir={tmp_path}", "-m")
    assert res.returncode == 0, res.stderr[-2000:]
    jobs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert len(jobs) == 2 and "seed=0" in jobs[0] and "seed=1" in jobs[1]


def test_a_finite_exploding_loss_is_recorded_diverged(tmp_path):
    cfg = compose_cfg([*TINY, "train.lr=1000", "train.iterations=100", "train.log_interval=10", "figures=false"])
    summary = Run(cfg, tmp_path).execute()
    assert summary["status"] == "diverged" and "exceeds" in summary["reason"]
    assert records.read_json(tmp_path / "summary.json")["status"] == "diverged" and (tmp_path / "COMPLETE").is_file()
    losses = pd.read_csv(tmp_path / "metrics.csv").query("name == 'loss'").value
    assert losses.notna().all() and losses.iloc[-1] > train.divergence_limit(10, None)


def test_sigterm_ends_with_one_line_and_143_and_the_run_resumes(tmp_path):
    import signal
    import subprocess
    import time

    from tests.conftest import sparseprop_exe

    out = tmp_path / "run"
    args = ["train", *TINY, "train.iterations=5000", "train.checkpoint_interval=500", "train.eval_interval=2500",
            "figures=false", "threads=1", "signal.stages=[]", f"hydra.run.dir={out}"]
    proc = subprocess.Popen([sparseprop_exe(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.time() + 120
        while not (out / "summary.json").exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be terminated"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = err.strip().splitlines()
    assert proc.returncode == 143 and len(lines) == 1 and lines[0].startswith("sparseprop: terminated"), err[-2000:]
    assert not (out / "COMPLETE").exists()
    # The records written before the signal are whole: they load, and the rerun resumes from the checkpoint.
    assert records.read_json(out / "summary.json")["status"] == "running"
    step = torch.load(out / "checkpoint.pt", weights_only=False)["train_state"]["step"]
    assert 0 < step < 5000
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"resuming from step {step}" in (out / "train.log").read_text()
    summary = records.read_json(out / "summary.json")
    assert summary["status"] == "completed" and summary["step"] == 5000


def test_help_lists_every_group_the_command_line_takes():
    from sparseprop import plugins

    lines = dict(line.split(": ", 1) for line in plugins.groups_help().splitlines())
    assert list(lines) == [*config.GROUPS, "method", "criterion", "experiment"]
    assert lines["method"].startswith("ldi, ldi_ai, vs_g, vs_h, vs_l ")
    assert lines["criterion"].startswith("force, grasp, iterative_snip, magnitude, random_erk, snip, synflow ")
    assert "e4_conv" in lines["experiment"].split(", ")
