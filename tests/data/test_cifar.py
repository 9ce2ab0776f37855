"""CIFAR-10 through the real reader: a tiny archive with the official layout, built in tmp_path."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile

import numpy as np
import pytest
import torch

from sparseprop import data
from sparseprop.data import cifar
from sparseprop.errors import DataError

PER_BATCH, TEST = 8, 10  # 40 training images in five batches, 10 test images


def batch_pickle(images: np.ndarray, labels: list[int], name: str) -> bytes:
    """A batch as the official archive pickles it: bytes keys, rows of 3072 bytes (R, G, B planes of 32x32)."""
    d = {b"batch_label": name.encode(), b"labels": labels, b"data": images.reshape(len(labels), 3072),
         b"filenames": [f"img{i}.png".encode() for i in range(len(labels))]}
    # The official pickles name numpy's old module path; write it so, to read what the real archive holds.
    return pickle.dumps(d, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def write_archive(path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


@pytest.fixture
def tiny_cifar(tmp_path, monkeypatch):
    """(root, training images, training labels, test images, test labels) of a tiny archive at root."""
    rng = np.random.default_rng(3)
    # Each channel with its own level, so per-channel statistics differ from one pooled mean and std.
    level = np.array([40, 120, 200]).reshape(1, 3, 1, 1)
    x_tr = np.clip(rng.normal(level, 30, (5 * PER_BATCH, 3, 32, 32)), 0, 255).astype(np.uint8)
    x_te = np.clip(rng.normal(level, 30, (TEST, 3, 32, 32)), 0, 255).astype(np.uint8)
    y_tr, y_te = rng.integers(0, 10, 5 * PER_BATCH), rng.integers(0, 10, TEST)
    members = {f"data_batch_{b + 1}": batch_pickle(x_tr[b * PER_BATCH:(b + 1) * PER_BATCH],
                                                   y_tr[b * PER_BATCH:(b + 1) * PER_BATCH].tolist(), f"batch {b + 1}")
               for b in range(5)}
    members["test_batch"] = batch_pickle(x_te, y_te.tolist(), "test")
    members["batches.meta"] = pickle.dumps({b"label_names": [b"c%d" % i for i in range(10)]}, protocol=2)
    archive = tmp_path / cifar.ARCHIVE
    write_archive(archive, members)
    # The tiny archive stands for the real one: its own MD5 and size are the ones expected.
    monkeypatch.setattr(cifar, "ARCHIVE_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    monkeypatch.setitem(data.SHAPES, "cifar10", data.DatasetShape(5 * PER_BATCH, TEST, (3, 32, 32), 10))
    return tmp_path, x_tr, y_tr, x_te, y_te


def test_reader_gives_the_images_and_labels_in_order(tiny_cifar):
    root, x_tr, y_tr, x_te, y_te = tiny_cifar
    got = data.read_cifar10(root / cifar.ARCHIVE)
    for a, b in zip(got, (x_tr, y_tr, x_te, y_te)):
        assert np.array_equal(a.numpy(), b)
    assert got[0].dtype == torch.uint8 and tuple(got[0].shape) == (40, 3, 32, 32)


@pytest.mark.parametrize("standardise", data.STANDARDISE)
def test_splits_are_the_seed_0_hold_out_standardised_per_channel(tiny_cifar, standardise):
    root, x_tr, y_tr, x_te, y_te = tiny_cifar
    splits = data.load("cifar10", str(root), download=False, val_fraction=0.2, standardise=standardise, augment="none")
    # The split sizes rule, and the same seed-0 shuffle as MNIST's hold-out.
    assert (splits.x_train.shape[0], splits.x_val.shape[0], splits.x_test.shape[0]) == data.split_sizes("cifar10", 0.2)
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(0)).numpy()
    val, tr = perm[:8], perm[8:]
    assert np.array_equal(splits.y_train.numpy(), y_tr[tr]) and np.array_equal(splits.y_val.numpy(), y_tr[val])
    assert np.array_equal(splits.y_test.numpy(), y_te)
    pixels = x_tr.astype(np.float64) / 255.0
    if standardise == "all":  # all official training images, population std (the authors')
        mean, std = pixels.mean(axis=(0, 2, 3)), pixels.std(axis=(0, 2, 3), ddof=0)
    else:
        mean, std = pixels[tr].mean(axis=(0, 2, 3)), pixels[tr].std(axis=(0, 2, 3), ddof=1)
    mean, std = mean.reshape(1, 3, 1, 1), std.reshape(1, 3, 1, 1)
    for x, source in ((splits.x_train, pixels[tr]), (splits.x_val, pixels[val]), (splits.x_test, x_te / 255.0)):
        # Standardised values of a few units; float32 rounding leaves ~1e-6.
        np.testing.assert_allclose(x.double().numpy(), (source - mean) / std, rtol=0, atol=1e-5)
    assert splits.x_train.dtype == torch.float32 and splits.in_shape == (3, 32, 32)


def test_train_batch_augments_only_when_configured(tiny_cifar):
    root = tiny_cifar[0]
    idx = torch.arange(5)
    plain = data.load("cifar10", str(root), download=False, augment="none")
    x, y = plain.train_batch(idx)
    assert torch.equal(x, plain.x_train[:5]) and torch.equal(y, plain.y_train[:5])
    aug = data.load("cifar10", str(root), download=False, augment="always")
    g = torch.Generator().manual_seed(0)
    xa, ya = aug.train_batch(torch.arange(32), g)
    assert torch.equal(ya, aug.y_train[:32]) and xa.shape == (32, 3, 32, 32)
    # Flip and translation by up to 4 px on every image: some image is moved, no pixel is invented.
    assert not torch.equal(xa, aug.x_train[:32])
    assert torch.equal(aug.train_batch(torch.arange(32), torch.Generator().manual_seed(0))[0], xa)
    with pytest.raises(ValueError, match="generator"):
        aug.train_batch(idx)


def test_missing_archive_is_one_line_naming_where_to_put_it(tmp_path):
    with pytest.raises(DataError) as info:
        data.check_available("cifar10", str(tmp_path), download=False)
    msg = str(info.value)
    assert "\n" not in msg and cifar.ARCHIVE in msg and str(tmp_path) in msg


def test_failed_download_is_one_line(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading cifar-10-python.tar.gz:\nTried https://..., got:\n<urlopen error>")

    monkeypatch.setattr(tvd, "CIFAR10", offline)
    with pytest.raises(DataError) as info:
        data.check_available("cifar10", str(tmp_path), download=True)
    assert "\n" not in str(info.value) and "download failed" in str(info.value)


def test_corrupt_archive_is_one_line(tiny_cifar, monkeypatch):
    root = tiny_cifar[0]
    archive = root / cifar.ARCHIVE
    archive.write_bytes(archive.read_bytes()[:-100])
    with pytest.raises(DataError, match="MD5 mismatch") as info:
        data.check_available("cifar10", str(root), download=False)
    assert "\n" not in str(info.value)
    # A damaged archive that somehow has the expected sum is still refused in one line when read.
    monkeypatch.setattr(cifar, "ARCHIVE_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    with pytest.raises(DataError, match="could not read") as info:
        data.load("cifar10", str(root), download=False)
    assert "\n" not in str(info.value)


def test_a_pickle_that_would_run_code_is_refused(tmp_path, monkeypatch):
    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    write_archive(tmp_path / cifar.ARCHIVE, {f"data_batch_{i}": pickle.dumps(Payload()) for i in range(1, 6)}
                  | {"test_batch": pickle.dumps(Payload())})
    with pytest.raises(DataError, match="could not read.*not part of a CIFAR batch"):
        monkeypatch.setattr(cifar, "ARCHIVE_MD5", hashlib.md5((tmp_path / cifar.ARCHIVE).read_bytes()).hexdigest())
        data.load("cifar10", str(tmp_path), download=False)


def test_wrong_image_count_is_one_line(tiny_cifar, monkeypatch):
    monkeypatch.setitem(data.SHAPES, "cifar10", data.DatasetShape(50_000, 10_000, (3, 32, 32), 10))
    with pytest.raises(DataError, match="40 training and 10 test images, not 50,000 and 10,000"):
        data.load("cifar10", str(tiny_cifar[0]), download=False)


def test_declared_shape_gives_the_papers_split():
    assert data.split_sizes("cifar10", 0.1) == (45_000, 5_000, 10_000)
    assert data.split_sizes("tiny_imagenet", 0.1) == (90_000, 10_000, 10_000)
