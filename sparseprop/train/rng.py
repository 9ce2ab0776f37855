"""The global random-number states (Python, NumPy, torch CPU and CUDA) a checkpoint saves and a resume restores."""

from __future__ import annotations

from typing import Any

import torch


def rng_state() -> dict[str, Any]:
    """The global random-number states (Python, NumPy, torch CPU and CUDA), saved with a checkpoint."""
    import random

    import numpy as np

    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict[str, Any] | None) -> None:
    """Restore the global random-number states saved by ``rng_state`` (nothing for older checkpoints)."""
    import random

    import numpy as np

    if not state:
        return
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
