"""Pruning at initialisation: the pruner API and registry, masks, data-driven scores, and the criteria.

Each criterion is a module of this package (``snip``, ``random``, ``dense`` for prune=none) that
registers itself; importing the package registers them all.
"""

from sparseprop.pruning.base import (PRUNERS, DataOptions, DataPruner, Pruned, Pruner, PruneOptions, ScoringData,
                                     make_pruner)
from sparseprop.pruning.effective import EffectiveArchitecture, LayerReach, effective_architecture
from sparseprop.pruning.masks import (Masks, apply_masks, global_topk, kept_count, mask_gradients, prunable_parameters,
                                      random_masks, saliency)
from sparseprop.pruning.scoring import (OBJECTIVES, SIGNAL_FACTOR, TARGETS, batch_indices, check_signal,
                                        connection_sensitivity, parse_batches, sensitivity_and_scale)
from sparseprop.pruning import dense, random, snip  # noqa: E402,F401  (registers the criteria)

__all__ = ["PRUNERS", "DataOptions", "DataPruner", "EffectiveArchitecture", "LayerReach", "Masks", "OBJECTIVES", "Pruned", "Pruner", "PruneOptions",
           "SIGNAL_FACTOR", "ScoringData", "TARGETS", "apply_masks", "batch_indices", "check_signal",
           "connection_sensitivity", "effective_architecture", "global_topk", "kept_count", "make_pruner", "mask_gradients", "parse_batches",
           "prunable_parameters", "random_masks", "saliency", "sensitivity_and_scale"]
