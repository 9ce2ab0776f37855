"""A whole run of a conv + BatchNorm net: the BatchNorm mode recorded, masks exact, the options of the CPU path."""

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from sparseprop import config, records
from sparseprop.errors import SparsepropError
from sparseprop.models.base import set_norm_mode
from sparseprop.runner import run as run_module
from sparseprop.cli import main as cli
from tests.conftest import TinyConvBN

SMALL = ["dataset=digits", "progress=false", "threads=1", "figures=false", "train.iterations=30",
         "train.eval_interval=15", "train.checkpoint_interval=15", "train.log_interval=5", "signal.examples=20",
         "signal.layer_examples=5", "signal.stages=[pruned]", "prune.sparsity=0.5"]


def conv_build(cfg, splits):
    net = TinyConvBN(in_shape=splits.in_shape, num_outputs=splits.num_classes)  # digits: 1x8x8, 10 classes
    set_norm_mode(net, cfg.batchnorm)
    return net


def conv_run(tmp_path, monkeypatch, overrides):
    monkeypatch.setattr(run_module, "build", conv_build)
    with initialize_config_dir(config_dir=str(config.CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*SMALL, *overrides])
    return run_module.Run(cfg, tmp_path).execute()


@pytest.mark.parametrize("overrides", [["batchnorm=running"], ["batchnorm=batch", "train.amp=true", "train.channels_last=true"]])
def test_a_conv_bn_run_records_its_batchnorm_mode_and_keeps_masks_exact(tmp_path, monkeypatch, overrides):
    summary = conv_run(tmp_path, monkeypatch, overrides)
    mode = overrides[0].split("=")[1]
    assert summary["status"] == "completed" and summary["batchnorm"] == mode
    assert records.read_json(tmp_path / "summary.json")["batchnorm"] == mode
    layers = pd.read_csv(tmp_path / "layers.csv")
    assert int(layers.kept.sum()) == round(0.5 * int(layers.parameters.sum()))
    assert summary["pruned_nonzero"] == 0
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    for name, mask in ckpt["masks"].items():
        assert torch.count_nonzero(ckpt["model"][name][~mask]) == 0, name
    # The input-output spectrum was measured (generic path) with the running statistics in either mode.
    sig = pd.read_csv(tmp_path / "signal.csv")
    assert (sig.scope == "network").any()


def test_an_mlp_run_records_no_batchnorm_mode(tmp_path):
    with initialize_config_dir(config_dir=str(config.CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*SMALL, "arch.depth=3", "arch.width=16", "train.iterations=5"])
    summary = run_module.Run(cfg, tmp_path).execute()
    assert summary["status"] == "completed" and "batchnorm" not in summary


@pytest.mark.parametrize("overrides, key", [
    (["batchnorm=moving"], "batchnorm"),
    (["batchnorm=batch", "prune.batch_size=1"], "prune.batch_size"),
    # digits' training split holds 1,294 examples: batches of 3 leave a last batch of 1
    (["batchnorm=batch", "prune.batch_size=3"], "prune.batch_size"),
    (["train.amp=sometimes"], "train.amp"),
    (["deterministic=2"], "deterministic"),
])
def test_bad_batchnorm_and_device_options_are_one_line(overrides, key):
    with pytest.raises(SparsepropError) as info:
        cli.check(["dataset=digits", *overrides])
    assert key in str(info.value) and "\n" not in str(info.value)


def test_batch_statistics_with_batches_that_fit_are_accepted():
    cli.check(["dataset=digits", "batchnorm=batch", "prune.batch_size=100"])
    cli.check(["dataset=digits", "batchnorm=batch", "prune.batch_size=3", "prune.batches=10"])
