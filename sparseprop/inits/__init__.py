"""Weight initialisations of PAPER.md: variance scaling (LeCun, Glorot, He, custom), fixed variance, and the
orthogonal ones (dense, block-orthogonal and flattened conv kernels, delta-orthogonal)."""

from sparseprop.inits.base import FAN_MODES, INITS, SHAPE_CHECKS, FixedInit, check, fans, initialise
from sparseprop.inits.delta_orthogonal import delta_orthogonal
from sparseprop.inits.orthogonal import (OrthogonalOptions, block_orthogonal_kernel, orthogonal, orthogonal_flat,
                                         orthogonal_matrix, symmetric_projection)
from sparseprop.inits.variance_scaling import NormalOptions, VsCustomOptions, normal, vs_custom, vs_g, vs_h, vs_l

__all__ = ["FAN_MODES", "INITS", "SHAPE_CHECKS", "FixedInit", "NormalOptions", "OrthogonalOptions", "VsCustomOptions",
           "block_orthogonal_kernel", "check", "delta_orthogonal", "fans", "initialise", "normal", "orthogonal",
           "orthogonal_flat", "orthogonal_matrix", "symmetric_projection", "vs_custom", "vs_g", "vs_h", "vs_l"]
