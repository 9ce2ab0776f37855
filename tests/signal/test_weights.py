"""Data-free weight spectra and isometry residuals of the masked weight matrices, against NumPy."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from sparseprop import models
from sparseprop.signal import isometry_residual, weight_singular_values
from tests.conftest import contract_net


def test_weight_spectra_and_isometry_residual_match_numpy() -> None:
    torch.manual_seed(6)
    # Linear(7, 3) is wide: M Mᵀ − I is 3 × 3 while Mᵀ M − I would be 7 × 7, so the numbers pin
    # down the orientation.
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Flatten(), nn.Linear(4 * 2 * 2, 7), nn.Linear(7, 3))
    weights = [model[0].weight, model[2].weight, model[3].weight]
    svs, residuals = weight_singular_values(model), isometry_residual(model)
    assert len(svs) == len(residuals) == 3
    for w, sv, res in zip(weights, svs, residuals):
        m = w.detach().double().numpy().reshape(w.shape[0], -1)
        np.testing.assert_allclose(sv.numpy(), np.linalg.svd(m, compute_uv=False), rtol=1e-10)
        np.testing.assert_allclose(res, np.linalg.norm(m @ m.T - np.eye(m.shape[0])), rtol=1e-10)


def test_weight_spectra_of_contract_nets_are_their_stated_layers_against_numpy(net_kind) -> None:
    model = contract_net(net_kind, seed=8)
    weights = [w for _, w in models.weight_parameters(model)]
    svs, residuals = weight_singular_values(model), isometry_residual(model)
    assert len(svs) == len(residuals) == len(weights) == 3
    for w, sv, res in zip(weights, svs, residuals):
        m = w.detach().double().numpy().reshape(w.shape[0], -1)
        np.testing.assert_allclose(sv.numpy(), np.linalg.svd(m, compute_uv=False), rtol=1e-10)
        np.testing.assert_allclose(res, np.linalg.norm(m @ m.T - np.eye(m.shape[0])), rtol=1e-10)
