"""Loading a run's checkpoint back into a ready-to-use network with its masks."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from sparseprop import records
from sparseprop.errors import SparsepropError
from sparseprop.records import CHECKPOINT
from sparseprop.runner.setup import build


@dataclass
class LoadedRun:
    """A trained (or interrupted) run: the network, its masks, its config, summary and training step."""

    model: torch.nn.Module
    masks: dict[str, torch.Tensor]
    config: DictConfig
    summary: dict[str, Any]
    step: int


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild the network of ``run_dir`` from its ``checkpoint.pt`` (weights and masks) and config.

    Example::

        from sparseprop.runner.checkpoint import load_run
        run = load_run("outputs/runs/2026-01-01/12-00-00")
        logits = run.model(x)          # x normalised as the run's dataset (see sparseprop.data)
        kept = {k: int(m.sum()) for k, m in run.masks.items()}
    """
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise SparsepropError(f"no {CHECKPOINT} in {run_dir}: not a sparseprop run directory, or the run never reached training")
    ckpt = records.load_torch(path, device)  # weights_only: a planted pickle payload never runs
    try:
        cfg = OmegaConf.create(ckpt["config"])
        shape = ckpt["data_shape"]
        model = build(cfg, _Shape(tuple(shape["in_shape"]), int(shape["num_classes"])))
        model.load_state_dict(ckpt["model"])
        masks = {k: v.to(device) for k, v in ckpt["masks"].items()}
        step = int(ckpt["train_state"]["step"])
    except SparsepropError:
        raise
    except Exception as exc:  # noqa: BLE001 - it loaded, but is not a checkpoint of a network sparseprop can build
        raise records.DamagedRecord(path, exc) from None
    model.to(device).eval()
    summary_path = Path(run_dir) / records.SUMMARY
    summary: dict[str, Any] = {}
    if summary_path.is_file():
        try:
            summary = records.read_summary(summary_path)
        except SparsepropError as exc:  # damaged or unreadable: the network is whole; only its summary is lost
            logging.getLogger("sparseprop").warning("%s; loaded without it", exc)
    return LoadedRun(model, masks, cfg, summary, step)


@dataclass
class _Shape:
    in_shape: tuple[int, ...]
    num_classes: int
