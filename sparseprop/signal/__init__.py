"""Signal-propagation measurements: input-output and layerwise Jacobian singular values, weight isometry.

``jacobians`` holds the generic paths and the registry of faster ones; ``mlp_fast`` registers the
MLP's on import (here), ``weights`` the data-free weight spectra, ``spectra`` their statistics and
``measure`` one stage's rows of signal.csv.
"""

from sparseprop.signal import mlp_fast  # noqa: F401 - registers the MLP's fast paths
from sparseprop.signal.jacobians import (
    FAST_PATHS,
    FastPaths,
    io_singular_values,
    layer_singular_values,
    register_fast_paths,
    signal_memory,
    single_threaded,
)
from sparseprop.signal.spectra import QUANTILES, spectrum_stats
from sparseprop.signal.weights import as_matrix, isometry_residual, weight_matrices, weight_singular_values

__all__ = ["FAST_PATHS", "FastPaths", "QUANTILES", "as_matrix", "io_singular_values", "isometry_residual",
           "layer_singular_values", "register_fast_paths", "signal_memory", "single_threaded", "spectrum_stats",
           "weight_matrices", "weight_singular_values"]
