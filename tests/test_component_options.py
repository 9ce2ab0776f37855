"""Each option of the component groups (arch, activation, init, dataset, isometry): its schema and its code agree."""

from __future__ import annotations

import inspect
import math

import pytest

from sparseprop import data, inits, isometry, models
from sparseprop.errors import ConfigError

REGISTRIES = {"arch": models.ARCHS, "activation": models.ACTIVATIONS, "init": inits.INITS, "dataset": data.DATASETS,
              "isometry": isometry.ISOMETRY}
OPTIONS = [(group, name) for group, registry in REGISTRIES.items() for name in registry.names()]


@pytest.mark.parametrize("group, name", OPTIONS)
def test_every_setting_of_an_option_is_a_named_parameter_of_its_code(group, name):
    registry = REGISTRIES[group]
    opts = registry.options({"name": name})  # the defaults pass the option's own checks
    params = inspect.signature(registry.get(name)).parameters
    named = {p for p, v in params.items() if v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY)}
    # A setting the code only swallowed in **_ would be accepted and silently ignored.
    assert set(opts.settings()) <= named, (group, name, set(opts.settings()) - named)


@pytest.mark.parametrize("group, node, key", [
    ("arch", {"name": "mlp", "depth": 0}, "arch.depth"),
    ("arch", {"name": "mlp", "width": 0}, "arch.width"),
    ("activation", {"name": "leaky_relu", "negative_slope": math.nan}, "activation.negative_slope"),
    ("init", {"name": "vs_custom", "mode": "fan_sum"}, "init.mode"),
    ("init", {"name": "vs_custom", "scale": 0.0}, "init.scale"),
    ("init", {"name": "normal", "scale": math.inf}, "init.scale"),
    ("init", {"name": "orthogonal", "gain": -1.0}, "init.gain"),
    ("dataset", {"name": "digits", "val_fraction": 1.0}, "dataset.val_fraction"),
    ("dataset", {"name": "digits", "standardise": "none"}, "dataset.standardise"),
    ("dataset", {"name": "mnist", "root": " "}, "dataset.root"),
    ("isometry", {"name": "ai", "steps": 0}, "isometry.steps"),
    ("isometry", {"name": "ai", "lr": 0.0}, "isometry.lr"),
    ("isometry", {"name": "ai", "level": "fourier"}, "isometry.level"),
])
def test_a_value_out_of_range_is_refused_by_the_option_that_owns_it(group, node, key):
    with pytest.raises(ConfigError) as info:
        REGISTRIES[group].options(node)
    assert key in str(info.value) and "\n" not in str(info.value)


def test_options_hold_only_their_own_settings():
    assert models.ARCHS.options({"name": "lenet300"}).settings() == {}
    assert set(data.DATASETS.options({"name": "digits"}).settings()) == {"val_fraction", "split_seed", "standardise"}
    assert {"root", "download"} <= set(data.DATASETS.options({"name": "mnist", "root": "x"}).settings())
    with pytest.raises(ConfigError, match="init=vs_l has no setting 'scale'"):
        inits.INITS.options({"name": "vs_l", "scale": 2.0})
