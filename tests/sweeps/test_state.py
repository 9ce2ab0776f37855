"""How a run stands against its config: which changes make its records another experiment's."""

from __future__ import annotations

from sparseprop.sweeps import state


def test_config_changes_ignore_runtime_keys_and_new_keys():
    old = {"train": {"lr": 0.1, "iterations": 40}, "threads": 0, "dataset": {"root": "/a", "name": "digits"}}
    new = {"train": {"lr": 0.1, "iterations": 60, "added": 1}, "threads": 1, "dataset": {"root": "/b", "name": "digits"}}
    assert state.config_changes(old, new) == ["train.iterations: 40 -> 60"]
    assert state.config_changes(None, new) == []
