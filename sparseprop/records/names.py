"""The names of the files a run writes: every module that reads or writes a run directory takes them from here."""

from __future__ import annotations

# The marker a finished run writes last.
COMPLETE = "COMPLETE"
# The run's outcome and headline figures (``status``, ``reason``, errors, timings).
SUMMARY = "summary.json"
# One row per evaluation: step, split, metric name and value.
METRICS = "metrics.csv"
METRIC_COLUMNS = ["step", "split", "name", "value"]
# One row per prunable tensor: its size and what pruning kept.
LAYERS = "layers.csv"
# The signal-propagation statistics (network, layer and weight scopes, by stage).
SIGNAL = "signal.csv"
# The approximate-isometry optimisation, step by step.
ISOMETRY = "isometry.csv"
# The singular values behind signal.csv, as arrays.
SPECTRA = "spectra.npz"
CHECKPOINT = "checkpoint.pt"
# The checkpoint before the last one, kept so a damaged checkpoint costs one interval, not the run.
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"
# Hydra's job log (``${hydra.job.name}.log``): emptied, never deleted, by ``resume=false``.
LOG = "train.log"
# Held (fcntl.flock) by the one process writing a run directory; it holds that process's id.
LOCK = ".sparseprop.lock"
# The job's Hydra records, written by sparseprop once it holds the directory: the composed config, Hydra's own
# config and the job's overrides.
HYDRA_DIR = ".hydra"
HYDRA_CONFIG = f"{HYDRA_DIR}/config.yaml"
HYDRA_SETTINGS = f"{HYDRA_DIR}/hydra.yaml"
HYDRA_OVERRIDES = f"{HYDRA_DIR}/overrides.yaml"
# What Hydra writes at the top of a sweep directory: the sweep's config, its jobs' overrides included.
SWEEP_CONFIG = "multirun.yaml"
# The figures a run draws of itself, each as PNG and PDF (sparseprop.runner.plots.run_figures).
FIGURES = ("training_curves", "layer_kept", "jsv_histogram", "layer_jsv", "layer_spectra", "jsv_training", "isometry_curve")
FIGURE_FORMATS = ("png", "pdf")
# Every record file a run writes besides its figures, its log, its lock and .hydra/.
DATA_FILES = (SUMMARY, METRICS, LAYERS, SIGNAL, ISOMETRY, SPECTRA, CHECKPOINT, PREVIOUS_CHECKPOINT, COMPLETE)


def record_files() -> tuple[str, ...]:
    """The exact names of the files a run writes and ``resume=false`` deletes (its log is emptied instead)."""
    return (*DATA_FILES, *(f"{stem}.{ext}" for stem in FIGURES for ext in FIGURE_FORMATS))
