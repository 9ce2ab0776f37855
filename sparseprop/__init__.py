"""sparseprop: pruning at initialisation seen through signal propagation."""

__version__ = "0.1.0"
