"""Training: optimisers and schedules (``optim``), the loop with evaluation (``loop``), random states (``rng``)."""

from sparseprop.train.loop import (
    DIVERGENCE_FACTOR,
    BatchSampler,
    TrainState,
    divergence_limit,
    divergence_reason,
    evaluate,
    fit,
    EVAL_CHUNK,
    eval_chunk,
    masked_tensors,
    record_evaluation,
    summarise_evals,
)
from sparseprop.train.optim import (
    OPTIMIZERS,
    SCHEDULES,
    check_schedule,
    constant_lr,
    cosine_lr,
    l2_term,
    make_optimizer,
    piecewise_lr,
    warmed_up,
)
from sparseprop.train.rng import rng_state, set_rng_state

__all__ = ["DIVERGENCE_FACTOR", "EVAL_CHUNK", "eval_chunk", "OPTIMIZERS", "SCHEDULES", "BatchSampler", "TrainState", "check_schedule",
           "constant_lr", "cosine_lr", "divergence_limit", "divergence_reason", "evaluate", "fit", "l2_term",
           "make_optimizer", "masked_tensors", "piecewise_lr", "record_evaluation", "rng_state", "set_rng_state", "warmed_up",
           "summarise_evals"]
