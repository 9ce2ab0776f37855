"""layers.csv: one row per prunable tensor of a run, with its sparsity and saliency summary."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

# Quantiles of each tensor's saliencies in layers.csv (linear interpolation between order statistics).
SALIENCY_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def layer_table(params: dict[str, torch.nn.Parameter], masks: dict[str, torch.Tensor] | None,
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
