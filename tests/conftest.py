"""Shared fixtures: tiny models and data, and a helper to run the installed console script."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import torch

from sparseprop import inits, models
from sparseprop.runner import plots

REPO = Path(__file__).resolve().parent.parent


def tiny_mlp(activation: str = "tanh", sizes=(12, 10, 8, 5), init: str = "vs_l", seed: int = 0,
             dtype: torch.dtype = torch.float32) -> models.MLP:
    """A small initialised MLP with the given layer sizes (input, hidden..., classes)."""
    net = models.MLP(sizes[0], list(sizes[1:-1]), sizes[-1], models.build_activation(activation))
    inits.initialise(net, init, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for layer in net.layers:  # non-zero biases so bias gradients and saliencies are exercised
            layer.bias.normal_(0, 0.1, generator=torch.Generator().manual_seed(seed + 7))
    return net.to(dtype)


def sparseprop_exe() -> str:
    """The installed console script (the one next to this interpreter)."""
    exe = Path(sys.executable).parent / "sparseprop"
    return str(exe) if exe.exists() else shutil.which("sparseprop") or "sparseprop"


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `sparseprop ARGS...` in a subprocess and capture its output."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sparseprop_exe(), *args], cwd=cwd or REPO, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def mnist_root() -> Path | None:
    """The configured data root if it holds MNIST, else None."""
    root = Path(os.environ.get("SPARSEPROP_DATA", REPO / "data"))
    raw = root / "MNIST" / "raw"
    return root if raw.is_dir() and any(raw.iterdir()) else None


@pytest.fixture(autouse=True)
def _threads():
    """Tests run single-threaded: small tensors are faster so and results do not depend on the core count."""
    torch.set_num_threads(1)
    yield


@pytest.fixture
def no_figures(monkeypatch):
    """Figures cost a second per run and are tested elsewhere."""
    monkeypatch.setattr(plots, "run_figures", lambda out: None)


@contextmanager
def read_only_view(src: Path, view: Path) -> Iterator[Path]:
    """``src`` bind-mounted read-only at ``view`` (made here) for the block; skips the test where mounting is not allowed."""
    view.mkdir()
    if subprocess.run(["mount", "-o", "bind,ro", str(src), str(view)], capture_output=True).returncode != 0:
        pytest.skip("this machine does not allow bind mounts")
    try:
        yield view
    finally:
        subprocess.run(["umount", str(view)], check=True)
