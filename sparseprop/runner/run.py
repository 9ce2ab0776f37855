"""One run as one straight line: config → data → model → init → prune → isometry → train → evaluate → records.

The pieces it is built from live beside it: ``setup`` (device, network, data), ``rng`` (seeds and
random states), ``memory`` (the peak-memory estimate), ``layers`` (layers.csv) and ``stages``
(the signal measurements of each stage).
"""

from __future__ import annotations

import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from sparseprop import data, inits, isometry, pruning, records, train
from sparseprop.models.base import activations_per_example, batch_norms, traced_activations
from sparseprop.runner.layers import SALIENCY_QUANTILES, layer_table
from sparseprop.runner.memory import EVAL_CHUNK, available_memory, memory_estimate
from sparseprop.runner.rng import GENERATOR_SEEDS, SEED_MULTIPLIER, STREAMS, numpy_rng, plain_rng, seed_range, stream
from sparseprop.runner.setup import (build, configure_backends, library_versions, load_splits, meta_model, resolve_device,
                                     scoring_dataset)
from sparseprop.runner.stages import SignalStages

# Re-exported: what callers read from the run module (the config checks, tests).
__all__ = ["CHECKPOINT", "EVAL_CHUNK", "GENERATOR_SEEDS", "SALIENCY_QUANTILES", "SEED_MULTIPLIER", "STREAMS", "Run",
           "activations_per_example", "available_memory", "build", "layer_table", "memory_estimate", "meta_model",
           "resolve_device", "scoring_dataset", "seed_range", "stream", "traced_activations"]

log = logging.getLogger("sparseprop")
CHECKPOINT = records.CHECKPOINT


class Run(SignalStages):
    """State and records of one run in ``out_dir``; ``execute`` does the whole line, resuming if it can."""

    def __init__(self, cfg: DictConfig, out_dir: str | Path) -> None:
        self.cfg, self.out = cfg, Path(out_dir)
        self.t0 = time.time()
        self.device = resolve_device(cfg.device)
        if cfg.threads > 0:
            torch.set_num_threads(int(cfg.threads))
        configure_backends(cfg, self.device)
        self.warnings: list[str] = []
        self.extra: dict[str, Any] = {}
        self.layers: list[dict[str, Any]] = []
        self.signal_rows: list[dict[str, Any]] = []
        self.spectra: dict[str, Any] = {}
        self.x_io: torch.Tensor | None = None
        self.x_layer: torch.Tensor | None = None

    # ---- records -------------------------------------------------------------------------------

    def summary(self, state: train.TrainState, status: str | None = None, reason: str | None = None) -> dict[str, Any]:
        cfg = self.cfg
        kept = sum(r["kept"] for r in self.layers)
        total = sum(r["parameters"] for r in self.layers)
        out = {
            "status": status or state.status, "reason": reason if reason is not None else state.reason,
            "step": state.step, "iterations": cfg.train.iterations,
            "dataset": cfg.dataset.name, "arch": cfg.arch.name, "activation": cfg.activation.name,
            "init": cfg.init.name, "prune": cfg.prune.name, "isometry": cfg.isometry.name,
            "sparsity_target": cfg.prune.sparsity, "keep_target": cfg.prune.get("keep"), "seed": cfg.seed,
            "prunable_parameters": total, "kept_parameters": kept,
            "sparsity": (1.0 - kept / total) if total else 0.0,
            **train.summarise_evals(state.evals, cfg.train.best_of_last),
            **self.extra,
            "warnings": self.warnings, "wall_time_s": time.time() - self.t0, "device": str(self.device),
            "device_name": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else platform.processor() or platform.machine(),
            "versions": library_versions(),
        }
        return out

    def write_progress(self, state: train.TrainState) -> None:
        records.write_csv(self.out / records.METRICS, state.metrics, columns=records.METRIC_COLUMNS)
        if state.evals:
            last = state.evals[-1]
            log.info("step %d: val error %.2f%%, test error %.2f%%, test loss %.4f", state.step,
                     last["val_error_pct"], last["test_error_pct"], last["test_loss"])

    def checkpoint(self, state: train.TrainState) -> None:
        """Save everything needed to resume (or to reload the network) atomically, keeping the previous one."""
        if (self.out / CHECKPOINT).is_file():
            # A kill between the two renames leaves only the previous checkpoint, which resuming also reads.
            try:
                os.replace(self.out / CHECKPOINT, self.out / records.PREVIOUS_CHECKPOINT)
            except OSError as exc:
                raise records.os_error(self.out / records.PREVIOUS_CHECKPOINT, exc) from None
        records.save_torch(self.out / CHECKPOINT, {
            "format": 2,
            "config": OmegaConf.to_container(self.cfg, resolve=True),
            "model": self.model.state_dict(),
            "masks": {k: v.cpu() for k, v in (self.masks or {}).items()},
            "optimizer": self.optimizer.state_dict(),
            "sampler": self.sampler.state_dict(),
            "train_state": vars(state),
            "layers": self.layers, "warnings": self.warnings, "extra": self.extra, "signal_rows": self.signal_rows,
            "data_shape": {"in_shape": list(self.in_shape), "num_classes": self.num_classes},
            "rng": plain_rng(train.rng_state()),
        })
        records.write_json(self.out / records.SUMMARY, self.summary(state))
        records.write_csv(self.out / records.METRICS, state.metrics, columns=records.METRIC_COLUMNS)

    # ---- the line ------------------------------------------------------------------------------

    def prepare(self, splits: data.Splits, score: data.Splits) -> None:
        """Initialise, prune and (optionally) apply approximate isometry: everything before training."""
        cfg = self.cfg
        model = build(cfg, splits)
        inits.initialise(model, cfg.init.name, generator=stream(cfg.seed, 0),
                         **inits.INITS.options(cfg.init).settings())
        self.model = model.to(self.device)
        self.select_signal_examples(splits)
        pruner = pruning.make_pruner(cfg.prune)
        self.params = pruning.prunable_parameters(self.model, pruner.options.include_bias)
        if batch_norms(self.model):
            self.extra["batchnorm"] = cfg.batchnorm  # how SNIP's scoring treated BatchNorm (recorded where there is one)
        self.stage_hook("init")
        t = time.time()
        scoring = pruning.ScoringData(score.x_train, score.y_train) if pruner.uses_data else None
        result = pruner.prune(self.model, self.params, scoring, None, stream(cfg.seed, 1))
        masks, sal = result.masks, result.scores
        self.extra["prune_time_s"] = time.time() - t
        self.masks = masks
        if masks:
            pruning.apply_masks(self.params, masks)
        self.layers = layer_table(self.params, masks, sal)
        self.record_effective_architecture()
        records.write_csv(self.out / records.LAYERS, self.layers)
        self.stage_hook("pruned")
        self.apply_isometry()

    def record_effective_architecture(self) -> None:
        """Each weight's effective width and connections (layers.csv) and the network's totals (summary.json)."""
        effective = pruning.effective_architecture(self.model, self.masks)
        by_param = {layer.param: layer.record() for layer in effective.layers}
        for row in self.layers:
            row.update(by_param.get(row["name"], {}))
        self.extra.update(effective.summary())
        for row in self.layers:
            if row["kind"] == "weight" and row["kept"] == 0:
                self.warn(f"{row['name']} lost all its weights: no signal passes this layer")
        if self.masks:
            for message in effective.warnings():
                self.warn(message)

    def apply_isometry(self) -> None:
        """Run the configured isometry step; one that returns None (``none``) changed nothing and has no stage."""
        cfg = self.cfg.isometry
        t = time.time()
        step = isometry.ISOMETRY.options(cfg)
        result = isometry.ISOMETRY.get(cfg.name, "isometry")(self.model, self.masks, **step.settings())
        if result is None:
            return
        self.extra["isometry_time_s"] = time.time() - t
        level = result.get("level", "kernel")
        self.extra.update(isometry_level=level, ai_objective_before=result["total_before"],
                          ai_objective_after=result["total_after"])
        # Long format: the summed objective along the steps (layer "total"), then each layer's before and after.
        last = result["curve"][-1][0]
        rows = [{"step": st, "layer": "total", "level": level, "objective": v} for st, v in result["curve"]]
        rows += [{"step": st, "layer": name, "level": level, "objective": v}
                 for st, values in ((0, result["objective_before"]), (last, result["objective_after"]))
                 for name, v in zip(result["layers"], values)]
        records.write_csv(self.out / records.ISOMETRY, rows)
        for row in self.layers:
            if row["name"] in result["layers"]:
                i = result["layers"].index(row["name"])
                row.update(ai_objective_before=result["objective_before"][i], ai_objective_after=result["objective_after"][i])
        records.write_csv(self.out / records.LAYERS, self.layers)
        self.stage_hook("isometry")

    def warn(self, message: str) -> None:
        log.warning(message)
        self.warnings.append(message)

    def execute(self) -> dict[str, Any]:
        """Do the run (or finish an interrupted one) and return its summary."""
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        records.clear_complete(self.out)
        splits, score = load_splits(cfg, self.device)
        self.in_shape, self.num_classes = splits.in_shape, splits.num_classes
        notes: list[str] = []
        state = self.resume(splits, notes) if cfg.resume else None
        if state is not None:
            self.select_signal_examples(splits)
        else:
            self.spectra, self.signal_rows, self.extra = {}, [], {}
            self.prepare(splits, score)
            state = train.TrainState()
            self.optimizer = train.make_optimizer(self.model, cfg.train)
            self.sampler = train.BatchSampler(splits.x_train.shape[0], cfg.train.batch_size, cfg.train.shuffle_seed,
                                              self.device)
        for note in notes:
            self.warn(note)
        # A final checkpoint (killed before COMPLETE) already holds the final-stage measurements.
        finished_before = state.status != "running"
        t = time.time()
        progress = None if cfg.progress == "auto" else bool(cfg.progress)
        state = train.fit(self.model, self.params, self.masks, splits, cfg.train, state, self.optimizer, self.sampler,
                          on_eval=self.write_progress, on_checkpoint=self.checkpoint,
                          on_step=self.track_signal if cfg.signal.every else None, progress=progress)
        self.extra["train_time_s"] = self.extra.get("train_time_s", 0.0) + time.time() - t
        self.extra["pruned_nonzero"] = self.pruned_nonzero()
        if state.status == "completed" and not finished_before:
            self.stage_hook("final", state.step)
        self.checkpoint(state)
        self.finish(state)
        summary = self.summary(state)
        records.write_json(self.out / records.SUMMARY, summary)
        # A diverged run is finished too: run again, it would diverge at the same step, so sweeps skip it.
        if state.status in ("completed", "diverged"):
            records.mark_complete(self.out)
        return summary

    def resume(self, splits: data.Splits, notes: list[str]) -> train.TrainState | None:
        """Restore the last good checkpoint (the previous one if the last is damaged); None: start from scratch.

        A checkpoint that does not load or does not fit is renamed aside (never deleted), and ``notes`` says so.
        """
        spectra = self.out / records.SPECTRA
        if spectra.is_file() and any((self.out / n).is_file() for n in (CHECKPOINT, records.PREVIOUS_CHECKPOINT)):
            try:
                self.spectra = records.read_npz(spectra)
            except records.DamagedRecord as exc:
                # The raw spectra of the earlier stages cannot be measured again without redoing them.
                aside = records.set_aside(spectra)
                notes.append(f"{exc}; set aside as {aside.name}; starting from scratch")
                return None
        for name in (CHECKPOINT, records.PREVIOUS_CHECKPOINT):
            path = self.out / name
            if not path.is_file():
                continue
            try:
                state = self.restore(records.load_torch(path, self.device), splits)
            except Exception as exc:  # noqa: BLE001 - whatever is wrong with it, this checkpoint cannot be resumed
                if not isinstance(exc, records.DamagedRecord):  # it loaded, but does not fit this run
                    exc = records.DamagedRecord(path, exc)
                aside = records.set_aside(path)
                notes.append(f"{exc}; set aside as {aside.name}")
                continue
            if notes:
                notes.append(f"resumed from {name} (step {state.step})")
            log.info("resuming from step %d", state.step)
            return state
        if notes:
            notes.append("no good checkpoint left: starting from scratch")
        return None

    def restore(self, ckpt: dict[str, Any], splits: data.Splits) -> train.TrainState:
        """Rebuild the network, masks, optimiser, sampler and random states from a loaded checkpoint."""
        cfg = self.cfg
        model = build(cfg, splits).to(self.device)
        model.load_state_dict(ckpt["model"])
        params = pruning.prunable_parameters(model, pruning.make_pruner(cfg.prune).options.include_bias)
        masks = {k: v.to(self.device) for k, v in ckpt["masks"].items()} or None
        if masks and (masks.keys() != params.keys() or any(masks[k].shape != params[k].shape for k in masks)):
            raise ValueError("its masks do not fit the network")
        optimizer = train.make_optimizer(model, cfg.train)
        optimizer.load_state_dict(ckpt["optimizer"])
        sampler = train.BatchSampler(splits.x_train.shape[0], cfg.train.batch_size, cfg.train.shuffle_seed, self.device)
        sampler.load_state_dict(ckpt["sampler"])
        state = train.TrainState(**ckpt["train_state"])
        layers, warnings, extra = list(ckpt["layers"]), list(ckpt["warnings"]), dict(ckpt["extra"])
        signal_rows = list(ckpt.get("signal_rows", []))
        # Only now that everything loaded does the run take it over (global random states last).
        train.set_rng_state(numpy_rng(ckpt.get("rng")))
        self.model, self.params, self.masks, self.optimizer, self.sampler = model, params, masks, optimizer, sampler
        self.layers, self.warnings, self.extra, self.signal_rows = layers, warnings, extra, signal_rows
        return state

    def pruned_nonzero(self) -> int:
        """How many pruned entries are not exactly zero (0 unless masking is broken)."""
        if not self.masks:
            return 0
        return int(sum(int((self.params[k].detach()[~m] != 0).sum()) for k, m in self.masks.items()))

    def finish(self, state: train.TrainState) -> None:
        """Figures of the run (drawn from its records), unless ``figures=false``."""
        if not self.cfg.figures:
            return
        from sparseprop.runner import plots

        try:
            plots.run_figures(self.out)
        except Exception as exc:  # noqa: BLE001 - a figure must never cost the run its results
            self.warn(f"could not draw figures: {type(exc).__name__}: {exc}")
