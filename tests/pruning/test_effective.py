"""The effective architecture against a brute-force reachability search over an explicit graph of units."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparseprop import models
from sparseprop.pruning.effective import effective_architecture
from sparseprop.pruning.masks import random_masks
from tests.conftest import tiny_conv_bn, tiny_mlp


class Graph:
    """Nodes and directed edges; edges of a weight carry (layer, output unit, input unit)."""

    def __init__(self) -> None:
        self.edges: list[tuple[str, str, tuple | None]] = []

    def edge(self, a: str, b: str, weight: tuple | None = None) -> None:
        self.edges.append((a, b, weight))

    def reach(self, start: set[str], backward: bool = False) -> set[str]:
        seen, todo = set(start), list(start)
        while todo:
            node = todo.pop()
            for a, b, _ in self.edges:
                src, dst = (b, a) if backward else (a, b)
                if src == node and dst not in seen:
                    seen.add(dst)
                    todo.append(dst)
        return seen


def weight_edges(g: Graph, layer: str, mask: torch.Tensor, src: str, dst: str, src_units=None) -> None:
    """Edges of a linear (2-d mask) or conv (any kept tap) layer from nodes ``src:i`` to ``dst:o``."""
    kept = mask.flatten(2).any(2) if mask.dim() > 2 else mask
    for o in range(kept.shape[0]):
        for i in range(kept.shape[1]):
            if kept[o, i]:
                g.edge(f"{src}:{i}", f"{dst}:{o}", (layer, o, i))


def brute_force(g: Graph, inputs: set[str], outputs: set[str], masks: dict[str, torch.Tensor]):
    """Effective masks and widths from the graph: a kept entry whose input node the input reaches and whose
    output node reaches an output."""
    fwd, bwd = g.reach(inputs), g.reach(outputs, backward=True)
    eff = {k: torch.zeros_like(m, dtype=torch.bool) for k, m in masks.items()}
    for a, b, w in g.edges:
        if w is not None and a in fwd and b in bwd:
            layer, o, i = w
            eff[layer][o, i] = masks[layer][o, i].bool()
    return eff, fwd & bwd


def mlp_graph(net: models.MLP, masks):
    g = Graph()
    names = [f"layers.{i}.weight" for i in range(len(net.layers))]
    for l, name in enumerate(names):
        weight_edges(g, name, masks[name], f"x{l}", f"x{l + 1}")
    inputs = {f"x0:{i}" for i in range(net.layers[0].in_features)}
    outputs = {f"x{len(names)}:{o}" for o in range(net.layers[-1].out_features)}
    return g, inputs, outputs


def check(net, masks, g, inputs, outputs, layer_nodes):
    ours = effective_architecture(net, masks)
    eff, on_path = brute_force(g, inputs, outputs, masks)
    for layer, node in zip(ours.layers, layer_nodes):
        assert torch.equal(layer.effective, eff[layer.param]), layer.name
        assert layer.effective_units == sum(1 for n in on_path if n.split(":")[0] == node), layer.name
        assert layer.kept == int(masks[layer.param].sum())
    assert ours.effective_params == sum(int(e.sum()) for e in eff.values())
    return ours


def weight_masks(net, keep_fraction: float, seed: int):
    params = {k: p for k, p in models.prunable_parameters(net, include_bias=False).items()}
    keep = max(1, int(keep_fraction * sum(p.numel() for p in params.values())))
    return random_masks(params, keep, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("keep_fraction", [0.04, 0.08, 0.15, 1.0])
@pytest.mark.parametrize("seed", range(4))
def test_mlp_matches_brute_force(keep_fraction, seed):
    net = tiny_mlp(sizes=(9, 8, 7, 6, 4), seed=seed)
    masks = weight_masks(net, keep_fraction, seed)
    g, inputs, outputs = mlp_graph(net, masks)
    ours = check(net, masks, g, inputs, outputs, ["x1", "x2", "x3", "x4"])
    if keep_fraction == 1.0:
        assert ours.widths == [8, 7, 6, 4] and ours.effective_params == ours.kept_weights


def test_sparse_mlp_has_dead_connections():
    # The brute-force comparison above must include masks where kept weights carry nothing.
    found = False
    for seed in range(4):
        net = tiny_mlp(sizes=(9, 8, 7, 6, 4), seed=seed)
        masks = weight_masks(net, 0.08, seed)
        ours = effective_architecture(net, masks)
        found |= 0 < ours.effective_params < ours.kept_weights
    assert found


def test_mlp_with_a_cut_layer_carries_nothing():
    net = tiny_mlp(sizes=(9, 8, 7, 4))
    masks = {k: torch.ones_like(p, dtype=torch.bool) for k, p in models.prunable_parameters(net, False).items()}
    masks["layers.1.weight"][:] = False
    ours = effective_architecture(net, masks)
    assert ours.effective_params == 0 and ours.widths == [0, 0, 0]
    assert ours.kept_weights == 9 * 8 + 7 * 4


def test_conv_bn_matches_brute_force():
    # TinyConvBN: conv1 (1->3) -> BN -> tanh -> conv2 (3->4, stride 2) -> BN -> tanh -> flatten (4 x 2 x 2) -> fc (->5).
    for seed in range(6):
        net = tiny_conv_bn(seed=seed)
        masks = weight_masks(net, 0.12, seed)
        g = Graph()
        weight_edges(g, "conv1.weight", masks["conv1.weight"], "in", "c1")
        weight_edges(g, "conv2.weight", masks["conv2.weight"], "c1", "c2")
        for c in range(4):  # flattening: every position of channel c is its own feature of fc
            for p in range(4):
                g.edge(f"c2:{c}", f"flat:{c * 4 + p}")
        weight_edges(g, "fc.weight", masks["fc.weight"], "flat", "out")
        check(net, masks, g, {"in:0"}, {f"out:{o}" for o in range(5)}, ["c1", "c2", "out"])


def resnet_graph(net, masks):
    """ResNet-(6n+2)'s channel graph: each block adds its second conv's channels to the shortcut's (option A:
    channel c of the input to channel c of the output, the appended channels from nothing)."""
    g = Graph()
    weight_edges(g, "conv1.weight", masks["conv1.weight"], "in", "conv1")
    for c in range(net.conv1.out_channels):
        g.edge(f"conv1:{c}", f"x0:{c}")
    nodes, x = ["conv1"], "x0"
    k = 0
    for s, stage in enumerate(net.stages):
        for b, block in enumerate(stage):
            name = f"stages.{s}.{b}"
            weight_edges(g, f"{name}.conv1.weight", masks[f"{name}.conv1.weight"], x, f"{name}.c1")
            weight_edges(g, f"{name}.conv2.weight", masks[f"{name}.conv2.weight"], f"{name}.c1", f"{name}.c2")
            k += 1
            for c in range(block.conv2.out_channels):
                g.edge(f"{name}.c2:{c}", f"x{k}:{c}")
            for c in range(block.conv1.in_channels):
                g.edge(f"{x}:{c}", f"x{k}:{c}")
            nodes += [f"{name}.c1", f"{name}.c2"]
            x = f"x{k}"
    weight_edges(g, "fc.weight", masks["fc.weight"], x, "out")
    inputs = {f"in:{c}" for c in range(net.in_shape[0])}
    return g, inputs, {f"out:{o}" for o in range(net.fc.out_features)}, nodes + ["out"]


@pytest.mark.parametrize("seed", range(3))
def test_resnet_with_shortcuts_matches_brute_force(seed):
    net = models.build_model("resnet", (2, 8, 8), 5, models.build_activation("relu"), depth=8)
    masks = weight_masks(net, 0.01, seed)
    g, inputs, outputs, nodes = resnet_graph(net, masks)
    ours = check(net, masks, g, inputs, outputs, nodes)
    # Shortcuts carry signal past blocks whose convolutions carry none: the brute force must see both.
    assert ours.effective_params > 0


def test_dense_lenet5_is_all_effective_and_masks_do_not_touch_the_model():
    net = models.build_model("lenet5", (1, 28, 28), 10, models.build_activation("relu"))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    ours = effective_architecture(net)
    assert ours.widths == [20, 50, 500, 10]
    assert ours.effective_params == ours.kept_weights == sum(m.weight.numel() for _, m in net.weight_layers())
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    assert all(p.requires_grad for p in net.parameters())


def test_grouped_convolution_reads_its_group_only():
    class Grouped(models.Network):
        def __init__(self) -> None:
            super().__init__()
            self.in_shape, self.num_outputs = (4, 5, 5), 3
            self.conv = nn.Conv2d(4, 6, 3, groups=2)
            self.fc = nn.Linear(6, 3)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).mean((2, 3)))

        def weight_layers(self):
            return [("conv", self.conv), ("fc", self.fc)]

    net = Grouped()
    masks = {"conv.weight": torch.ones(6, 2, 3, 3, dtype=torch.bool), "fc.weight": torch.ones(3, 6, dtype=torch.bool)}
    masks["fc.weight"][:, 3:] = False  # channels 3..5 (group 1) reach no output
    ours = effective_architecture(net, masks)
    assert ours.layers[0].effective_units == 3
    assert ours.layers[0].effective[:3].all() and not ours.layers[0].effective[3:].any()


@pytest.mark.parametrize("seed", range(3))
def test_effective_sparsity_and_collapse_from_the_brute_force_paths(seed):
    net = tiny_mlp(sizes=(9, 8, 7, 6, 4), seed=seed)
    masks = weight_masks(net, 0.08, seed)
    g, inputs, outputs = mlp_graph(net, masks)
    eff, _ = brute_force(g, inputs, outputs, masks)
    ours = effective_architecture(net, masks)
    weights = sum(m.numel() for m in masks.values())
    assert ours.nominal_sparsity == pytest.approx(1 - sum(int(m.sum()) for m in masks.values()) / weights, abs=1e-15)
    assert ours.effective_sparsity == pytest.approx(1 - sum(int(e.sum()) for e in eff.values()) / weights, abs=1e-15)
    assert ours.collapsed == [k for k, e in eff.items() if not e.any()]
    for layer in ours.layers:
        assert layer.record()["effective_sparsity"] == pytest.approx(1 - int(eff[layer.param].sum()) / layer.weights)


def test_warnings_name_a_collapsed_layer_and_a_gap_of_more_than_a_point():
    net = tiny_mlp(sizes=(9, 8, 7, 4))
    full = {k: torch.ones_like(p, dtype=torch.bool) for k, p in models.prunable_parameters(net, False).items()}
    assert effective_architecture(net, full).warnings() == []
    cut = {k: m.clone() for k, m in full.items()}
    cut["layers.1.weight"][:] = False
    messages = effective_architecture(net, cut).warnings()
    assert any(m.startswith("layer collapse: layers.0.weight, layers.1.weight, layers.2.weight") for m in messages)
    # One hidden unit of the first layer loses its only way out: its 9 input weights carry nothing (9/156 > 1 point).
    dead_end = {k: m.clone() for k, m in full.items()}
    dead_end["layers.1.weight"][:, 0] = False
    ours = effective_architecture(net, dead_end)
    assert ours.effective_sparsity - ours.nominal_sparsity == pytest.approx(9 / (72 + 56 + 28))
    assert any("effective sparsity" in m and "exceeds the nominal" in m for m in ours.warnings())
    assert ours.cut_units == 1 and not ours.collapsed


def test_a_collapsed_residual_block_is_bypassed_not_fatal():
    net = models.build_model("resnet", (2, 8, 8), 5, models.build_activation("relu"), depth=8)
    masks = {k: torch.ones_like(p, dtype=torch.bool) for k, p in models.prunable_parameters(net, False).items()}
    masks["stages.1.0.conv2.weight"][:] = False
    ours = effective_architecture(net, masks)
    assert ours.collapsed == ["stages.1.0.conv1.weight", "stages.1.0.conv2.weight"] and ours.effective_params > 0
    (message,) = [m for m in ours.warnings() if m.startswith("layer collapse")]
    assert "bypasses them" in message
