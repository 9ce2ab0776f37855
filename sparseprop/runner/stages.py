"""The signal measurements of a run: which examples, each stage's spectra, tracking during training."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from omegaconf import DictConfig

from sparseprop import data, records
from sparseprop.models.base import norm_mode, set_norm_mode
from sparseprop.signal import measure as propagation


class SignalStages:
    """What ``Run`` measures and records of signal propagation; it provides the attributes annotated here."""

    cfg: DictConfig
    out: Path
    device: torch.device
    model: torch.nn.Module
    extra: dict[str, Any]
    signal_rows: list[dict[str, Any]]
    spectra: dict[str, Any]
    x_io: torch.Tensor | None
    x_layer: torch.Tensor | None
    warn: Callable[[str], None]
    warnings: list[str]

    def select_signal_examples(self, splits: data.Splits) -> None:
        """The training examples measured at every stage, if anything is measured (once the model is built)."""
        cfg = self.cfg
        if cfg.signal.stages or cfg.signal.every:
            n = splits.x_train.shape[0]
            io_idx = propagation.choose_examples(n, propagation.io_examples(cfg.signal.examples, self.model))
            layer_idx = propagation.choose_examples(n, propagation.layer_examples(cfg.signal.layer_examples, self.model))
            self.x_io, self.x_layer = splits.x_train[io_idx.to(self.device)], splits.x_train[layer_idx.to(self.device)]
            # Which training examples the raw spectra belong to, so they can be recomputed independently.
            self.spectra.update({"examples/io": io_idx.numpy(), "examples/layer": layer_idx.numpy()})
            self.extra["signal_io_examples"] = int(io_idx.numel())
            self.extra["signal_layer_examples"] = int(layer_idx.numel())
            # The BatchNorm mode every stage's spectra are measured in (``running_statistics`` below).
            self.extra["signal_batchnorm"] = "running"

    def stage_hook(self, stage: str, step: int = 0) -> None:
        """Measure signal propagation at ``stage`` if asked to, and record it."""
        if stage not in self.cfg.signal.stages:
            return
        t = time.time()
        with running_statistics(self.model):
            m = propagation.measure(self.model, self.x_io, self.x_layer, stage, step)
        self.extra[f"signal_{stage}_time_s"] = time.time() - t
        self.warn_once(m.warnings)
        self.signal_rows += m.rows
        self.spectra.update(m.raw)
        self.extra.update(propagation.headline(self.signal_rows))
        self.write_signal()
        if m.raw:
            records.write_npz(self.out / records.SPECTRA, self.spectra)

    def track_signal(self, step: int) -> None:
        """During training: input–output and weight spectra every ``signal.every`` steps (statistics only)."""
        every = self.cfg.signal.every
        if every and step % every == 0:
            with running_statistics(self.model):
                # Operator spectra are per stage only: on VGG-C they cost seconds, as much as the weights'.
                m = propagation.measure(self.model, self.x_io, None, "train", step, keep_raw=False, operators=False)
            self.warn_once(m.warnings)
            self.signal_rows += m.rows
            self.write_signal()

    def warn_once(self, messages: list[str]) -> None:
        """Warn of what a measurement could not do, once a run (every stage would say the same)."""
        for w in messages:
            if w not in self.warnings:
                self.warn(w)

    def write_signal(self) -> None:
        records.write_csv(self.out / records.SIGNAL, self.signal_rows, columns=propagation.SIGNAL_COLUMNS)


@contextmanager
def running_statistics(model: torch.nn.Module) -> Iterator[None]:
    """Signal is measured with BatchNorm's running statistics whatever ``batchnorm`` says for scoring.

    A Jacobian spectrum is a per-example quantity: with batch statistics an example's logits would
    depend on the other examples measured with it, and the per-example passes of the generic
    Jacobian path would normalise each example by its own statistics instead of a batch's.
    """
    mode = norm_mode(model)
    set_norm_mode(model, "running")
    try:
        yield
    finally:
        set_norm_mode(model, mode)
