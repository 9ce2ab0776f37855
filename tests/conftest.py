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
from torch import nn

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


class TinyConvBN(models.Network):
    """A small conv + BatchNorm network that implements the model contract, for tests of the generic paths.

    conv1 (1→3, 3x3) → BatchNorm → tanh → conv2 (3→4, 3x3, stride 2, no bias) → BatchNorm → tanh → fc (→ 5).
    Its weight layers are conv1, conv2 and fc in that order; BatchNorm parameters are never among them.
    """

    def __init__(self, in_shape=(1, 7, 7), num_outputs: int = 5) -> None:
        super().__init__()
        self.in_shape, self.num_outputs = tuple(in_shape), num_outputs
        side = (in_shape[1] - 2 - 3) // 2 + 1
        self.conv1, self.bn1 = nn.Conv2d(in_shape[0], 3, 3), nn.BatchNorm2d(3)
        self.conv2, self.bn2 = nn.Conv2d(3, 4, 3, stride=2, bias=False), nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * side * side, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.bn1(self.conv1(x)))
        x = torch.tanh(self.bn2(self.conv2(x)))
        return self.fc(x.flatten(1))

    def weight_layers(self) -> list[tuple[str, nn.Module]]:
        return [("conv1", self.conv1), ("conv2", self.conv2), ("fc", self.fc)]


def tiny_conv_bn(seed: int = 0, init: str = "vs_l", dtype: torch.dtype = torch.float32) -> TinyConvBN:
    """An initialised TinyConvBN with non-zero biases and BatchNorm running statistics and affine parameters far
    from their defaults, so that evaluation mode and training mode give different outputs."""
    net = TinyConvBN()
    gen = torch.Generator().manual_seed(seed)
    inits.initialise(net, init, generator=gen)
    with torch.no_grad():
        net.conv1.bias.normal_(0, 0.1, generator=gen)
        net.fc.bias.normal_(0, 0.1, generator=gen)
        for bn in (net.bn1, net.bn2):
            bn.running_mean.normal_(0, 0.5, generator=gen)
            bn.running_var.uniform_(0.5, 2.0, generator=gen)
            bn.weight.uniform_(0.5, 1.5, generator=gen)
            bn.bias.normal_(0, 0.2, generator=gen)
    return net.to(dtype)


def contract_net(kind: str, seed: int = 0, init: str = "vs_l", dtype: torch.dtype = torch.float64) -> models.Network:
    """One of the two networks every contract test runs over: ``mlp`` (the fast paths) or ``conv_bn`` (the generic ones)."""
    if kind == "mlp":
        return tiny_mlp(sizes=(12, 10, 8, 5), init=init, seed=seed, dtype=dtype)
    return tiny_conv_bn(seed=seed, init=init, dtype=dtype)


CONTRACT_NETS = ["mlp", "conv_bn"]


@pytest.fixture(params=CONTRACT_NETS)
def net_kind(request) -> str:
    """Parametrises a test over the tiny MLP and the tiny conv + BatchNorm net."""
    return request.param


def example_inputs(model: models.Network, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` standard-normal examples of the model's input shape, in its dtype."""
    dtype = next(model.parameters()).dtype
    return torch.randn(n, *model.in_shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


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
