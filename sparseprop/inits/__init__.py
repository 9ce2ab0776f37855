"""Weight initialisations of PAPER.md: variance scaling (LeCun, Glorot, He, custom), fixed variance and orthogonal."""

from sparseprop.inits.base import FAN_MODES, INITS, FixedInit, fans, initialise
from sparseprop.inits.orthogonal import OrthogonalOptions, orthogonal, orthogonal_matrix
from sparseprop.inits.variance_scaling import NormalOptions, VsCustomOptions, normal, vs_custom, vs_g, vs_h, vs_l

__all__ = ["FAN_MODES", "INITS", "FixedInit", "NormalOptions", "OrthogonalOptions", "VsCustomOptions", "fans",
           "initialise", "normal", "orthogonal", "orthogonal_matrix", "vs_custom",
           "vs_g", "vs_h", "vs_l"]
