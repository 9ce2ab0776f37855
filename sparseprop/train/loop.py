"""The training loop: masked SGD on in-memory splits, with evaluation, checkpoints and resumable state."""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from sparseprop.models.base import activations_per_example
from sparseprop.train.optim import SCHEDULES, l2_term, warmed_up


class BatchSampler:
    """Shuffles the training split once per epoch with its own generator; its state can be saved and restored.

    ``augment`` is a second generator, on the data's device, for data sets that draw random
    augmentations per batch (``Splits.train_batch``), so the batch order does not depend on them.
    """

    def __init__(self, n: int, batch_size: int, seed: int, device: torch.device) -> None:
        self.n, self.batch_size, self.device = n, batch_size, device
        self.generator = torch.Generator().manual_seed(seed)
        self.augment = torch.Generator(device=device).manual_seed(seed ^ 1)
        self.perm = torch.randperm(n, generator=self.generator).to(device)
        self.pos = 0

    def next(self) -> torch.Tensor:
        """Indices of the next batch; a new epoch starts when the current one cannot fill a batch."""
        if self.pos + self.batch_size > self.n:
            self.perm = torch.randperm(self.n, generator=self.generator).to(self.device)
            self.pos = 0
        idx = self.perm[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "perm": self.perm.cpu(), "pos": self.pos,
                "augment": self.augment.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        if "augment" in state:  # checkpoints of runs made before augmentation existed have none, and need none
            self.augment.set_state(state["augment"])
        self.perm, self.pos = state["perm"].to(self.device), int(state["pos"])


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 10_000) -> dict[str, float]:
    """Mean cross-entropy, accuracy and error (percent) of ``model`` on (x, y), in evaluation mode."""
    was_training = model.training
    model.eval()
    loss, correct = torch.zeros((), dtype=torch.float64, device=x.device), torch.zeros((), dtype=torch.long, device=x.device)
    for start in range(0, x.shape[0], chunk):
        out = model(x[start:start + chunk])
        yb = y[start:start + chunk]
        loss += F.cross_entropy(out, yb, reduction="sum").double()
        correct += (out.argmax(1) == yb).sum()
    model.train(was_training)
    acc = correct.item() / x.shape[0]
    return {"loss": loss.item() / x.shape[0], "accuracy": acc, "error_pct": 100.0 * (1.0 - acc)}


@dataclass
class TrainState:
    """Everything needed to continue training exactly where it stopped."""

    step: int = 0
    metrics: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    status: str = "running"
    reason: str = ""
    # The training loss summed since the last log step, so a run resumed between log steps logs the same mean.
    loss_sum: float = 0.0
    loss_count: int = 0
    # The training loss of the first step: the reference of the divergence rule.
    initial_loss: float | None = None


# A run has diverged when a logged training loss (the mean over a log interval) is not finite or
# exceeds DIVERGENCE_FACTOR times the larger of log(num_classes) (the loss of a uniform guess)
# and the first step's loss. A network that trains is never worse than a uniform guess on average
# over an interval, let alone ten times worse than where it started.
DIVERGENCE_FACTOR = 10.0


def divergence_limit(num_classes: int, initial_loss: float | None) -> float:
    """The training loss beyond which a run counts as diverged."""
    ref = math.log(num_classes)
    if initial_loss is not None and math.isfinite(initial_loss):
        ref = max(ref, initial_loss)
    return DIVERGENCE_FACTOR * ref


def divergence_reason(mean_loss: float, step: int, limit: float) -> str | None:
    """Why a logged training loss means divergence, or None when it does not."""
    if not math.isfinite(mean_loss):
        return f"training loss became {mean_loss} at step {step}"
    if mean_loss > limit:
        return (f"training loss {mean_loss:.4g} at step {step} exceeds {limit:.4g} "
                f"({DIVERGENCE_FACTOR:g} x the larger of log(classes) and the first step's loss)")
    return None


def masked_tensors(params: dict[str, nn.Parameter], masks: dict[str, torch.Tensor] | None) -> tuple[list, list]:
    """Parallel lists (masked parameters, float masks in the parameters' dtype and memory layout) for fused in-place masking."""
    if not masks:
        return [], []
    names = list(masks)
    return [params[k] for k in names], [torch.empty_like(params[k]).copy_(masks[k]) for k in names]


# Bytes of activations one evaluation pass may hold: chunks of the evaluated split are sized by it.
EVAL_BYTES = 512 * 2**20
EVAL_CHUNK = 10_000


def eval_chunk(per_example: int) -> int:
    """Examples per evaluation pass of a network with ``per_example`` activations: at most ``EVAL_CHUNK``, fewer
    where a pass's float32 activations would exceed ``EVAL_BYTES``."""
    return max(1, min(EVAL_CHUNK, EVAL_BYTES // (4 * max(1, per_example))))


def train_precision(cfg: Any, device: torch.device) -> Any:
    """The context of the training forward pass: bfloat16 autocast with ``amp``, else nothing."""
    if cfg.get("amp", False):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def summarise_evals(evals: list[dict[str, float]], best_of_last: int) -> dict[str, float]:
    """Final test error, best test error over the last ``best_of_last`` evaluations, and test error at the best validation one."""
    if not evals:
        return {}
    last = evals[-best_of_last:]
    best_val = max(evals, key=lambda e: (e["val_accuracy"], -e["step"]))
    return {
        "final_test_error_pct": evals[-1]["test_error_pct"],
        "best_last_test_error_pct": min(e["test_error_pct"] for e in last),
        "best_val_step": best_val["step"],
        "best_val_test_error_pct": best_val["test_error_pct"],
        "final_val_error_pct": evals[-1]["val_error_pct"],
    }


def fit(model: nn.Module, params: dict[str, nn.Parameter], masks: dict[str, torch.Tensor] | None, splits: Any,
        cfg: Any, state: TrainState, optimizer: torch.optim.Optimizer, sampler: BatchSampler,
        on_eval: Callable[[TrainState], None] = lambda s: None,
        on_checkpoint: Callable[[TrainState], None] = lambda s: None,
        on_step: Callable[[int], None] | None = None, progress: bool | None = None) -> TrainState:
    """Train from ``state.step`` to ``cfg.iterations``, keeping pruned entries exactly zero; returns the final state.

    Pruned entries stay zero whatever the optimiser: their gradients are zeroed before every
    step, so no momentum or decay term can build up, and the weights are masked again after it,
    in the parameters' own float32 (``amp`` casts only inside the forward pass). The loss is only
    read back (a device sync) at the first step and every ``log_interval`` steps. Data sets whose
    splits have ``train_batch(idx, generator)`` (standardised, possibly augmented batches) are
    batched through it; the others by indexing their in-memory training split.
    """
    from tqdm.auto import tqdm

    if state.status != "running":
        return state  # resumed from a final checkpoint: a finished or diverged run must not train on
    schedule = SCHEDULES.get(cfg.schedule, "train.schedule")
    sched_args = dict(lr=cfg.lr, boundaries=list(cfg.boundaries), values=list(cfg["values"]), iterations=cfg.iterations)
    warmup = int(cfg.get("warmup", 0))
    constant = cfg.schedule == "constant" and not warmup
    x, y = splits.x_train, splits.y_train
    channels_last = bool(cfg.get("channels_last", False)) and x.dim() == 4
    if channels_last:
        model.to(memory_format=torch.channels_last)
    masked, fmasks = masked_tensors(params, masks)
    batch_of = getattr(splits, "train_batch", None)
    precision = train_precision(cfg, x.device)
    chunk = eval_chunk(activations_per_example(model, tuple(getattr(splits, "in_shape", None) or x.shape[1:])))
    # Plain ints: reading a config node in the loop costs more than the arithmetic it guards.
    iterations, log_every, eval_every, ckpt_every = (int(cfg.iterations), int(cfg.log_interval),
                                                     int(cfg.eval_interval), int(cfg.checkpoint_interval))
    model.train()
    bar = tqdm(total=iterations, initial=state.step, disable=progress is False if progress is not None else None,
               desc="train", unit="it", dynamic_ncols=True, mininterval=0.5)
    running = torch.tensor(state.loss_sum, device=x.device)
    num_classes = int(getattr(splits, "num_classes", 0) or int(y.max()) + 1)
    since_log = state.loss_count
    try:
        for step in range(state.step + 1, iterations + 1):
            if not constant:
                lr = warmed_up(schedule(step, **sched_args), step, warmup)
                for group in optimizer.param_groups:
                    group["lr"] = lr
            idx = sampler.next()
            xb, yb = batch_of(idx, sampler.augment) if batch_of is not None else (x[idx], y[idx])
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with precision:
                loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if masked:
                torch._foreach_mul_([p.grad for p in masked], fmasks)
            optimizer.step()
            if masked:
                with torch.no_grad():
                    torch._foreach_mul_(masked, fmasks)
            running += loss.detach()
            since_log += 1
            if step == 1:
                state.initial_loss = loss.item()
            state.step = step
            if step % log_every == 0 or step == iterations:
                mean_loss = running.item() / since_log
                running.zero_()
                bar.update(since_log)
                since_log = 0
                lr_now = optimizer.param_groups[0]["lr"]
                l2_now = l2_term(optimizer)
                state.metrics.append({"step": step, "split": "train", "name": "loss", "value": mean_loss})
                state.metrics.append({"step": step, "split": "train", "name": "l2", "value": l2_now})
                state.metrics.append({"step": step, "split": "train", "name": "total", "value": mean_loss + l2_now})
                state.metrics.append({"step": step, "split": "train", "name": "lr", "value": lr_now})
                bar.set_postfix(loss=f"{mean_loss:.4f}", refresh=False)
                reason = divergence_reason(mean_loss, step, divergence_limit(num_classes, state.initial_loss))
                if reason is not None:
                    state.status, state.reason = "diverged", reason
                    break
            if step % eval_every == 0 or step == iterations:
                record_evaluation(model, splits, state, chunk)
                on_eval(state)
            if on_step is not None:
                on_step(step)
            if step % ckpt_every == 0 and step != iterations:
                state.loss_sum, state.loss_count = running.item(), since_log
                on_checkpoint(state)
        else:
            state.status = "completed"
    finally:
        bar.close()
    return state


def record_evaluation(model: nn.Module, splits: Any, state: TrainState, chunk: int = EVAL_CHUNK) -> None:
    """Evaluate on the whole validation and test splits, ``chunk`` examples a pass, and append the results to ``state``."""
    entry: dict[str, float] = {"step": state.step}
    for split in ("val", "test"):
        res = evaluate(model, getattr(splits, f"x_{split}"), getattr(splits, f"y_{split}"), chunk)
        for name, value in res.items():
            state.metrics.append({"step": state.step, "split": split, "name": name, "value": value})
            entry[f"{split}_{name}"] = value
    state.evals.append(entry)
