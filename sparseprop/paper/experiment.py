"""The experiment registry: each paper experiment declares, in its own module, everything the pipeline does with it.

An experiment module under ``sparseprop/paper/experiments/`` builds one ``Experiment`` (its id, its
sweep ``conf/experiment/<id>.yaml``, its overrides per profile, the data it needs, its figures, tables,
claim rules and what it leaves untested) and passes it to ``register``. Planning, gathering, drawing,
tables, verdicts and the report iterate over ``registered()``; `catalog.load` imports every module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from sparseprop.paper.profiles import PROFILES


@dataclass(frozen=True)
class Figure:
    """One figure: its file stem, the function that draws it, and the collected tables it takes, in order."""

    stem: str
    draw: Callable[..., Any]
    inputs: tuple[str, ...] = ("runs",)


@dataclass(frozen=True)
class Table:
    """One result table: its name, the columns it groups by, and the metrics it shows with their titles."""

    name: str
    by: tuple[str, ...]
    metrics: dict[str, str]
    # Adds the columns ``by`` and ``metrics`` name that the collected runs do not hold (a criterion's label, ...).
    prepare: Callable[[Any], Any] | None = None


@dataclass(frozen=True)
class Experiment:
    """A paper experiment and everything the reproduction pipeline does with it."""

    id: str
    title: str
    # Its place in the run, the status and the verdicts (the sweeps run in this order).
    order: float
    # Overrides added to the sweep under each profile (every profile of ``PROFILES``; a comma list sweeps).
    profiles: dict[str, list[str]] = field(default_factory=dict)
    # Datasets the sweep trains or scores on; a missing one skips the experiment with the reason.
    data: tuple[str, ...] = ("mnist",)
    # Whether gathering keeps each completed run's masks (masks.npz).
    masks: bool = False
    figures: tuple[Figure, ...] = ()
    tables: tuple[Table, ...] = ()
    # Claim rules: each takes the collected tables (or None when nothing ran) and returns verdicts.
    rules: tuple[Callable[[dict[str, Any] | None], list[Any]], ...] = ()
    # Markdown by claim that explains its verdicts from the measurements (empty text: nothing to say).
    notes: dict[str, Callable[[dict[str, Any] | None], str]] = field(default_factory=dict)
    # Claims of the paper this experiment stands for but the pipeline does not test, with the reason.
    not_tested: dict[str, str] = field(default_factory=dict)
    # Whether it runs (conf/experiment/<id>.yaml); one that does not only states what is not tested.
    sweep: bool = True
    # Where its figures come in the report, if not at ``order``.
    figure_order: float | None = None
    # The profiles it runs under (empty: every profile); under another it is skipped with the reason.
    only: tuple[str, ...] = ()

    def runs_under(self, profile: str) -> bool:
        """Whether this experiment's sweep runs under ``profile``."""
        return self.sweep and (not self.only or profile in self.only)

    def overrides(self, profile: str) -> list[str]:
        """The overrides of this experiment's sweep under ``profile``, after ``experiment=<id>``."""
        return [f"experiment={self.id}", *self.profiles.get(profile, [])]


_registry: dict[str, Experiment] = {}


def register(exp: Experiment) -> Experiment:
    """Add ``exp`` to the registry (once), after checking it declares overrides for every profile it must."""
    if exp.id in _registry:
        raise ValueError(f"experiment {exp.id!r} registered twice")
    if exp.sweep and set(exp.profiles) != set(PROFILES):
        raise ValueError(f"experiment {exp.id!r} must declare overrides for exactly the profiles "
                         f"{', '.join(PROFILES)} (an empty list where it runs as its file says)")
    _registry[exp.id] = exp
    return exp


def registered() -> list[Experiment]:
    """Every registered experiment, in order."""
    return sorted(_registry.values(), key=lambda e: (e.order, e.id))


def runnable() -> list[Experiment]:
    """The registered experiments that have a sweep, in the order they run."""
    return [e for e in registered() if e.sweep]


def get(name: str) -> Experiment:
    """The experiment called ``name`` (a KeyError when none is registered)."""
    return _registry[name]
