"""Pruning at initialisation: the pruner API and registry, masks, data-driven scores, and the criteria.

Each criterion is a module of this package that registers itself (``snip`` with ``iterative_snip``,
``grasp``, ``synflow``, ``magnitude``, ``random``, ``dense`` for prune=none); importing the package
registers them all. ``scored`` holds the round loop and ``budgets`` the global and per-tensor budgets
every scored criterion shares.
"""

from sparseprop.pruning.base import (PRUNERS, DataOptions, DataPruner, Pruned, Pruner, PruneOptions, ScoringData,
                                     make_pruner)
from sparseprop.pruning.budgets import BUDGETS, SCHEDULES, allocate, exponential_schedule, select
from sparseprop.pruning.effective import EffectiveArchitecture, LayerReach, effective_architecture
from sparseprop.pruning.masks import (Masks, apply_masks, global_topk, kept_count, mask_gradients, prunable_parameters,
                                      random_masks, saliency)
from sparseprop.pruning.scoring import (OBJECTIVES, SIGNAL_FACTOR, TARGETS, batch_indices, check_signal,
                                        connection_sensitivity, parse_batches, sensitivity_and_scale)
from sparseprop.pruning.scored import ScoredDataOptions, ScoredDataPruner, ScoredOptions, ScoredPruner, Scores
from sparseprop.pruning import dense, grasp, magnitude, random, snip, synflow  # noqa: E402,F401  (registers the criteria)
from sparseprop.pruning.grasp import grasp_scores  # noqa: E402
from sparseprop.pruning.magnitude import magnitude_scores  # noqa: E402
from sparseprop.pruning.synflow import synflow_scores  # noqa: E402

__all__ = ["BUDGETS", "SCHEDULES", "ScoredDataOptions", "ScoredDataPruner", "ScoredOptions", "ScoredPruner", "Scores",
           "allocate", "exponential_schedule", "grasp_scores", "magnitude_scores", "select", "synflow_scores",
           "PRUNERS", "DataOptions", "DataPruner", "EffectiveArchitecture", "LayerReach", "Masks", "OBJECTIVES", "Pruned", "Pruner", "PruneOptions",
           "SIGNAL_FACTOR", "ScoringData", "TARGETS", "apply_masks", "batch_indices", "check_signal",
           "connection_sensitivity", "effective_architecture", "global_topk", "kept_count", "make_pruner", "mask_gradients", "parse_batches",
           "prunable_parameters", "random_masks", "saliency", "sensitivity_and_scale"]
