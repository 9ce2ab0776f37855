"""Batch augmentation: each augmenter's defining property, checked image by image against plain loops."""

from __future__ import annotations

import pytest
import torch

from sparseprop.data import augment


def images(n: int = 64, c: int = 3, h: int = 8, w: int = 10, seed: int = 0) -> torch.Tensor:
    # No zeros in the images: a zero in the output then can only be fill.
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed)) + 0.5


def gen(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def every(n: int) -> torch.Tensor:
    return torch.ones(n, dtype=torch.bool)


def test_flip_mirrors_exactly_about_half_of_the_images():
    x = images(400)
    f = augment.Flip()
    drawn = f.draw(400, gen(), every(400))
    out = f.apply(x, drawn)
    for i in range(400):
        expected = x[i].flip(-1) if drawn[0][i] else x[i]
        assert torch.equal(out[i], expected)
    # A fair coin: 400 draws lie within 5 standard deviations (5 * 10 = 50) of 200.
    assert 150 <= int(drawn[0].sum()) <= 250


def test_translate_moves_content_by_the_drawn_offset_and_fills_zeros():
    x = images()
    t = augment.Translate(4)
    (d,) = t.draw(x.shape[0], gen(), every(x.shape[0]))
    out = t.apply(x, (d,))
    _, c, h, w = x.shape
    for i in range(x.shape[0]):
        dy, dx = int(d[0, i]), int(d[1, i])
        assert -4 <= dy <= 4 and -4 <= dx <= 4
        expected = torch.zeros(c, h, w)
        for r in range(h):
            for s in range(w):
                if 0 <= r - dy < h and 0 <= s - dx < w:
                    expected[:, r, s] = x[i, :, r - dy, s - dx]
        assert torch.equal(out[i], expected)
    # Every offset in [-4, 4] occurs on both axes among 64 images (each has probability 1/9).
    assert set(d[0].tolist()) == set(range(-4, 5)) or len(set(d.flatten().tolist())) == 9


def test_crop_pad_with_zero_sides_is_the_identity_and_pad_one_side_crop_the_other_is_a_shift():
    x = images(4, h=16, w=16)
    zero = torch.zeros(4, 4, dtype=torch.long)
    # Bilinear sampling at the pixels' own centres: exact up to float32 rounding of the grid.
    torch.testing.assert_close(augment.crop_pad_resize(x, zero), x, rtol=0, atol=1e-5)
    # (top, right, bottom, left) = (-2, -3, 2, 3): pad 3 on the left, crop 3 on the right, crop 2 at the
    # top, pad 2 at the bottom: the same size, the content moved 3 right and 2 up, zeros moved in.
    sides = torch.tensor([[-2, -3, 2, 3]] * 4)
    out = augment.crop_pad_resize(x, sides)
    expected = augment.shift(x, torch.full((4,), -2), torch.full((4,), 3), 4)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_crop_pad_resizes_back_a_padded_image():
    # Padding 8 on every side of a 16x16 image and resizing back to 16x16 halves it: the centre 8x8
    # holds the image downsampled by 2, which bilinear sampling at the output's centres averages 2x2.
    x = images(2, h=16, w=16)
    out = augment.crop_pad_resize(x, torch.tensor([[8, 8, 8, 8]] * 2))
    pooled = torch.nn.functional.avg_pool2d(x, 2)
    torch.testing.assert_close(out[:, :, 4:12, 4:12], pooled, rtol=0, atol=1e-5)
    assert out[:, :, :3].abs().max() == 0 and out[:, :, 13:].abs().max() == 0


def test_inactive_images_are_left_exactly_as_they_were():
    x = images(32)
    active = torch.arange(32) % 2 == 0
    for aug in (augment.Flip(), augment.Translate(4), augment.CropPad(2)):
        out = aug.apply(x, aug.draw(32, gen(), active))
        assert torch.equal(out[~active], x[~active])


def test_some_of_active_counts_are_uniform_over_0_to_k():
    act = augment.some_of_active(9000, 2, gen(), torch.device("cpu"))
    counts = torch.bincount(act.sum(1), minlength=3).double()
    # Each count 0, 1, 2 has probability 1/3: 3000 ± 5 standard deviations (sqrt(9000·2/9) ≈ 45).
    assert ((counts - 3000).abs() < 225).all(), counts
    # With one of two active, either is equally likely.
    one = act[act.sum(1) == 1]
    assert abs(int(one[:, 0].sum()) - one.shape[0] / 2) < 5 * (one.shape[0] / 4) ** 0.5


def test_some_of_applies_each_image_its_subset():
    x = images(200)
    aug = augment.Augmentation([augment.Flip(), augment.Translate(4)], "some_of")
    g = gen(3)
    out = aug(x, g)
    # Replay the same draws: the subsets, each augmenter's numbers, then the order.
    g = gen(3)
    active = augment.some_of_active(200, 2, g, x.device)
    flips = aug.augmenters[0].draw(200, g, active[:, 0])[0]
    (d,) = aug.augmenters[1].draw(200, g, active[:, 1])
    order = torch.rand(2, generator=g).argsort().tolist()
    seen = {0: 0, 1: 0, 2: 0}
    for i in range(200):
        seen[int(active[i].sum())] += 1
        y = x[i:i + 1]
        for j in order:
            if j == 0 and flips[i]:
                y = y.flip(-1)
            if j == 1:
                y = augment.shift(y, d[0, i:i + 1], d[1, i:i + 1], 4)
        assert torch.equal(out[i:i + 1], y)
        assert flips[i] <= active[i, 0] and (d[:, i].abs().sum() == 0 or active[i, 1])
    assert min(seen.values()) > 30  # every subset size occurs (probability 1/3 each)


def test_always_applies_every_augmenter_and_none_nothing():
    x = images(100)
    out = augment.Augmentation([augment.Translate(4)], "always")(x, gen())
    # Every image is shifted unless it drew (0, 0) (probability 1/81): zeros appear in almost all.
    shifted = (out == 0).flatten(1).any(1)
    assert int(shifted.sum()) >= 90
    assert augment.Augmentation([augment.Translate(4)], "none")(x, gen()) is x


@pytest.mark.parametrize("mode", ["always", "some_of"])
def test_same_generator_same_batch_and_another_seed_another(mode):
    x = images(50)
    aug = augment.Augmentation([augment.Flip(), augment.Translate(4)], mode)
    assert torch.equal(aug(x, gen(5)), aug(x, gen(5)))
    assert not torch.equal(aug(x, gen(5)), aug(x, gen(6)))


def test_bad_mode_is_refused():
    with pytest.raises(ValueError, match="some_of"):
        augment.Augmentation([augment.Flip()], "sometimes")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("mode", ["always", "some_of"])
def test_cuda_batches_are_augmented_on_the_device_like_on_the_cpu(mode):
    # The same draws from a CUDA generator applied on the CPU: gathers and wheres are exact on both.
    x = images(64).cuda()
    aug = augment.Augmentation([augment.Flip(), augment.Translate(4)], mode)
    g = torch.Generator(device="cuda").manual_seed(0)
    out = aug(x, g)
    assert out.device.type == "cuda"
    g = torch.Generator(device="cuda").manual_seed(0)
    assert torch.equal(aug(x, g), out)
    crop = augment.Augmentation([augment.CropPad(8)], mode)
    g = torch.Generator(device="cuda").manual_seed(0)
    assert crop(x, g).shape == x.shape
