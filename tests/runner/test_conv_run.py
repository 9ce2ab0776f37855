"""A whole run of a conv + BatchNorm net: the BatchNorm mode recorded, masks exact, the options of the CPU path."""

import os

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from sparseprop import config, records
from sparseprop.errors import SparsepropError
from sparseprop.models.base import set_norm_mode
from sparseprop.runner import run as run_module
from sparseprop.runner.setup import configure_backends
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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_a_conv_bn_run_on_cuda_with_every_speed_option(tmp_path, monkeypatch):
    summary = conv_run(tmp_path, monkeypatch, ["device=cuda", "train.amp=true", "train.channels_last=true",
                                                "batchnorm=batch"])
    assert summary["status"] == "completed" and summary["device"].startswith("cuda")
    assert summary["pruned_nonzero"] == 0 and summary["batchnorm"] == "batch"


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


def test_deterministic_mode_is_set_and_unset_per_run(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        configure_backends(OmegaConf.create({"deterministic": True}), torch.device("cpu"))
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.benchmark is False
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        # The next run in the same process (a basic sweep) gets the default back.
        configure_backends(OmegaConf.create({"deterministic": False}), torch.device("cpu"))
    assert not torch.are_deterministic_algorithms_enabled()


def test_signal_examples_auto_bounds_the_generic_path_and_is_recorded(tmp_path, monkeypatch):
    from sparseprop.signal.jacobians import GENERIC_IO_EXAMPLES, OPERATOR_LAYER_EXAMPLES

    summary = conv_run(tmp_path, monkeypatch, ["signal.examples=auto", "train.iterations=0", "signal.layer_examples=auto",
                                                "signal.stages=[init,pruned]"])
    # Layerwise spectra of a conv net: estimated by Lanczos on each layer's operator, no warning.
    assert not any("layerwise" in w for w in summary["warnings"]), summary["warnings"]
    assert summary["signal_batchnorm"] == "running"
    # digits' training split holds more than GENERIC_IO_EXAMPLES images; a conv net has no fast path.
    assert summary["signal_io_examples"] == GENERIC_IO_EXAMPLES
    sig = pd.read_csv(tmp_path / "signal.csv")
    assert set(sig[sig.scope == "network"].examples) == {GENERIC_IO_EXAMPLES}
    layer = sig[sig.scope == "layer"]
    assert layer.name.tolist() == ["conv1.weight", "conv2.weight", "fc.weight"] * 2 and set(layer.examples) == {OPERATOR_LAYER_EXAMPLES}
    raw = records.read_npz(tmp_path / "spectra.npz")
    assert summary["signal_layer_examples"] == OPERATOR_LAYER_EXAMPLES == len(raw["examples/layer"])
    # Raw estimates per layer: Ritz values with their quadrature weights and residual bounds.
    assert raw["pruned/layer1"].shape == raw["pruned/layer1_weights"].shape == raw["pruned/layer1_bounds"].shape
    assert len(raw["examples/io"]) == GENERIC_IO_EXAMPLES == len(set(raw["examples/io"].tolist()))
