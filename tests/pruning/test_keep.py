"""Pruning to a parameter count (prune.keep): exact, checked before any data loads, and recorded."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from sparseprop import config, models, pruning, records
from sparseprop.cli import main as cli
from sparseprop.errors import SparsepropError
from sparseprop.runner import run as run_module
from tests.conftest import tiny_mlp


def _pruner(overrides):
    with initialize_config_dir(config_dir=str(config.CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    return pruning.make_pruner(cfg.prune)


@pytest.mark.parametrize("criterion", ["snip", "random"])
@pytest.mark.parametrize("keep", [1, 37, 279])
def test_a_criterion_keeps_exactly_the_count(criterion, keep):
    net = tiny_mlp(sizes=(12, 10, 8, 5))  # 12*10+10 + 10*8+8 + 8*5+5 = 263 prunable entries; biases too
    pruner = _pruner([f"prune={criterion}", f"prune.keep={keep}", "prune.sparsity=0.5"])
    params = pruning.prunable_parameters(net, pruner.options.include_bias)
    m = sum(p.numel() for p in params.values())
    x, y = torch.randn(40, 12), torch.randint(0, 5, (40,))
    if keep > m:
        with pytest.raises(SparsepropError, match=r"prune\.keep.*\[1, 263\]"):
            pruner.prune(net, params, pruning.ScoringData(x, y), None, torch.Generator().manual_seed(0))
        return
    result = pruner.prune(net, params, pruning.ScoringData(x, y), None, torch.Generator().manual_seed(0))
    assert sum(int(mk.sum()) for mk in result.masks.values()) == keep  # sparsity=0.5 is not read


@pytest.mark.parametrize("overrides,message", [
    (["prune.keep=0"], "prune.keep"),
    (["prune.keep=-3"], "prune.keep"),
    (["prune.keep=true"], "prune.keep"),
    # MLP-7-100 on digits has 64*100+100 + 5*(100*100+100) + 100*10+10 = 58,010 prunable entries.
    (["prune.keep=58011"], "[1, 58,010]"),
    (["prune.keep=57910", "prune.include_bias=false"], "weights only"),
    (["prune=none", "prune.keep=5"], "prune=none keeps every entry"),
])
def test_a_bad_count_is_one_line_before_any_data(overrides, message):
    with pytest.raises(SparsepropError) as info:
        cli.check(["dataset=digits", *overrides])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_the_whole_count_is_accepted():
    cli.check(["dataset=digits", "prune.keep=58010"])


def test_a_run_pruned_to_a_count_records_it_and_its_effective_architecture(tmp_path, no_figures):
    # A wide MLP-3 (64-40-40-10: 4,650 entries) pruned to the count of a dense MLP-3-10 on digits (64-10-10-10: 870).
    reference = models.build_model("mlp", (64,), 10, models.build_activation("relu"), depth=3, width=10)
    keep = sum(p.numel() for p in models.prunable_parameters(reference).values())
    assert keep == 870
    with initialize_config_dir(config_dir=str(config.CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "dataset=digits", "arch.depth=3", "arch.width=40", "activation=relu", f"prune.keep={keep}",
            "prune.batches=2", "train.iterations=20", "train.eval_interval=10", "signal.stages=[]",
            "progress=false", "threads=1", "figures=false"])
    summary = run_module.Run(cfg, tmp_path).execute()
    saved = records.read_json(tmp_path / records.SUMMARY)
    assert summary["status"] == "completed" and saved["keep_target"] == keep
    assert saved["kept_parameters"] == keep and saved["prunable_parameters"] == 4650
    layers = pd.read_csv(tmp_path / records.LAYERS)
    weights = layers[layers.kind == "weight"]
    assert list(weights.units) == [40, 40, 10]
    assert saved["kept_weights"] == int(weights.kept.sum())
    assert saved["effective_params"] == int(weights.effective_kept.sum()) <= saved["kept_weights"]
    assert saved["effective_widths"] == " ".join(str(int(w)) for w in weights.effective_units)
    # The recorded figures are those of the saved masks, recomputed independently here.
    ckpt = torch.load(tmp_path / records.CHECKPOINT, weights_only=True)
    net = models.build_model("mlp", (64,), 10, models.build_activation("relu"), depth=3, width=40)
    again = pruning.effective_architecture(net, ckpt["masks"])
    assert again.effective_params == saved["effective_params"] and again.widths == list(weights.effective_units)
