import pytest
import torch
from hydra import compose, initialize_config_dir

from sparseprop import config, data, inits, isometry, models, plugins, pruning
from sparseprop.cli import main as cli
from sparseprop.runner import checks
from sparseprop.sweeps import jobs
from sparseprop.errors import SparsepropError

REGISTRIES = {
    "dataset": data.DATASETS, "arch": models.ARCHS, "activation": models.ACTIVATIONS,
    "init": inits.INITS, "prune": pruning.PRUNERS, "isometry": isometry.ISOMETRY,
}


@pytest.mark.parametrize("group", config.GROUPS)
def test_yaml_stems_equal_registry_names(group):
    assert plugins.group_options(group) == REGISTRIES[group].names()


def all_options():
    return [(g, name) for g in config.GROUPS for name in REGISTRIES[g].names()]


@pytest.mark.parametrize("group,name", all_options())
def test_every_option_composes_and_validates(group, name):
    with initialize_config_dir(config_dir=str(config.CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"{group}={name}"])
    assert cfg[group].name == name
    checks.validate(cfg)


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
    (["isometry=ai", "isometry.level=fourier"], "isometry.level"),
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
    combos = jobs.expand(["a=1,2", "b=x,y,z", "c=3"])
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


# ---- input checks that need the dataset's declared size, the network's shape or the machine ----------

MORE_BAD = [
    (["seed=-9223344366822"], "seed"),
    (["seed=18446688733644"], "seed"),
    (["dataset.val_fraction=0.0001"], "dataset.val_fraction"),  # 0 of digits' 1,438 held out
    (["dataset.val_fraction=0.9999"], "dataset.val_fraction"),  # nothing left to train on
    (["prune.sparsity=0.9999999"], "prune.sparsity"),
    (["init.gain=nan"], "init.gain"),
    (["init.gain=0"], "init.gain"),
    (["activation=leaky_relu", "activation.negative_slope=nan"], "activation.negative_slope"),
    (["activation.negative_slope=inf"], "activation.negative_slope"),
    (["train.lr=inf"], "train.lr"),
    (["train.l2=nan"], "train.l2"),
    (["train.schedule=piecewise", "train.boundaries=[10]", "train.values=[0.1,inf]"], "train.values"),
    (["train.iterations=10000001"], "train.iterations"),
    (["isometry.steps=10000001"], "isometry.steps"),
    (["arch.depth=10001"], "arch.depth"),
    (["train.batch_size=1295"], "train.batch_size"),  # digits trains on 1,294 examples
    (["prune.batch_size=1295"], "prune.batch_size"),
    (["prune.batches=14"], "prune.batches"),  # 13 batches of 100 cover 1,294 examples
    (["signal.examples=1295"], "signal.examples"),
    (["signal.layer_examples=1295"], "signal.layer_examples"),
    (["signal.layer_examples=some"], "signal.layer_examples"),
    (["signal.stages=[init,init]"], "signal.stages"),
    (["prune.dataset=mnist"], "prune.dataset"),  # 28x28 inputs against digits' 8x8
    (["figures=2"], "figures"),
    (["threads=100000"], "threads"),
    (["dataset.root="], "dataset.root"),
    (["seed="], "seed"),
    (["seed=[1,2]"], "seed"),
    (["train.lr=[0.1]"], "train.lr"),
    (["hydra/launcher=nope"], "hydra/launcher"),
    (["hydra.run.dir="], "hydra.run.dir"),
    (["init=glob(zz*)"], "init"),
    (["seed=interval(0,1)"], "seed"),
    (["seed=range(0,0)"], "seed"),
    (["seed=glob(*)"], "seed"),
    (["~nope"], "nope"),
    (["+seed=1"], "seed"),
    (["nope"], "nope"),
    (["train.optimizer=momentum", "train.nesterov=true", "train.momentum=0"], "train.momentum"),
    (["train.nesterov=true"], "train.nesterov"),
    (["hydra.job.chdir=true,false"], "hydra.job.chdir"),
    ([" "], "empty argument"),
    # Settings the chosen component never reads: a typo'd intent, not a no-op to accept silently.
    (["init=vs_l", "init.scale=3"], "init.scale=3 is not valid: init=vs_l has no setting 'scale'"),
    (["activation=tanh", "activation.negative_slope=0.2"], "activation.negative_slope"),
    (["arch=lenet300", "arch.depth=3"], "arch.depth=3 is not valid: arch=lenet300"),
    (["prune=none", "prune.sparsity=0.5"], "prune.sparsity=0.5 is not valid: prune=none"),
    (["prune=random", "prune.target=uniform"], "prune.target"),
    (["prune=random", "prune.dataset=digits"], "prune.dataset"),
    (["train.momentum=0.5"], "train.momentum=0.5 is not valid: train.optimizer=sgd"),
    (["train.boundaries=[3]", "train.values=[0.1,0.01]"], "train.boundaries=[3] is not valid: train.schedule=constant"),
    (["train.schedule=cosine", "train.values=[0.1,0.01]"], "train.values"),
    (["train.schedule=piecewise", "train.boundaries=[10000]", "train.values=[0.1,0.01]"], "train.iterations=10000"),
    (["~seed"], "~seed is not valid"),
    (["~train"], "~train is not valid"),
    (["=1"], "'=1' has no key"),
    (["seed=range(0,3,0)"], "seed=range(0,3,0) is not valid"),
]


@pytest.mark.parametrize("overrides,key", MORE_BAD)
def test_meaningless_input_names_key_and_value(overrides, key):
    with pytest.raises(SparsepropError) as info:
        cli.check(["dataset=digits", *overrides])
    msg = str(info.value)
    assert key in msg and "\n" not in msg


@pytest.mark.parametrize("overrides,jobs", [
    (["train.optimizer=sgd,momentum", "train.momentum=0.5"], 2),
    (["train.schedule=constant,piecewise", "train.boundaries=[5]", "train.values=[0.1,0.01]"], 2),
    (["experiment=e1_masks"], 108),
])
def test_a_training_setting_some_jobs_of_a_sweep_read_is_accepted(overrides, jobs):
    assert cli.check(["dataset=digits", *overrides], multirun=True) == jobs


@pytest.mark.parametrize("overrides,partial", [
    # A setting of the options of some jobs only is for those jobs (Hydra adds it to the others with ++,
    # whose job drops it before recording anything).
    (["init=vs_l,normal", "init.scale=2"], {"init.scale"}),
    (["isometry=none,ai", "isometry.steps=20"], {"isometry.steps"}),
    (["prune=random,snip", "prune.target=uniform"], {"prune.target"}),
    (["prune=snip", "prune.target=uniform"], set()),
])
def test_a_group_setting_that_only_some_jobs_have_applies_to_those(overrides, partial):
    found: set[str] = set()
    assert cli.check(["dataset=digits", *overrides], multirun=True, partial=found) == 2 - (not partial)
    assert found == partial
    ordered = cli.check_args(["-m", "dataset=digits", *overrides])
    assert [o for o in ordered if o.startswith("++")] == [f"++{o}" for o in overrides if o.partition("=")[0] in partial]


@pytest.mark.parametrize("overrides,message", [
    (["init=vs_l,vs_g", "init.scale=2"], "init.scale=2 is not valid: init=vs_l has no setting 'scale' (its settings: "
                                         "none); init=normal, init=vs_custom have it"),
    (["prune=none,snip", "prune.sparsity=0.5"], "prune.sparsity=0.5 is not valid: prune=none removes nothing"),
    (["prune=random,none", "prune.dataset=digits"], "prune=random has no setting 'dataset' (its settings: sparsity, "
                                                    "include_bias, keep, budget); prune=grasp, prune=iterative_snip, prune=snip have it"),
])
def test_a_group_setting_that_no_job_has_is_refused(overrides, message):
    with pytest.raises(SparsepropError) as info:
        cli.check(["dataset=digits", *overrides], multirun=True)
    assert message in str(info.value)


def test_a_job_drops_the_settings_its_options_lack():
    cfg = _compose(["isometry=none", "++isometry.steps=20", "init=vs_l", "++init.scale=2.0"])
    assert checks.drop_foreign_settings(cfg) == ["init.scale", "isometry.steps"]
    assert list(cfg.isometry) == ["name"] and list(cfg.init) == ["name"]
    assert checks.drop_foreign_settings(_compose(["isometry=ai", "isometry.steps=20"])) == []


def test_each_option_has_exactly_its_schemas_settings():
    for group, name in all_options():
        cfg = _compose([f"{group}={name}"])
        registry = REGISTRIES[group]
        assert list(cfg[group]) == ["name", *registry.settings_of(name)], (group, name)
        assert type(registry.options(cfg[group])) is registry.schema(name)
    # What tables used to mislabel: LeNet-300-100 has no depth or width to record.
    assert list(_compose(["arch=lenet300"]).arch) == ["name"]
    # A key the option lacks is named with the options that have it, even when added with +.
    with pytest.raises(SparsepropError, match=r"prune.foo=1 is not valid: prune=random has no setting 'foo'"):
        cli.check(["dataset=digits", "prune=random", "+prune.foo=1"])


def test_sparsity_bound_is_where_the_kept_count_reaches_zero():
    # m counted on a real (CPU) network, independently of the meta-device layout the check uses.
    cfg = _compose(["dataset=digits"])
    splits = data.load("digits", "unused")
    from sparseprop.runner.run import build

    m = sum(p.numel() for p in pruning.prunable_parameters(build(cfg, splits)).values())
    assert m == 64 * 100 + 100 + 5 * (100 * 100 + 100) + 100 * 10 + 10
    keeps_none = 1 - 0.5 / m + 1e-6  # (1 - s)·m = 0.5 - 1e-6·m < 0.5
    assert pruning.kept_count(m, keeps_none) == 0 and pruning.kept_count(m, 1 - 1 / m) == 1
    cli.check(["dataset=digits", f"prune.sparsity={1 - 1 / m!r}"])
    with pytest.raises(SparsepropError, match=f"m = {m:,}"):
        cli.check(["dataset=digits", f"prune.sparsity={keeps_none!r}"])
    # prune=none keeps everything, so a sparsity given with it is refused by prune=none itself, not by this bound.
    with pytest.raises(SparsepropError, match="prune=none removes nothing"):
        cli.check(["dataset=digits", "prune=none", f"prune.sparsity={keeps_none!r}"])


def _compose(overrides):
    with initialize_config_dir(config_dir=str(config.CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def test_seed_range_is_what_torch_generators_accept():
    from sparseprop.runner import run

    lo, hi = run.seed_range()
    for seed in (lo, hi):  # every stream of the extreme seeds can be made
        for k in range(run.STREAMS):
            torch.Generator().manual_seed(run.SEED_MULTIPLIER * seed + k)
    for seed, k in ((lo - 1, 0), (hi + 1, run.STREAMS - 1)):  # one further out, some stream cannot
        with pytest.raises((RuntimeError, ValueError, OverflowError)):
            torch.Generator().manual_seed(run.SEED_MULTIPLIER * seed + k)
    cli.check(["dataset=digits", f"seed={lo}", "train.shuffle_seed=-1"])
    cli.check(["dataset=digits", f"seed={hi}"])
    for bad in (lo - 1, hi + 1):
        with pytest.raises(SparsepropError, match="seed="):
            cli.check(["dataset=digits", f"seed={bad}"])


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.0007, 0.5])
def test_declared_split_sizes_equal_the_loaded_splits(fraction):
    s = data.load("digits", "unused", val_fraction=fraction)
    assert data.split_sizes("digits", fraction) == (len(s.y_train), len(s.y_val), len(s.y_test))
    shape = data.SHAPES["digits"]
    assert (s.in_shape, s.num_classes) == (shape.in_shape, shape.num_classes)


def test_declared_mnist_sizes_equal_the_loaded_splits():
    from tests.conftest import mnist_root

    root = mnist_root()
    if root is None:
        pytest.skip("MNIST not under SPARSEPROP_DATA")
    s = data.load("mnist", str(root), download=False)
    assert data.split_sizes("mnist", 0.1) == (len(s.y_train), len(s.y_val), len(s.y_test)) == (54_000, 6_000, 10_000)
    assert (s.in_shape, s.num_classes) == (data.SHAPES["mnist"].in_shape, data.SHAPES["mnist"].num_classes)


def test_memory_estimate_counts_the_network_in_closed_form():
    from sparseprop.runner import run

    cfg = _compose(["arch.depth=4", "arch.width=50"])
    shape = data.SHAPES["mnist"]
    model = run.meta_model(cfg, shape)
    params = 784 * 50 + 50 + 2 * (50 * 50 + 50) + 50 * 10 + 10
    assert sum(p.numel() for p in model.parameters()) == params
    # every Linear output and every activation output of one example: 3 hidden layers of 50 (twice) + 10 logits
    assert run.activations_per_example(model, shape.in_shape) == 2 * 3 * 50 + 10
    assert run.traced_activations(model, shape.in_shape) == 2 * 3 * 50 + 10  # the general count agrees
    est = run.memory_estimate(cfg, model, shape, data.split_sizes("mnist", 0.1))
    assert est["model"] == 4 * 6 * params and est["data"] == 4 * 2 * 70_000 * 784


def test_paper_runs_fit_and_a_huge_network_is_refused(monkeypatch):
    from sparseprop.runner import memory, setup

    cfg = _compose(["dataset=digits"])
    checks.validate(cfg)  # the default network checks against this machine's memory
    free = memory.available_memory(setup.resolve_device("cpu"))
    assert free is None or free > 0
    monkeypatch.setattr(memory, "available_memory", lambda device: 2 * 2**30)
    # The paper's MNIST runs (checked without loading MNIST) are estimated at about 1 GiB.
    for overrides in ([], ["experiment=sparsity_sweep"], ["experiment=e2_init"], ["arch=lenet300"]):
        checks.validate(_compose(["device=cpu", *overrides]))
    with pytest.raises(SparsepropError, match=r"arch=mlp \(depth=7, width=100000\).*GiB.*2 GiB is free") as info:
        checks.validate(_compose(["device=cpu", "arch.width=100000"]))
    assert "\n" not in str(info.value)
    checks.validate(_compose(["device=cpu", "arch.width=100000"]), memory_here=False)  # e.g. jobs sent to a cluster


def test_a_large_sweep_composes_once_per_choice_of_groups(monkeypatch):
    import hydra

    calls = []
    real = hydra.compose

    def counting(*args, **kwargs):
        calls.append(kwargs.get("overrides"))
        return real(*args, **kwargs)

    monkeypatch.setattr(hydra, "compose", counting)
    sweep = ["dataset=digits", "init=vs_l,orthogonal", "activation=tanh,linear,relu", "seed=range(0,10)",
             "prune.sparsity=0.5,0.6,0.7,0.8,0.9", "train.lr=0.1,0.05"]
    assert cli.check(sweep) == 600
    # one composition of the sweep's own config, then one per (init, activation) pair
    assert len(calls) <= 1 + 2 * 3
    calls.clear()
    # a bad value in the very last job is still found
    with pytest.raises(SparsepropError, match="prune.sparsity=1.0"):
        cli.check([*sweep[:-2], "prune.sparsity=0.5,0.6,0.7,0.8,1.0", "train.lr=0.1,0.05"])
    assert len(jobs.expand(sweep[1:])) == 600


def test_an_experiments_own_sweep_is_checked():
    assert cli.check(["dataset=digits", "experiment=e3_isometry"], multirun=True) == 24
    # The experiment sweeps init itself; a bad value set on the command line reaches every job.
    with pytest.raises(SparsepropError, match="prune.sparsity"):
        cli.check(["dataset=digits", "experiment=e3_isometry", "prune.sparsity=2"], multirun=True)


@pytest.mark.parametrize("overrides", [
    ["dataset=digits", "seed=3", "train.lr=0.05", "+train.extra=1"],
    ["arch=lenet300", "++threads=2", "prune.batches=3", "++signal.extra=[1,2]"],
    ["experiment=e2_init", "arch.depth=3", "signal.stages=[init]", "init=orthogonal", "init.gain=2"],
    ["arch={depth:3}", "train.boundaries=[5,10]", "train.values=[0.1,0.01,0.001]", "train.lr=${train.momentum}"],
])
def test_applied_value_overrides_equal_hydras_composition(overrides):
    from omegaconf import OmegaConf

    groups = [o for o in overrides if jobs.is_group(o.lstrip("+~").partition("=")[0])]
    values = [o for o in overrides if o not in groups]
    cfg = _compose(groups)
    for o in jobs.parse(values):
        cli.apply_override(cfg, o)
    assert OmegaConf.to_container(cfg) == OmegaConf.to_container(_compose(overrides))


def test_memory_is_checked_up_front_only_for_jobs_run_here(monkeypatch):
    from sparseprop.runner import memory

    monkeypatch.setattr(memory, "available_memory", lambda device: 2**30)
    big = ["dataset=digits", "arch.width=20000"]
    with pytest.raises(SparsepropError, match="GiB"):
        cli.check(big)
    cli.check([*big, "hydra/launcher=slurm"])  # checked by each job where it runs
    with pytest.raises(SparsepropError, match="GiB"):  # ... which checks its memory when it starts
        checks.check_memory_here(_compose(big))
    monkeypatch.setattr(memory, "available_memory", lambda device: 2**40)
    cli.check(big)
