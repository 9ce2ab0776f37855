"""One run as one straight line: config → data → model → init → prune → isometry → train → evaluate → records."""

from __future__ import annotations

import logging
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from sparseprop import __version__, data, inits, models, pruning, records, train
from sparseprop.errors import DataError

log = logging.getLogger("sparseprop")
CHECKPOINT = records.CHECKPOINT


def plain_rng(state: dict[str, Any]) -> dict[str, Any]:
    """The RNG states of ``train.rng_state`` with NumPy's array as a tensor, so ``weights_only`` loading accepts them."""
    name, keys, pos, has_gauss, gauss = state["numpy"]
    return {**state, "numpy": [str(name), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos),
                               int(has_gauss), float(gauss)]}


def numpy_rng(state: dict[str, Any] | None) -> dict[str, Any] | None:
    """``plain_rng``'s inverse: the states as ``train.set_rng_state`` takes them."""
    if not state:
        return state
    name, keys, pos, has_gauss, gauss = state["numpy"]
    return {**state, "numpy": (name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss),
            "python": (state["python"][0], tuple(state["python"][1]), state["python"][2])}


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# Run ``seed`` draws from generators seeded 1_000_003·seed + k, k < STREAMS (0 init, 1 pruning).
SEED_MULTIPLIER, STREAMS = 1_000_003, 2
# The seeds torch.Generator.manual_seed accepts: any 64-bit integer, signed or unsigned.
GENERATOR_SEEDS = (-(2**63), 2**64 - 1)


def stream(seed: int, k: int) -> torch.Generator:
    """Independent CPU generator ``k`` of run ``seed`` (0 init, 1 pruning)."""
    return torch.Generator().manual_seed(SEED_MULTIPLIER * int(seed) + k)


def seed_range() -> tuple[int, int]:
    """The smallest and largest ``seed`` whose every stream seed is one torch's generators accept."""
    lo, hi = GENERATOR_SEEDS
    return -(-lo // SEED_MULTIPLIER), (hi - (STREAMS - 1)) // SEED_MULTIPLIER


def build(cfg: DictConfig, splits: Any) -> torch.nn.Module:
    """The configured network for inputs of ``splits.in_shape`` and ``splits.num_classes`` (CPU, not initialised)."""
    act = models.build_activation(cfg.activation.name, **models.ACTIVATIONS.options(cfg.activation).settings())
    opts = models.ARCHS.options(cfg.arch).settings()
    return models.build_model(cfg.arch.name, splits.in_shape, splits.num_classes, act, **opts)


def load_splits(cfg: DictConfig, device: torch.device) -> tuple[data.Splits, data.Splits]:
    """Training splits and the splits used for scoring (another dataset for transfer pruning)."""
    ds = data.DATASETS.options(cfg.dataset)
    opts = ds.settings()
    root = opts.pop("root", None)
    splits = data.load(ds.name, root, device, **opts)
    score_name = scoring_dataset(cfg)
    if score_name == ds.name:
        return splits, splits
    score = data.load(score_name, root, device, **opts)
    if score.in_shape != splits.in_shape or score.num_classes != splits.num_classes:
        raise DataError(f"prune.dataset={score_name} has inputs {score.in_shape} and {score.num_classes} classes, "
                        f"but dataset={ds.name} has {splits.in_shape} and {splits.num_classes}: they must match")
    return splits, score


def scoring_dataset(cfg: DictConfig) -> str:
    """The dataset whose training split a data-driven criterion scores on (``prune.dataset``, else the training set)."""
    return OmegaConf.select(cfg, "prune.dataset", default=None) or cfg.dataset.name


def meta_model(cfg: DictConfig, shape: data.DatasetShape) -> torch.nn.Module:
    """The configured network laid out on the meta device: its parameters have shapes but no memory."""
    from types import SimpleNamespace

    with torch.device("meta"):
        return build(cfg, SimpleNamespace(in_shape=shape.in_shape, num_classes=shape.num_classes))


def activations_per_example(model: torch.nn.Module, in_shape: tuple[int, ...]) -> int:
    """Values the forward pass of one example produces: every layer's output and every activation's."""
    if isinstance(model, models.MLP):
        # Each layer's pre-activation, and the activation of each hidden layer (the last gives logits).
        return sum(layer.out_features for layer in model.layers) + sum(l.out_features for l in model.layers[:-1])
    return traced_activations(model, in_shape)


def traced_activations(model: torch.nn.Module, in_shape: tuple[int, ...]) -> int:
    """activations_per_example for any network: a forward pass on the meta device counting every leaf's output.

    The first meta forward pass imports torch's decompositions (about a second), so MLPs are counted directly.
    """
    total = 0

    def count(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel()

    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            model(torch.empty(1, *in_shape, device="meta"))
    finally:
        for h in hooks:
            h.remove()
    return total


# Evaluation and SNIP scoring go through the network this many examples at a time (train.evaluate,
# pruning.connection_sensitivity).
EVAL_CHUNK = 10_000


def memory_estimate(cfg: DictConfig, model: torch.nn.Module, shape: data.DatasetShape,
                    sizes: tuple[int, int, int]) -> dict[str, int]:
    """Bytes a run needs at its peak, by part: a float32 estimate, generous rather than tight.

    model: the parameters, their gradients, an optimiser buffer, the float masks and SNIP's two
    score tensors (6 copies); data: the three splits, twice (loading holds a second copy while it
    standardises); activations: one chunk of SNIP scoring or of training with its backward pass,
    or one evaluation chunk; signal: the stored per-example singular values and the float64
    working set of one chunk (signal.py bounds it at 256 MiB, more when one example needs more).
    """
    from sparseprop import signal

    params = sum(p.numel() for p in model.parameters())
    in_features = math.prod(shape.in_shape)
    per_example = activations_per_example(model, shape.in_shape)
    n_train = sizes[0]
    scored = pruning.make_pruner(cfg.prune).scored_examples(n_train)
    batch = max(2 * cfg.train.batch_size, 2 * min(EVAL_CHUNK, scored),
                min(EVAL_CHUNK, max(sizes)))
    out = {"model": 4 * 6 * params, "data": 4 * 2 * sum(sizes) * in_features, "activations": 4 * per_example * batch,
           "signal": 0}
    if (cfg.signal.stages or cfg.signal.every) and isinstance(model, models.MLP):
        widths = [layer.out_features for layer in model.layers]
        n_io = n_train if cfg.signal.examples == "all" else min(n_train, int(cfg.signal.examples))
        n_layer = min(n_train, int(cfg.signal.layer_examples))
        one = 8 * (in_features + 4 * sum(widths) + 3 * max(widths) ** 2)
        stored = 8 * (n_io * min(widths[-1], in_features) + n_layer * sum(min(l.in_features, l.out_features) for l in model.layers))
        out["signal"] = stored + 2 * max(signal._CHUNK_BYTES, one)
    return out


def available_memory(device: torch.device) -> int | None:
    """Bytes free for a run on ``device`` (the CUDA device's free memory, or the host's available memory
    within this process's cgroup limit); None if it cannot be told."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    free = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            free = None
    try:  # a container's own limit (cgroup v2) can be far below the machine's
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            room = max(0, int(limit) - used)
            free = room if free is None else min(free, room)
    except (OSError, ValueError):
        pass
    return free


# Quantiles of each tensor's saliencies in layers.csv (linear interpolation between order statistics).
SALIENCY_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def layer_table(params: dict[str, torch.nn.Parameter], masks: pruning.Masks | None,
                sal: dict[str, torch.Tensor] | None) -> list[dict[str, Any]]:
    """One row per prunable tensor: shape, parameter and kept counts, sparsity and saliency summary."""
    rows = []
    for i, (name, p) in enumerate(params.items()):
        kept = int(masks[name].sum()) if masks else p.numel()
        row: dict[str, Any] = {"index": i, "name": name, "kind": name.rsplit(".", 1)[-1],
                               "shape": "x".join(str(s) for s in p.shape), "parameters": p.numel(), "kept": kept,
                               "kept_fraction": kept / p.numel(), "sparsity": 1.0 - kept / p.numel()}
        if sal is not None:
            s = sal[name].detach().double().cpu().numpy().ravel()
            q05, q25, q50, q75, q95 = np.quantile(s, SALIENCY_QUANTILES)
            row.update(saliency_sum=float(s.sum()), saliency_mean=float(s.mean()), saliency_q05=float(q05),
                       saliency_q25=float(q25), saliency_median=float(q50), saliency_q75=float(q75),
                       saliency_q95=float(q95), saliency_max=float(s.max()))
        rows.append(row)
    return rows


def library_versions() -> dict[str, str]:
    """Versions that decide the numbers a run produces."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    return {"sparseprop": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": installed("torchvision"), "hydra": installed("hydra-core")}


class Run:
    """State and records of one run in ``out_dir``; ``execute`` does the whole line, resuming if it can."""

    def __init__(self, cfg: DictConfig, out_dir: str | Path) -> None:
        self.cfg, self.out = cfg, Path(out_dir)
        self.t0 = time.time()
        self.device = resolve_device(cfg.device)
        if cfg.threads > 0:
            torch.set_num_threads(int(cfg.threads))
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
            "sparsity_target": cfg.prune.sparsity, "seed": cfg.seed,
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
        records.write_csv(self.out / "metrics.csv", state.metrics, columns=records.METRIC_COLUMNS)
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
        records.write_json(self.out / "summary.json", self.summary(state))
        records.write_csv(self.out / "metrics.csv", state.metrics, columns=records.METRIC_COLUMNS)

    # ---- the line ------------------------------------------------------------------------------

    def prepare(self, splits: data.Splits, score: data.Splits) -> None:
        """Initialise, prune and (optionally) apply approximate isometry: everything before training."""
        cfg = self.cfg
        model = build(cfg, splits)
        inits.initialise(model, cfg.init.name, generator=stream(cfg.seed, 0),
                         **inits.INITS.options(cfg.init).settings())
        self.model = model.to(self.device)
        pruner = pruning.make_pruner(cfg.prune)
        self.params = pruning.prunable_parameters(self.model, pruner.options.include_bias)
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
        for row in self.layers:
            if row["kind"] == "weight" and row["kept"] == 0:
                self.warn(f"{row['name']} lost all its weights: no signal passes this layer")
        records.write_csv(self.out / "layers.csv", self.layers)
        self.stage_hook("pruned")
        self.apply_isometry()

    def apply_isometry(self) -> None:
        """Run the configured isometry step (``none`` does nothing)."""
        from sparseprop import isometry

        cfg = self.cfg.isometry
        if cfg.name == "none":
            return
        t = time.time()
        step = isometry.ISOMETRY.options(cfg)
        result = isometry.ISOMETRY.get(cfg.name, "isometry")(self.model, self.masks, **step.settings())
        self.extra["isometry_time_s"] = time.time() - t
        if result is not None:
            self.extra.update(ai_objective_before=result["total_before"], ai_objective_after=result["total_after"])
            records.write_csv(self.out / "isometry.csv", [{"step": st, "objective": v} for st, v in result["curve"]])
            for row in self.layers:
                if row["name"] in result["layers"]:
                    i = result["layers"].index(row["name"])
                    row.update(ai_objective_before=result["objective_before"][i], ai_objective_after=result["objective_after"][i])
            records.write_csv(self.out / "layers.csv", self.layers)
        self.stage_hook("isometry")

    def stage_hook(self, stage: str, step: int = 0) -> None:
        """Measure signal propagation at ``stage`` if asked to, and record it."""
        if stage not in self.cfg.signal.stages:
            return
        from sparseprop.signal import measure as propagation

        t = time.time()
        m = propagation.measure(self.model, self.x_io, self.x_layer, stage, step)
        self.extra[f"signal_{stage}_time_s"] = time.time() - t
        for w in m.warnings:
            self.warn(w)
        self.signal_rows += m.rows
        self.spectra.update(m.raw)
        self.extra.update(propagation.headline(self.signal_rows))
        self.write_signal()
        if m.raw:
            records.write_npz(self.out / "spectra.npz", self.spectra)

    def track_signal(self, step: int) -> None:
        """During training: input–output and weight spectra every ``signal.every`` steps (statistics only)."""
        every = self.cfg.signal.every
        if every and step % every == 0:
            from sparseprop.signal import measure as propagation

            m = propagation.measure(self.model, self.x_io, None, "train", step, keep_raw=False)
            for w in m.warnings:
                self.warn(w)
            self.signal_rows += m.rows
            self.write_signal()

    def write_signal(self) -> None:
        from sparseprop.signal.measure import SIGNAL_COLUMNS

        records.write_csv(self.out / "signal.csv", self.signal_rows, columns=SIGNAL_COLUMNS)

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
        if cfg.signal.stages or cfg.signal.every:
            from sparseprop.signal.measure import choose_examples

            n = splits.x_train.shape[0]
            io_idx, layer_idx = choose_examples(n, cfg.signal.examples), choose_examples(n, cfg.signal.layer_examples)
            self.x_io, self.x_layer = splits.x_train[io_idx.to(self.device)], splits.x_train[layer_idx.to(self.device)]
            # Which training examples the raw spectra belong to, so they can be recomputed independently.
            self.spectra.update({"examples/io": io_idx.numpy(), "examples/layer": layer_idx.numpy()})
        notes: list[str] = []
        state = self.resume(splits, notes) if cfg.resume else None
        if state is None:
            fresh_spectra = {k: v for k, v in self.spectra.items() if k.startswith("examples/")}
            self.spectra, self.signal_rows, self.extra = fresh_spectra, [], {}
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
        records.write_json(self.out / "summary.json", summary)
        # A diverged run is finished too: run again, it would diverge at the same step, so sweeps skip it.
        if state.status in ("completed", "diverged"):
            records.mark_complete(self.out)
        return summary

    def resume(self, splits: data.Splits, notes: list[str]) -> train.TrainState | None:
        """Restore the last good checkpoint (the previous one if the last is damaged); None: start from scratch.

        A checkpoint that does not load or does not fit is renamed aside (never deleted), and ``notes`` says so.
        """
        spectra = self.out / "spectra.npz"
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
