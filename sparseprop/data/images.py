"""What the colour image datasets (CIFAR-10, Tiny-ImageNet) share: their options, per-channel statistics and splits."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sparseprop.data.augment import AUGMENT_MODES, Augmentation, Augmenter
from sparseprop.data.base import STANDARDISE, Splits, hold_out
from sparseprop.data.idx import FileDatasetOptions
from sparseprop.errors import ConfigError


@dataclass
class ImageDatasetOptions(FileDatasetOptions):
    """A colour image dataset: standardised per channel, its training batches augmented as ``augment`` says."""

    augment: str = "some_of"

    def check(self) -> None:
        super().check()
        if self.augment not in AUGMENT_MODES:
            self.refuse("augment", f"choose one of {', '.join(AUGMENT_MODES)}")


def channel_statistics(x: torch.Tensor, bessel: bool = False, chunk: int = 5_000) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of each channel of ``x`` (N, C, H, W) over images and pixels, in float64 (population std unless ``bessel``)."""
    c = x.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    for start in range(0, x.shape[0], chunk):
        total += x[start:start + chunk].double().sum(dim=(0, 2, 3)).cpu()
    n = x.numel() // c
    mean = total / n
    squares = torch.zeros(c, dtype=torch.float64)
    for start in range(0, x.shape[0], chunk):
        squares += (x[start:start + chunk].double() - mean.view(1, c, 1, 1)).square().sum(dim=(0, 2, 3)).cpu()
    return mean, (squares / (n - 1 if bessel else n)).sqrt()


def finish_image_splits(name: str, x_tr: torch.Tensor, y_tr: torch.Tensor, x_te: torch.Tensor, y_te: torch.Tensor,
                        num_classes: int, val_fraction: float, split_seed: int, standardise_from: str,
                        augmenters: list[Augmenter], augment: str) -> Splits:
    """Hold out validation (the seed-``split_seed`` shuffle), standardise each channel, attach the augmentation.

    ``x_tr`` and ``x_te`` are uint8 (N, C, H, W); the statistics come from all official training
    images with the population std (``all``, the authors') or from the training split with Bessel's
    correction (``split``), as for MNIST.
    """
    if standardise_from not in STANDARDISE:
        raise ConfigError("dataset.standardise", standardise_from, f"one of {', '.join(STANDARDISE)}")
    if augment not in AUGMENT_MODES:
        raise ConfigError("dataset.augment", augment, f"one of {', '.join(AUGMENT_MODES)}")
    x_all = x_tr
    x_tr, y_tr, x_val, y_val = hold_out(x_tr, y_tr, val_fraction, split_seed)
    # Statistics of the pixels in [0, 1]: the bytes divided by 255, as the images are before standardising.
    mean, std = channel_statistics(x_all) if standardise_from == "all" else channel_statistics(x_tr, bessel=True)
    mean, std = mean / 255.0, std / 255.0
    scale, shift = (1.0 / (255.0 * std)).float().view(1, -1, 1, 1), (mean / std).float().view(1, -1, 1, 1)
    out = [standardised(x, scale, shift) for x in (x_tr, x_val, x_te)]
    aug = None if augment == "none" else Augmentation(augmenters, augment)
    return Splits(name, out[0], y_tr.long(), out[1], y_val.long(), out[2], y_te.long(), num_classes, aug)


def standardised(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, chunk: int = 5_000) -> torch.Tensor:
    """``x·scale − shift`` in float32, in chunks, so the peak memory is the result and one chunk's temporaries."""
    out = torch.empty(x.shape, dtype=torch.float32)
    for start in range(0, x.shape[0], chunk):
        out[start:start + chunk] = x[start:start + chunk].float() * scale - shift
    return out
