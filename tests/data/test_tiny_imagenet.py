"""Tiny-ImageNet through the real reader: a tiny tiny-imagenet-200 folder built in tmp_path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sparseprop import data
from sparseprop.data import tiny_imagenet as tin
from sparseprop.errors import DataError

WNIDS = ["n03", "n01", "n02"]  # not sorted: labels follow wnids.txt's order
PER_CLASS, TEST = 4, 6


def decoded(path) -> np.ndarray:
    """The pixels PIL decodes from a JPEG, (3, 64, 64) RGB: what the reader must hold for it."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).transpose(2, 0, 1)


@pytest.fixture
def tiny_folder(tmp_path, monkeypatch):
    """(data root, cache folder) of a folder with the official layout: 3 classes x 4 training images, 6 test images."""
    rng = np.random.default_rng(5)
    top = tmp_path / "root" / "tiny-imagenet-200"
    (top / "val" / "images").mkdir(parents=True)
    (top / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    for c, w in enumerate(WNIDS):
        folder = top / "train" / w / "images"
        folder.mkdir(parents=True)
        (top / "train" / w / f"{w}_boxes.txt").write_text("")  # the official folders hold box files too
        for i in range(PER_CLASS):
            # Colour levels differ by channel and class; one image per class is greyscale, as some official ones are.
            img = np.clip(rng.normal([60 + 40 * c, 128, 200 - 30 * c], 25, (64, 64, 3)), 0, 255).astype(np.uint8)
            mode = "L" if i == 1 else "RGB"
            Image.fromarray(img[:, :, 0] if mode == "L" else img, mode).save(folder / f"{w}_{i}.JPEG", quality=95)
    lines = []
    for i in range(TEST):
        img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(img).save(top / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{WNIDS[i % 3]}\t0\t0\t63\t63")
    (top / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.setitem(data.SHAPES, "tiny_imagenet", data.DatasetShape(3 * PER_CLASS, TEST, (3, 64, 64), 200))
    cache = tmp_path / "cache"
    monkeypatch.setenv("SPARSEPROP_CACHE", str(cache))
    return tmp_path / "root", cache


def test_reader_gives_every_image_with_its_wnids_label(tiny_folder):
    root, cache = tiny_folder
    top = root / "tiny-imagenet-200"
    x_tr, y_tr, x_te, y_te = tin.read_tiny_imagenet(top, cache)
    assert x_tr.dtype == torch.uint8 and tuple(x_tr.shape) == (12, 3, 64, 64) and tuple(x_te.shape) == (6, 3, 64, 64)
    # Training images class by class in wnids.txt's order, files sorted by name.
    expected = [(top / "train" / w / "images" / f"{w}_{i}.JPEG", c) for c, w in enumerate(WNIDS) for i in range(PER_CLASS)]
    for k, (path, label) in enumerate(expected):
        assert np.array_equal(x_tr[k].numpy(), decoded(path)) and int(y_tr[k]) == label
    grey = x_tr[1].numpy()
    assert np.array_equal(grey[0], grey[1]) and np.array_equal(grey[1], grey[2])
    for k in range(TEST):  # sorted by file name, labelled by val_annotations.txt
        assert np.array_equal(x_te[k].numpy(), decoded(top / "val" / "images" / f"val_{k}.JPEG"))
        assert int(y_te[k]) == WNIDS.index(WNIDS[k % 3])


def test_the_cache_is_written_once_reused_and_renewed_when_the_folder_changes(tiny_folder, monkeypatch):
    root, cache = tiny_folder
    top = root / "tiny-imagenet-200"
    first = tin.read_tiny_imagenet(top, cache)
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz" and not any(p.name.startswith(".") for p in cache.iterdir())
    # A second read decodes nothing: the cached arrays come back.
    monkeypatch.setattr(tin, "_decode", lambda items: pytest.fail("decoded again despite the cache"))
    again = tin.read_tiny_imagenet(top, cache)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    monkeypatch.undo()
    # Another image in the folder is another data set: decoded again, cached beside the first.
    extra = top / "train" / WNIDS[0] / "images" / f"{WNIDS[0]}_9.JPEG"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(extra)
    assert tin.read_tiny_imagenet(top, cache)[0].shape[0] == 13
    assert len(list(cache.iterdir())) == 2


@pytest.mark.parametrize("standardise", data.STANDARDISE)
def test_splits_standardised_per_channel_with_training_statistics(tiny_folder, standardise):
    root, _ = tiny_folder
    x_tr, y_tr, x_te, y_te = (t.numpy() for t in tin.read_tiny_imagenet(root / "tiny-imagenet-200"))
    splits = data.load("tiny_imagenet", str(root), val_fraction=0.25, standardise=standardise, augment="none")
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(0)).numpy()
    val, tr = perm[:3], perm[3:]
    assert np.array_equal(splits.y_train.numpy(), y_tr[tr]) and np.array_equal(splits.y_val.numpy(), y_tr[val])
    pixels = x_tr.astype(np.float64) / 255.0
    rows = pixels if standardise == "all" else pixels[tr]
    ddof = 0 if standardise == "all" else 1
    mean, std = rows.mean(axis=(0, 2, 3)).reshape(1, 3, 1, 1), rows.std(axis=(0, 2, 3), ddof=ddof).reshape(1, 3, 1, 1)
    for x, source in ((splits.x_train, pixels[tr]), (splits.x_val, pixels[val]), (splits.x_test, x_te / 255.0)):
        np.testing.assert_allclose(x.double().numpy(), (source - mean) / std, rtol=0, atol=1e-5)
    assert np.array_equal(splits.y_test.numpy(), y_te) and splits.num_classes == 200


def test_bgr_reverses_the_channels(tiny_folder):
    root, _ = tiny_folder
    rgb = data.load("tiny_imagenet", str(root), augment="none", standardise="split")
    bgr = data.load("tiny_imagenet", str(root), augment="none", standardise="split", channel_order="bgr")
    # Per-channel standardisation commutes with the permutation: the same values, channels reversed.
    torch.testing.assert_close(bgr.x_test, rgb.x_test.flip(1), rtol=0, atol=1e-6)


def test_augmented_batches_keep_the_shape(tiny_folder):
    root, _ = tiny_folder
    splits = data.load("tiny_imagenet", str(root), val_fraction=0.25)
    x, y = splits.train_batch(torch.arange(9), torch.Generator().manual_seed(0))
    assert x.shape == (9, 3, 64, 64) and torch.equal(y, splits.y_train)
    assert repr(splits.augment) == "Augmentation([flip, crop_pad], mode='some_of')"


def test_missing_folder_and_missing_files_are_one_line(tiny_folder, tmp_path):
    with pytest.raises(DataError) as info:
        data.check_available("tiny_imagenet", str(tmp_path / "nowhere"), download=True)
    assert "\n" not in str(info.value) and "tiny-imagenet-200" in str(info.value)
    root, _ = tiny_folder
    (root / "tiny-imagenet-200" / "val" / "val_annotations.txt").unlink()
    with pytest.raises(DataError, match="val_annotations.txt not found"):
        data.check_available("tiny_imagenet", str(root), download=True)


def test_broken_image_and_wrong_count_are_one_line(tiny_folder, monkeypatch):
    root, _ = tiny_folder
    monkeypatch.setitem(data.SHAPES, "tiny_imagenet", data.DatasetShape(100_000, 10_000, (3, 64, 64), 200))
    with pytest.raises(DataError, match="12 training and 6 test images, not 100,000 and 10,000") as info:
        data.load("tiny_imagenet", str(root))
    assert "\n" not in str(info.value)
    (root / "tiny-imagenet-200" / "val" / "images" / "val_0.JPEG").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="could not read") as info:
        data.load("tiny_imagenet", str(root))
    assert "\n" not in str(info.value)
