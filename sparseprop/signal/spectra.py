"""Pooled statistics of singular-value spectra: the columns of signal.csv."""

from __future__ import annotations

import math
import warnings

import torch

QUANTILES = {"q05": 0.05, "q25": 0.25, "q50": 0.50, "q75": 0.75, "q95": 0.95}


def _quantile(sorted_values: torch.Tensor, q: float) -> float:
    """The q-quantile of ascending values with linear interpolation (NumPy's default)."""
    n = sorted_values.numel()
    if n == 0:
        return math.nan
    pos = q * (n - 1)
    lo, frac = int(math.floor(pos)), pos - math.floor(pos)
    low = float(sorted_values[lo])
    if frac == 0.0:
        return low
    # Weighting both ends (instead of low + frac·(high − low)) keeps the result finite-or-inf
    # when the upper end is infinite, as per-example condition numbers can be.
    return (1.0 - frac) * low + frac * float(sorted_values[lo + 1])


def spectrum_stats(sv: torch.Tensor) -> dict[str, float]:
    """Pooled statistics of a per-example spectrum (N, k), or one spectrum (k,), and the median per-example condition.

    Keys: count, nonfinite, mean, std (population, ddof=0), min, max, condition (max/min, inf when
    min is 0), q05, q25, q50, q75, q95, median_example_condition. Non-finite entries are counted,
    left out of every statistic and reported with a warning.
    """
    sv = sv.detach().double().cpu()
    sv = sv.flatten(1) if sv.dim() > 1 else sv.reshape(1, -1)
    finite = torch.isfinite(sv)
    nonfinite = int((~finite).sum())
    if nonfinite:
        warnings.warn(f"{nonfinite} of {sv.numel()} singular values are not finite; statistics use the finite ones",
                      RuntimeWarning, stacklevel=2)
    values = torch.sort(sv[finite]).values
    stats: dict[str, float] = {"count": float(values.numel()), "nonfinite": float(nonfinite)}
    if values.numel() == 0:
        stats.update({k: math.nan for k in ("mean", "std", "min", "max", "condition", *QUANTILES)})
        stats["median_example_condition"] = math.nan
        return stats
    low, high = float(values[0]), float(values[-1])
    stats.update({
        "mean": float(values.mean()),
        "std": float(values.std(correction=0)),
        "min": low,
        "max": high,
        "condition": high / low if low > 0 else math.inf,
    })
    stats.update({k: _quantile(values, q) for k, q in QUANTILES.items()})
    row_max = torch.where(finite, sv, -math.inf).amax(dim=1)
    row_min = torch.where(finite, sv, math.inf).amin(dim=1)
    rows = finite.any(dim=1)
    row_max, row_min = row_max[rows], row_min[rows]
    # An example whose smallest singular value is zero has an infinite condition number.
    conditions = torch.where(row_min > 0, row_max / row_min.clamp_min(torch.finfo(torch.float64).tiny), math.inf)
    stats["median_example_condition"] = _quantile(torch.sort(conditions).values, 0.5)
    return stats
