import pytest
import torch
from hydra import compose, initialize_config_dir

from sparseprop import cli, config, data, inits, isometry, models, pruning
from sparseprop.errors import SparsepropError

REGISTRIES = {
    "dataset": data.DATASETS, "arch": models.ARCHS, "activation": models.ACTIVATIONS,
    "init": inits.INITS, "prune": pruning.PRUNERS, "isometry": isometry.ISOMETRY,
}


@pytest.mark.parametrize("group", config.GROUPS)
def test_yaml_stems_equal_registry_names(group):
    assert cli.group_options(group) == REGISTRIES[group].names()


def all_options():
    return [(g, name) for g in config.GROUPS for name in REGISTRIES[g].names()]


@pytest.mark.parametrize("group,name", all_options())
def test_every_option_composes_and_validates(group, name):
    with initialize_config_dir(config_dir=str(config.CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"{group}={name}"])
    assert cfg[group].name == name
    config.validate(cfg)


def test_defaults_are_the_spp_protocol():
    with initialize_config_dir(config_dir=str(config.CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train")
    assert (cfg.dataset.name, cfg.arch.name, cfg.arch.depth, cfg.arch.width) == ("mnist", "mlp", 7, 100)
    assert (cfg.activation.name, cfg.init.name, cfg.prune.name, cfg.prune.sparsity) == ("tanh", "vs_l", "snip", 0.9)
    assert (cfg.prune.batches, cfg.prune.batch_size, cfg.prune.include_bias) == ("all", 100, True)
    t = cfg.train
    assert (t.optimizer, t.lr, t.schedule, t.l2, t.batch_size, t.iterations) == ("sgd", 0.1, "constant", 0.00025, 100, 10000)


BAD = [
    (["prune.sparsity=1.0"], "prune.sparsity"),
    (["prune.sparsity=-0.1"], "prune.sparsity"),
    (["prune.sparsity=abc"], "prune.sparsity"),
    (["train.lr=0"], "train.lr"),
    (["train.lr=-1"], "train.lr"),
    (["train.batch_size=0"], "train.batch_size"),
    (["train.iterations=-1"], "train.iterations"),
    (["train.iterations=1.5"], "train.iterations"),
    (["arch.depth=0"], "arch.depth"),
    (["arch.width=-3"], "arch.width"),
    (["prune.batches=abc"], "prune.batches"),
    (["prune.batches=0"], "prune.batches"),
    (["prune.target=teacher"], "prune.target"),
    (["init=foo"], "init"),
    (["activation=gelu"], "activation"),
    (["train.optimizer=adam"], "train.optimizer"),
    (["train.schedule=linear"], "train.schedule"),
    (["train.schedule=piecewise"], "train.boundaries"),
    (["init=vs_custom", "init.mode=fan_sum"], "init.mode"),
    (["device=tpu"], "device"),
    (["prune.dataset=cifar"], "prune.dataset"),
    (["no_such_key=1"], "no_such_key"),
    (["+train.foo=1"], "train.foo"),
    (["train.no_such_key=1"], "train.no_such_key"),
    (["init=vs_l,foo"], "init"),
    (["prune.sparsity=0.5,1.5"], "prune.sparsity"),
]


@pytest.mark.parametrize("overrides,key", BAD)
def test_bad_input_names_key_and_value(overrides, key):
    with pytest.raises(SparsepropError) as info:
        cli.check(["dataset=digits", *overrides])
    msg = str(info.value)
    assert key in msg and "\n" not in msg


def test_cuda_requested_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    with pytest.raises(SparsepropError, match="device='cuda'"):
        cli.check(["dataset=digits", "device=cuda"])


def test_good_sweep_passes_check():
    cli.check(["dataset=digits", "init=vs_l,orthogonal", "prune.sparsity=0.5,0.9", "hydra/launcher=basic"])


def test_missing_dataset(tmp_path):
    with pytest.raises(SparsepropError, match="dataset=mnist.*not found.*digits"):
        cli.check([f"dataset.root={tmp_path}", "dataset.download=false"])


def test_corrupt_dataset(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / f"{f}.gz").write_bytes(b"not a gzip file")
    with pytest.raises(SparsepropError, match="corrupt"):
        cli.check([f"dataset.root={tmp_path}"])


def test_expand_sweeps():
    combos = cli.expand(["a=1,2", "b=x,y,z", "c=3"])
    assert len(combos) == 6 and ["a=1", "b=x", "c=3"] in combos


def _write_idx(path, array):
    import numpy as np

    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def test_read_idx_matches_torchvisions_reader(tmp_path):
    # An independent reader of the same format: torchvision's own parser.
    import numpy as np
    from torchvision.datasets.mnist import read_image_file, read_label_file

    from sparseprop import data

    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, size=(7, 28, 28)), rng.integers(0, 10, size=7)
    _write_idx(tmp_path / "images", images)
    _write_idx(tmp_path / "labels", labels)
    got_x, got_y = data.read_idx(tmp_path / "images"), data.read_idx(tmp_path / "labels")
    assert torch.equal(got_x, read_image_file(str(tmp_path / "images")))
    assert torch.equal(got_y.long(), read_label_file(str(tmp_path / "labels")))
    assert torch.equal(got_x, torch.from_numpy(images.astype(np.uint8)))


@pytest.mark.parametrize("damage", ["truncate", "header"])
def test_read_idx_rejects_damaged_files(tmp_path, damage):
    import numpy as np

    from sparseprop import data

    path = tmp_path / "images"
    _write_idx(path, np.zeros((3, 4, 4)))
    raw = path.read_bytes()
    path.write_bytes(raw[:-5] if damage == "truncate" else b"\x00\x00\x0d" + raw[3:])
    with pytest.raises(ValueError, match="IDX|needs"):
        data.read_idx(path)


def test_unreadable_extracted_files_are_one_clear_error(tmp_path):
    import numpy as np

    from sparseprop import data

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        _write_idx(raw / f, np.zeros((2, 28, 28)))
    with pytest.raises(SparsepropError, match="dataset=mnist: unexpected shapes"):
        data.load("mnist", str(tmp_path), download=False)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"junk")
    with pytest.raises(SparsepropError, match="dataset=mnist: could not read"):
        data.load("mnist", str(tmp_path), download=False)
