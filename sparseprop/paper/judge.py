"""Judging measured numbers: comparisons beyond the seed spread, and verdicts that combine them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from sparseprop.paper.tables import ERROR, pm, usable

HOLDS, FAILS, UNSURE, SKIPPED = "holds", "does not hold", "inconclusive", "skipped"
# "Close" errors (C5, C6): the error is at most this many percentage points above the reference.
CLOSE_PP = 1.0


@dataclass
class Check:
    """One comparison: what is compared, the numbers, and its outcome (holds, does not hold, inconclusive)."""

    what: str
    numbers: str
    outcome: str
    why: str = ""


@dataclass
class Verdict:
    """A claim (or one part of it): the measurement that tests it, its rule, its checks and the outcome."""

    claim: str
    part: str
    statement: str
    measurement: str
    rule: str
    checks: list[Check] = field(default_factory=list)
    skipped: str = ""

    @property
    def outcome(self) -> str:
        """``holds`` if every check holds, ``does not hold`` if any check fails, else ``inconclusive``."""
        if self.skipped:
            return SKIPPED
        outcomes = [c.outcome for c in self.checks]
        if not outcomes:
            return UNSURE
        if FAILS in outcomes:
            return FAILS
        return HOLDS if all(o == HOLDS for o in outcomes) else UNSURE

    def skip(self, reason: str) -> Verdict:
        """This verdict, skipped for ``reason`` (nothing to judge it on)."""
        self.skipped = reason
        return self

    @property
    def why(self) -> str:
        """The reason behind an outcome that is not ``holds``."""
        if self.skipped:
            return self.skipped
        if not self.checks:
            return "no completed runs to measure"
        return "; ".join(f"{c.what}: {c.why}" for c in self.checks if c.outcome != HOLDS and c.why)


def _numbers(values: Any) -> np.ndarray:
    """The values as floats, NaN (no measurement) dropped; ±inf kept (a dead network's condition number is inf)."""
    arr = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").to_numpy(dtype=float)
    return arr[~np.isnan(arr)]


def _stats(values: Any) -> tuple[float, float, int]:
    """(mean, std, n); with an infinite value the mean is infinite and the spread is taken as 0."""
    v = _numbers(values)
    if len(v) and not np.isfinite(v).all():
        with np.errstate(invalid="ignore"):  # +inf and -inf together make NaN: no verdict can use that
            return float(v.mean()), 0.0, len(v)
    return (float(v.mean()) if len(v) else math.nan, float(v.std(ddof=1)) if len(v) > 1 else math.nan, len(v))


def describe(values: Any, digits: int = 3) -> str:
    """``mean ± std (n=…)`` of the finite values."""
    m, s, n = _stats(values)
    return f"{pm(m, s, digits)} (n={n})"


def less(what: str, a: Any, b: Any, digits: int = 3) -> Check:
    """``a`` below ``b`` beyond both spreads (mean ± std intervals apart): holds; above beyond spreads: fails."""
    (ma, sa, na), (mb, sb, nb) = _stats(a), _stats(b)
    numbers = f"{describe(a, digits)} vs {describe(b, digits)}"
    if na < 2 or nb < 2:
        return Check(what, numbers, UNSURE, "fewer than 2 runs on a side, so no spread to judge by")
    if ma + sa < mb - sb:
        return Check(what, numbers, HOLDS)
    if ma - sa > mb + sb:
        return Check(what, numbers, FAILS, "the opposite holds beyond the spread")
    return Check(what, numbers, UNSURE, "the mean ± std intervals overlap")


def at_most(what: str, values: Any, limit: float, digits: int = 2) -> Check:
    """Mean + std of ``values`` at most ``limit``: holds; mean − std above it: fails; otherwise inconclusive."""
    m, s, n = _stats(values)
    numbers = f"{describe(values, digits)} (limit {limit:g})"
    if n < 2:
        return Check(what, numbers, UNSURE, "fewer than 2 values, so no spread to judge by")
    if m + s <= limit:
        return Check(what, numbers, HOLDS)
    if m - s > limit:
        return Check(what, numbers, FAILS, f"above {limit:g} beyond the spread")
    return Check(what, numbers, UNSURE, f"the mean ± std interval straddles {limit:g}")


def between(what: str, values: Any, lo: float, hi: float, digits: int = 2) -> Check:
    """Mean ± std of ``values`` inside [lo, hi]: holds; entirely outside: fails; otherwise inconclusive."""
    m, s, n = _stats(values)
    numbers = f"{describe(values, digits)} (range [{lo:.2f}, {hi:.2f}])"
    if n < 2:
        return Check(what, numbers, UNSURE, "fewer than 2 values, so no spread to judge by")
    if lo <= m - s and m + s <= hi:
        return Check(what, numbers, HOLDS)
    if m + s < lo or m - s > hi:
        return Check(what, numbers, FAILS, "outside the range beyond the spread")
    return Check(what, numbers, UNSURE, "the mean ± std interval crosses the range's edge")


def distance_from_one(values: Any) -> np.ndarray:
    """|log10 v|: how far a singular value (or a mean of them) is from 1, in decades (inf for 0: no signal at all)."""
    v = _numbers(values)
    with np.errstate(divide="ignore"):
        return np.abs(np.log10(np.abs(v)))


def paired_differences(runs: pd.DataFrame, column: str, value: Any, reference: Any, keys: Sequence[str]) -> pd.Series:
    """Error of runs with ``column == value`` minus the matching reference run's (matched on ``keys``), in points."""
    runs = usable(runs)
    a = runs[runs[column] == value].set_index(list(keys))[ERROR]
    b = runs[runs[column] == reference].set_index(list(keys))[ERROR]
    joined = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner")
    return (joined.a - joined.b).astype(float)
