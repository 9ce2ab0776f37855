"""A sweep's jobs and their directory names are Hydra's: compared with Hydra's own basic sweeper and naming."""

from __future__ import annotations

import re

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from sparseprop.config import CONF_DIR
from sparseprop.errors import SparsepropError
from sparseprop.sweeps import jobs

# (sweeper params from the config, the command line's overrides)
SWEEPS = [
    ([], ["seed=0,1,2", "init=vs_l,orthogonal"]),
    ([], ["seed=range(0,10,3)", "train.lr=0.1", "prune.sparsity=range(0.5,0.9,0.2)", "arch.depth=range(3)"]),
    ([], ["init=glob(*)", "activation=glob(*,exclude=tanh)", "prune=glob(s*)"]),
    (["seed=0,1", "init=vs_l,orthogonal"], ["seed=5,6", "train.lr=0.1,0.01", "hydra.sweep.dir=x"]),
    (["seed=range(3)"], []),
    ([], ["+train.extra=1,2", "~figures", "++threads=2", "~seed=3", "dataset=digits", "hydra/launcher=joblib"]),
    ([], ["a='x,y'", 'b="q r",s', "c=[1,2],[3]", "d={x:1}", "e=choice(1,2)", "f=1.50", "g= 7", "h=null",
          "i=${train.lr}", "j=a\\,b", "x=tag(foo,choice(1,2))"]),
    ([], ["seed=2,1", "seed=3", "+prune@foo=snip,random", "k=true,false", "l=1e-3,inf,-2"]),
    ([], ["hydra.job.chdir=false"]),
]


def _hydras(params: list[str], command_line: list[str]) -> list[list[str]]:
    """What Hydra's basic sweeper makes of a sweep: the config's params, then the task overrides of the command line."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra._internal.utils import create_config_search_path

    task = [o.input_line for o in OverridesParser.create().parse_overrides(command_line) if not o.is_hydra_override()]
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONF_DIR)))
    parsed = OverridesParser.create(config_loader=loader).parse_overrides([*params, *task])
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


@pytest.mark.parametrize("params,command_line", SWEEPS)
def test_expand_is_hydras_basic_sweeper(params, command_line):
    expected = _hydras(params, command_line)
    assert expected  # the cases are real sweeps, not vacuous
    assert jobs.expand([*params, *command_line]) == expected


@pytest.mark.parametrize("params,command_line", SWEEPS)
@pytest.mark.parametrize("exclude,item_sep,kv_sep", [
    (list(jobs.RUNTIME_KEYS), ",", "="), (["seed", "prune", "figures"], "__", ":"), ([], "/", "-"), ([], ",", r"\\")])
def test_job_dirname_is_hydras_override_dirname(params, command_line, exclude, item_sep, kv_sep):
    from hydra._internal.config_loader_impl import get_overrides_dirname

    for job in _hydras(params, command_line):
        parsed = OverridesParser.create().parse_overrides(job)
        assert jobs.job_dirname(job, exclude, item_sep, kv_sep) == get_overrides_dirname(parsed, exclude, item_sep, kv_sep)


def test_expand_order_and_names():
    # the product of the values, the last-named key fastest; a later mention of a key keeps its first place
    assert jobs.expand(["a=1,2", "b=x,y,z", "c=3", "a=5,6"]) == [
        ["a=5", "b=x", "c=3"], ["a=5", "b=y", "c=3"], ["a=5", "b=z", "c=3"],
        ["a=6", "b=x", "c=3"], ["a=6", "b=y", "c=3"], ["a=6", "b=z", "c=3"]]
    assert jobs.job_dirname(["seed=1", "threads=2", "+a@p=x"], ["threads", "a"]) == "seed=1"
    assert jobs.job_dirname(["seed=1", "init=vs_l"], [], "__", ":") == "init:vs_l__seed:1"


@pytest.mark.parametrize("overrides,message", [
    (["seed="], None),
    (["seed=0,1", "a=b=c"], "mismatched input"),
    ([" "], "empty argument"),
    (["init=glob(zz*)"], "matches no option of init"),
    (["seed=glob(*)"], "glob() chooses config group options"),
    (["seed=range(0,3,0)"], "is not valid"),
    (["seed=range(3,3)"], "sweeps over no value"),
    (["train.lr=interval(0,1)"], "need an optimising sweeper"),
])
def test_bad_sweeps_are_one_line(overrides, message):
    if message is None:  # an empty value is a value (Hydra's reading), not an error
        assert jobs.expand(overrides) == [["seed="]]
        return
    with pytest.raises(SparsepropError, match=re.escape(message)) as err:
        jobs.expand(overrides)
    assert "\n" not in str(err.value)


def test_group_options_are_the_yaml_files():
    assert jobs.group_options("init") == sorted(p.stem for p in (CONF_DIR / "init").glob("*.yaml"))
    assert "vs_l" in jobs.group_options("init")
    assert jobs.is_group("init") and jobs.is_group("hydra/launcher")
    assert not jobs.is_group("seed") and not jobs.is_group("init.scale")
