"""Every criterion through a real run: exact kept counts, pruned weights at zero, effective sparsity recorded."""

import pandas as pd
import pytest

from sparseprop import records
from sparseprop.runner.run import Run
from tests.cli.test_cli import compose_cfg, run_cli

MLP7 = ["dataset=digits", "arch.depth=7", "arch.width=100", "train.iterations=20", "train.eval_interval=20",
        "progress=false", "signal.stages=[pruned]", "signal.examples=200", "signal.layer_examples=20", "figures=false"]


@pytest.mark.parametrize("criterion", [
    ["prune=magnitude"], ["prune=grasp"], ["prune=synflow", "prune.rounds=20"], ["prune=snip", "prune.batches=2"],
    ["prune=iterative_snip", "prune.rounds=10"], ["prune=iterative_snip", "prune.rounds=10", "prune.variant=force"],
    ["prune=random", "prune.budget=erk"], ["prune=snip", "prune.batches=2", "prune.budget=uniform"],
])
def test_criteria_at_99_5_percent_keep_exactly_kappa_and_record_effective_sparsity(tmp_path, criterion):
    summary = Run(compose_cfg([*MLP7, *criterion, "prune.sparsity=0.995"]), tmp_path).execute()
    assert summary["status"] == "completed" and summary["pruned_nonzero"] == 0
    total = summary["prunable_parameters"]
    assert summary["kept_parameters"] == round(0.005 * total)
    layers = pd.read_csv(tmp_path / "layers.csv")
    weights = layers[layers["kind"] == "weight"]
    assert {"effective_sparsity", "effective_kept", "collapsed"} <= set(weights.columns)
    assert summary["effective_sparsity"] == pytest.approx(1 - weights["effective_kept"].sum() / weights["parameters"].sum())
    # The collapse warning fires exactly when a layer keeps no weight on an input-output path.
    collapsed = int(weights["collapsed"].sum())
    assert summary["collapsed_layers"] == collapsed
    assert any(w.startswith("layer collapse:") for w in summary["warnings"]) == (collapsed > 0)
    gap = summary["effective_sparsity"] - summary["weight_sparsity"]
    assert any("exceeds the nominal" in w for w in summary["warnings"]) == (gap > 0.01)
    assert records.read_json(tmp_path / "summary.json")["effective_sparsity"] == summary["effective_sparsity"]


@pytest.mark.parametrize("args,named", [
    (["prune=synflow", "prune.rounds=0"], "prune.rounds=0"),
    (["prune=grasp", "prune.batch_size=95"], "prune.batch_size=95"),
    (["prune=magnitude", "prune.budget=layerwise"], "prune.budget='layerwise'"),
    (["prune=random", "prune.rounds=3"], "prune.rounds"),
    (["prune=iterative_snip", "prune.variant=x"], "prune.variant='x'"),
])
def test_bad_criterion_settings_are_refused_in_one_line(tmp_path, args, named):
    res = run_cli("train", "dataset=digits", *args, f"hydra.run.dir={tmp_path / 'run'}")
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, res.stderr[-2000:]
    assert len(lines) == 1 and named in lines[0], lines
    assert not (tmp_path / "run").exists()
