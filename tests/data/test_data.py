"""Input standardisation: the statistics against numpy in float64, straight from the IDX bytes."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from sparseprop import data
from sparseprop.cli import main as cli
from sparseprop.errors import SparsepropError
from tests.conftest import mnist_root


def write_idx(path, array) -> None:
    """An IDX file of unsigned bytes: magic 0 0 8 ndim, big-endian dimensions, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def idx_pixels(raw: bytes) -> np.ndarray:
    """The pixel bytes of an IDX image file as float64 in [0, 1], read without sparseprop."""
    ndim = raw[3]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).astype(np.float64) / 255.0


@pytest.fixture
def tiny_idx(tmp_path):
    """A tiny synthetic IDX set (40 training and 10 test images of 5x5), as its paths."""
    rng = np.random.default_rng(7)
    # Mostly dark pixels with a few bright ones, like MNIST, so mean and std are far from 1/2.
    train = np.where(rng.random((40, 5, 5)) < 0.2, rng.integers(0, 256, (40, 5, 5)), 0)
    test = np.where(rng.random((10, 5, 5)) < 0.2, rng.integers(0, 256, (10, 5, 5)), 0)
    write_idx(tmp_path / "train", train)
    write_idx(tmp_path / "test", test)
    return tmp_path / "train", tmp_path / "test"


def finish(paths, standardise: str) -> data.Splits:
    """The splits sparseprop makes of the tiny set, as for MNIST (bytes / 255, 20% validation)."""
    x_tr, x_te = (data.read_idx(p).float().div_(255.0).unsqueeze(1) for p in paths)
    y_tr, y_te = torch.arange(x_tr.shape[0]), torch.zeros(x_te.shape[0], dtype=torch.long)
    return data.finish_splits("tiny", x_tr, y_tr, x_te, y_te, 10, 0.2, 0, standardise)


@pytest.mark.parametrize("standardise", data.STANDARDISE)
def test_standardisation_uses_the_statistics_numpy_computes_from_the_bytes(tiny_idx, standardise):
    pixels = idx_pixels(tiny_idx[0].read_bytes()).reshape(40, -1)
    test_pixels = idx_pixels(tiny_idx[1].read_bytes()).reshape(10, -1)
    splits = finish(tiny_idx, standardise)
    # The labels here are the image indices, so they say which images went to which split.
    if standardise == "all":  # every training image, population std (the authors' choice)
        mean, std = pixels.mean(), pixels.std(ddof=0)
    else:  # the training split only, with Bessel's correction
        rows = pixels[splits.y_train.numpy()]
        mean, std = rows.mean(), rows.std(ddof=1)
    for x, y, source in ((splits.x_train, splits.y_train, pixels), (splits.x_val, splits.y_val, pixels),
                         (splits.x_test, None, test_pixels)):
        expected = (source[y.numpy()] if y is not None else source) - mean
        expected /= std
        # Standardised values are a few units in size; float32 rounding leaves ~1e-6 of error.
        np.testing.assert_allclose(x.reshape(x.shape[0], -1).double().numpy(), expected, rtol=0, atol=1e-5)


def test_the_two_choices_differ(tiny_idx):
    # On 40 images the population/Bessel factor alone is sqrt(32/31) - 1 = 1.6%: far above rounding,
    # so the test above tells the two choices apart.
    a, b = finish(tiny_idx, "all"), finish(tiny_idx, "split")
    assert (a.x_train - b.x_train).abs().max() > 1e-3


def test_input_statistics_against_numpy():
    x = torch.rand(1001, 3, 7, generator=torch.Generator().manual_seed(0))
    ref = x.double().numpy()
    mean, std = data.input_statistics(x, chunk=100)
    assert mean == pytest.approx(ref.mean(), rel=1e-12)
    assert std == pytest.approx(ref.std(ddof=0), rel=1e-12)
    assert data.input_statistics(x, bessel=True, chunk=100)[1] == pytest.approx(ref.std(ddof=1), rel=1e-12)


def test_bad_standardise_is_one_line():
    with pytest.raises(SparsepropError) as info:
        cli.check(["dataset=digits", "dataset.standardise=mean"])
    assert "dataset.standardise" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.slow
@pytest.mark.skipif(mnist_root() is None, reason="MNIST not available (set SPARSEPROP_DATA)")
def test_mnist_standardisation_is_the_authors():
    raw = mnist_root() / "MNIST" / "raw"
    pixels = idx_pixels(gzip.open(raw / "train-images-idx3-ubyte.gz").read())
    mean, std = data.input_statistics(torch.from_numpy(pixels.reshape(60000, 784)).float())
    assert mean == pytest.approx(pixels.mean(), rel=1e-6)
    assert std == pytest.approx(pixels.std(ddof=0), rel=1e-6)
    # The constants the authors standardise MNIST with.
    assert (round(pixels.mean(), 6), round(pixels.std(ddof=0), 6)) == (0.130660, 0.308108)
    splits = data.load("mnist", str(mnist_root()), download=False)
    both = torch.cat([splits.x_train, splits.x_val]).double()
    assert float(both.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(both.std(correction=0)) == pytest.approx(1.0, abs=1e-5)
