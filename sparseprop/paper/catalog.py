"""Loads the experiment modules: every module of ``sparseprop.paper.experiments`` registers itself when imported."""

from __future__ import annotations

import importlib
import pkgutil

from sparseprop.paper import experiment

PACKAGE = "sparseprop.paper.experiments"


def load() -> list[experiment.Experiment]:
    """Import every experiment module (once) and return the registered experiments, in order."""
    package = importlib.import_module(PACKAGE)
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{PACKAGE}.{info.name}")
    return experiment.registered()
