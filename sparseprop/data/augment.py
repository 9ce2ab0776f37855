"""Data augmentation on batches of images already on the model's device, drawn from a torch.Generator.

Every augmenter works on a whole batch (N, C, H, W) at once, with no per-image Python loop, and
draws its random numbers from the generator it is given, which must live on the batch's device.
An augmenter first draws its random numbers for the images it acts on (``active``, a boolean per
image, so that ``some_of`` can give each image its own subset) and then applies them; drawing
everything before applying anything lets ``some_of`` pick its random order on the device, with no
host synchronisation. The authors' augmenters are:

- ``flip``: a left-right mirror of each image with probability 1/2 (imgaug's ``Fliplr(0.5)``);
- ``translate``: a shift of each image by integers dx, dy drawn uniformly from [-4, 4] each,
  the uncovered pixels set to 0 (imgaug's ``Affine(translate_px=...)`` on normalised images: 0 is
  the channel mean), for CIFAR-10;
- ``crop_pad``: each side cropped (negative) or padded with zeros (positive) by an integer in
  [-8, 8], then resized back to the input size (imgaug's ``CropAndPad(px=...)`` with its default
  ``keep_size``), for Tiny-ImageNet. The resize here is bilinear, imgaug's is bicubic.

Modes (the dataset key ``augment``): ``none``; ``always`` applies every augmenter to every
image, in the listed order; ``some_of`` is imgaug's ``SomeOf((0, None), ..., random_order=True)``
as the authors used it: each image gets a random number (uniform in 0..K) of the K augmenters,
chosen at random, and the batch applies them in one random order. The order is chosen on the
device by computing every order and selecting one, so K augmenters cost K! compositions: 2 for the
authors' pairs (flip + translate, flip + crop_pad), whose orders give the same distribution anyway
(a mirror turns a shift or a crop of one side into its opposite, drawn with the same probability).
"""

from __future__ import annotations

from itertools import permutations
from typing import Protocol

import torch
import torch.nn.functional as F

AUGMENT_MODES = ("none", "always", "some_of")


class Augmenter(Protocol):
    """Random numbers for a batch, drawn for its ``active`` images, then applied."""

    __name__: str

    def draw(self, n: int, generator: torch.Generator, active: torch.Tensor) -> tuple[torch.Tensor, ...]: ...

    def apply(self, x: torch.Tensor, drawn: tuple[torch.Tensor, ...]) -> torch.Tensor: ...


def _where(active: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return torch.where(active.view(-1, *([1] * (old.dim() - 1))), new, old)


def shift(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, pad: int) -> torch.Tensor:
    """Each image moved down by ``dy[i]`` and right by ``dx[i]`` pixels (|d| <= pad), zeros where nothing moved in."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    # out[i, j] = x[i - dy, j - dx] = padded[i - dy + pad, j - dx + pad]: two gathers, rows then columns.
    rows = (pad - dy).view(n, 1) + torch.arange(h, device=x.device)
    cols = (pad - dx).view(n, 1) + torch.arange(w, device=x.device)
    out = padded.gather(2, rows.view(n, 1, h, 1).expand(n, c, h, w + 2 * pad))
    return out.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w))


def crop_pad_resize(x: torch.Tensor, sides: torch.Tensor) -> torch.Tensor:
    """Each image cropped (negative) or zero-padded (positive) by ``sides[i] = (top, right, bottom, left)``, resized back."""
    n, _, h, w = x.shape
    top, right, bottom, left = sides.to(x.dtype).unbind(1)
    # Output pixel centre j of W samples the padded-or-cropped image of width W' = W + left + right at
    # j·W'/W; in grid_sample's normalised coordinates (align_corners=False) that is the affine map
    # u_src = (W'/W)·u_out + (right - left)/W, and likewise for rows.
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = (w + left + right) / w
    theta[:, 0, 2] = (right - left) / w
    theta[:, 1, 1] = (h + top + bottom) / h
    theta[:, 1, 2] = (bottom - top) / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class Flip:
    """Mirror each active image left-right with probability 1/2."""

    __name__ = "flip"

    def draw(self, n: int, generator: torch.Generator, active: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (active & (torch.rand(n, generator=generator, device=active.device) < 0.5),)

    def apply(self, x: torch.Tensor, drawn: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return _where(drawn[0], x.flip(-1), x)


class Translate:
    """Shift each active image by dy, dx drawn uniformly from [-px, px], filling with zeros."""

    __name__ = "translate"

    def __init__(self, px: int = 4) -> None:
        self.px = px

    def draw(self, n: int, generator: torch.Generator, active: torch.Tensor) -> tuple[torch.Tensor, ...]:
        d = torch.randint(-self.px, self.px + 1, (2, n), generator=generator, device=active.device)
        return (d * active,)

    def apply(self, x: torch.Tensor, drawn: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return shift(x, drawn[0][0], drawn[0][1], self.px)


class CropPad:
    """Crop or zero-pad each side of each active image by an integer in [-px, px], then resize back."""

    __name__ = "crop_pad"

    def __init__(self, px: int = 8) -> None:
        self.px = px

    def draw(self, n: int, generator: torch.Generator, active: torch.Tensor) -> tuple[torch.Tensor, ...]:
        sides = torch.randint(-self.px, self.px + 1, (n, 4), generator=generator, device=active.device)
        return sides * active.view(-1, 1), active

    def apply(self, x: torch.Tensor, drawn: tuple[torch.Tensor, ...]) -> torch.Tensor:
        # Inactive images are passed through exactly, not resampled at their own pixel centres.
        return _where(drawn[1], crop_pad_resize(x, drawn[0]), x)


def some_of_active(n: int, k: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """(n, k) booleans: each row has a count drawn uniformly from 0..k of its k entries true, chosen at random."""
    count = torch.randint(0, k + 1, (n, 1), generator=generator, device=device)
    rank = torch.rand(n, k, generator=generator, device=device).argsort(dim=1).argsort(dim=1)
    return rank < count


class Augmentation:
    """A dataset's augmenters and how they are applied (``mode``: one of AUGMENT_MODES)."""

    def __init__(self, augmenters: list[Augmenter], mode: str) -> None:
        if mode not in AUGMENT_MODES:
            raise ValueError(f"augmentation mode {mode!r}: choose one of {', '.join(AUGMENT_MODES)}")
        self.augmenters, self.mode = list(augmenters), mode

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The batch ``x`` augmented with random numbers from ``generator`` (on ``x``'s device)."""
        k, n = len(self.augmenters), x.shape[0]
        if self.mode == "none" or k == 0:
            return x
        if self.mode == "always":
            every = torch.ones(n, dtype=torch.bool, device=x.device)
            for aug in self.augmenters:
                x = aug.apply(x, aug.draw(n, generator, every))
            return x
        active = some_of_active(n, k, generator, x.device)
        drawn = [aug.draw(n, generator, active[:, j]) for j, aug in enumerate(self.augmenters)]
        order = torch.rand(k, generator=generator, device=x.device).argsort()
        out = x
        for i, perm in enumerate(permutations(range(k))):
            y = x
            for j in perm:
                y = self.augmenters[j].apply(y, drawn[j])
            chosen = (order == torch.tensor(perm, device=x.device)).all()
            out = y if i == 0 else torch.where(chosen, y, out)
        return out

    def __repr__(self) -> str:
        return f"Augmentation([{', '.join(a.__name__ for a in self.augmenters)}], mode={self.mode!r})"
