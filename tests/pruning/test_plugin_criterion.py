"""A new pruning criterion is one module and one YAML: the toy plugin in tests/pruning/plugins/last_layer runs,
checks its own keys, shows in --help, is collected and swept, with no other file edited."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from sparseprop import plugins, pruning
from tests.conftest import REPO, run_cli, tiny_mlp

PLUGIN = REPO / "tests" / "pruning" / "plugins" / "last_layer"
ENV = {plugins.ENV: str(PLUGIN)}
TINY = ["dataset=digits", "arch.depth=3", "arch.width=16", "train.iterations=20", "train.eval_interval=10",
        "train.checkpoint_interval=10", "train.log_interval=10", "progress=false", "signal.stages=[]", "threads=1",
        "figures=false"]


@pytest.fixture
def last_layer(monkeypatch):
    """The plugin's pruner class, loaded the way the command loads it; unregistered afterwards."""
    import sys

    monkeypatch.setattr(pruning.PRUNERS, "_items", dict(pruning.PRUNERS._items))
    monkeypatch.setattr(pruning.PRUNERS, "_schemas", dict(pruning.PRUNERS._schemas))
    monkeypatch.setenv(plugins.ENV, str(PLUGIN))
    plugins._load.cache_clear()
    assert plugins.load() == [PLUGIN / "conf"]
    yield pruning.PRUNERS.get("last_layer")
    plugins._load.cache_clear()
    sys.modules.pop("last_layer", None)


def test_the_plugin_criterion_keeps_the_largest_magnitudes_of_the_last_layer_only(last_layer):
    net = tiny_mlp()
    params = pruning.prunable_parameters(net)
    options = pruning.PRUNERS.options({"name": "last_layer", "sparsity": 0.7})
    result = last_layer(options).prune(net, params, None, None, torch.Generator())
    w = net.layers[-1].weight.detach()
    keep = round(0.3 * w.numel())
    # Brute force: the entries whose |w| is among the `keep` largest, by a plain sort.
    threshold = sorted(w.abs().flatten().tolist(), reverse=True)[keep - 1]
    assert torch.equal(result.masks["layers.2.weight"], w.abs() >= threshold)
    assert int(result.masks["layers.2.weight"].sum()) == keep
    assert all(bool(m.all()) for k, m in result.masks.items() if k != "layers.2.weight")


def test_the_plugin_options_are_checked_by_the_plugin(last_layer):
    from sparseprop.errors import ConfigError

    with pytest.raises(ConfigError, match=r"prune.keep_at_least=0 is not valid: an integer >= 1"):
        pruning.PRUNERS.options({"name": "last_layer", "keep_at_least": 0})
    with pytest.raises(ConfigError, match=r"prune=last_layer has no setting 'target'.*prune=snip have it"):
        pruning.PRUNERS.options({"name": "last_layer", "target": "labels"})


def test_the_plugin_criterion_runs_is_swept_listed_and_collected(tmp_path):
    # Refused in one line, before anything runs: its own range check and a key it does not have.
    bad = run_cli("train", *TINY, "prune=last_layer", "prune.keep_at_least=0", env=ENV)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0, bad.stderr
    assert "prune.keep_at_least=0 is not valid: an integer >= 1" in bad.stderr
    bad = run_cli("train", *TINY, "prune=last_layer", "prune.target=labels", env=ENV)
    assert bad.returncode == 2 and "prune=last_layer has no setting 'target'" in bad.stderr, bad.stderr
    # Without the plugin the option does not exist, and the error says which do.
    missing = run_cli("train", *TINY, "prune=last_layer")
    assert missing.returncode == 2 and "choose one of grasp, iterative_snip, magnitude, none, random, snip, synflow" in missing.stderr, missing.stderr

    shown = run_cli("train", "--help", env=ENV)
    assert shown.returncode == 0 and "prune: grasp, iterative_snip, last_layer, magnitude, none, random, snip, synflow" in shown.stdout, shown.stdout

    sweep_dir = tmp_path / "sweep"
    # Through joblib's worker processes, which must find the plugin's option classes to unpickle a job's config.
    done = run_cli("train", "-m", *TINY, "prune=last_layer,random", "prune.sparsity=0.5", "hydra/launcher=joblib",
                   f"hydra.sweep.dir={sweep_dir}", env=ENV)
    assert done.returncode == 0, done.stderr
    runs = {p.name.partition(",prune=")[2].partition(",")[0]: p for p in sweep_dir.iterdir() if p.is_dir()}
    assert sorted(runs) == ["last_layer", "random"]
    toy = runs["last_layer"]
    assert json.loads((toy / "summary.json").read_text())["status"] == "completed"
    layers = pd.read_csv(toy / "layers.csv")
    last = layers[layers.kind == "weight"].iloc[-1]
    assert last["kept"] == round(0.5 * last["parameters"])
    assert (layers.drop(index=last.name)["kept_fraction"] == 1.0).all()

    collected = run_cli("collect", str(sweep_dir), "--out", str(tmp_path / "table"))
    assert collected.returncode == 0, collected.stderr
    frame = pd.read_csv(tmp_path / "table" / "results.csv")
    assert sorted(frame["prune"]) == ["last_layer", "random"]
    assert frame.loc[frame["prune"] == "last_layer", "prune.keep_at_least"].tolist() == [1]
