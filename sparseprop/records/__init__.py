"""Everything a run writes goes through here: atomic files under the run's output directory.

``names`` is the table of the files a run writes, ``files`` writes and reads them, ``rundir`` holds a run directory
for one process (lock, temporaries, completion marker). This module gathers them under one name.
"""

from __future__ import annotations

from sparseprop.records.files import (DamagedRecord, RecordsError, atomic_write_bytes, atomic_write_text,
                                      check_regular, create_temporary, load_torch, os_error, overwrite_json, read_csv, read_json,
                                      read_npz, read_summary, save_torch, temporary_name, write_csv, write_json,
                                      write_npz)
from sparseprop.records.names import (CHECKPOINT, COMPLETE, DATA_FILES, FIGURE_FORMATS, FIGURES, HYDRA_CONFIG,
                                      HYDRA_DIR, HYDRA_OVERRIDES, HYDRA_SETTINGS, ISOMETRY, LAYERS, LOCK, LOG,
                                      METRIC_COLUMNS, METRICS, PREVIOUS_CHECKPOINT, SIGNAL, SPECTRA, SUMMARY,
                                      SWEEP_CONFIG, record_files)
from sparseprop.records.rundir import (RunBusy, clear_complete, is_complete, lock_holder, mark_complete,
                                       remove_temporaries, run_lock, set_aside)

__all__ = [
    "DamagedRecord", "RecordsError", "RunBusy", "atomic_write_bytes", "atomic_write_text", "check_regular",
    "create_temporary", "load_torch", "os_error", "read_csv", "read_json", "read_npz", "read_summary", "save_torch",
    "overwrite_json", "temporary_name", "write_csv", "write_json", "write_npz",
    "CHECKPOINT", "COMPLETE", "DATA_FILES", "FIGURE_FORMATS", "FIGURES", "HYDRA_CONFIG", "HYDRA_DIR",
    "HYDRA_OVERRIDES", "HYDRA_SETTINGS", "ISOMETRY", "LAYERS", "LOCK", "LOG", "METRIC_COLUMNS", "METRICS",
    "PREVIOUS_CHECKPOINT", "SIGNAL", "SPECTRA", "SUMMARY", "SWEEP_CONFIG", "record_files",
    "clear_complete", "is_complete", "lock_holder", "mark_complete", "remove_temporaries", "run_lock", "set_aside",
]
