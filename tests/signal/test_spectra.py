"""Spectrum statistics (the columns of signal.csv) against NumPy."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from sparseprop.signal import spectrum_stats


def numpy_stats(values: np.ndarray) -> dict[str, float]:
    """Reference statistics with NumPy, over the finite entries; rows keep their own finite entries."""
    finite = values[np.isfinite(values)]
    rows = np.where(np.isfinite(values), values, np.nan)
    rows = rows[~np.all(np.isnan(rows), axis=1)]
    with np.errstate(divide="ignore"):
        conditions = np.nanmax(rows, axis=1) / np.nanmin(rows, axis=1)
    out = {"count": finite.size, "nonfinite": values.size - finite.size, "mean": finite.mean(),
           "std": finite.std(ddof=0), "min": finite.min(), "max": finite.max(),
           "condition": finite.max() / finite.min() if finite.min() > 0 else np.inf,
           "median_example_condition": np.median(conditions)}
    for key, q in {"q05": 0.05, "q25": 0.25, "q50": 0.5, "q75": 0.75, "q95": 0.95}.items():
        out[key] = np.quantile(finite, q)
    return out


def test_spectrum_stats_match_numpy() -> None:
    values = np.random.default_rng(0).gamma(2.0, size=(41, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stats = spectrum_stats(torch.from_numpy(values))
    expected = numpy_stats(values)
    assert set(stats) == set(expected)
    for key, value in expected.items():
        assert stats[key] == pytest.approx(value, rel=1e-12), key


def test_spectrum_stats_counts_and_skips_nonfinite_values_with_a_warning() -> None:
    values = np.random.default_rng(1).gamma(2.0, size=(12, 4))
    values[2, 1], values[5, 0], values[7, 3] = np.nan, np.inf, -np.inf
    # A zero makes that example's (and the pooled) condition number infinite.
    values[3, 2] = 0.0
    with pytest.warns(RuntimeWarning, match="3 of 48"):
        stats = spectrum_stats(torch.from_numpy(values))
    assert stats["nonfinite"] == 3 and stats["count"] == 45
    assert stats["condition"] == np.inf
    for key, value in numpy_stats(values).items():
        assert stats[key] == pytest.approx(value, rel=1e-12), key


def test_spectrum_stats_of_a_single_spectrum_treats_it_as_one_example() -> None:
    stats = spectrum_stats(torch.tensor([4.0, 2.0, 1.0]))
    assert stats["median_example_condition"] == 4.0
    assert stats["std"] == pytest.approx(np.std([4.0, 2.0, 1.0]))


def test_spectrum_stats_of_no_examples_is_nan_not_an_error() -> None:
    stats = spectrum_stats(torch.empty(0, 10))
    assert stats["count"] == 0 and np.isnan(stats["mean"]) and np.isnan(stats["median_example_condition"])
