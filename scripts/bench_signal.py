"""Benchmark the signal-propagation measurements and approximate isometry against naive references.

Prints figures, never pass/fail: per-example autograd Jacobians against the batched input-output
singular values on a pruned MLP-7 (time, speed-up, agreement, memory), then approximate isometry
and layerwise singular values, the generic input-output path (any network) on a ResNet-8 against
the bare passes it needs, the layerwise Lanczos estimates of a ResNet-8 against their bare operator
passes, and an approximate-isometry step on VGG-C against the bare products it needs.
Run ``python scripts/bench_signal.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Callable, TypeVar

import torch

from sparseprop.inits import initialise
from sparseprop.isometry import approximate_isometry
from sparseprop.models import build_activation, build_model
from sparseprop.pruning import apply_masks, kept_count, prunable_parameters, random_masks
from sparseprop.signal import io_singular_values, layer_singular_values

SEED = 0
SPARSITY = 0.9
T = TypeVar("T")


def pruned_mlp7() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """MLP-7 (784-100x6-10, tanh, VS-L) with a 90% uniformly random global mask, biases included."""
    gen = torch.Generator().manual_seed(SEED)
    model = build_model("mlp", (1, 28, 28), 10, build_activation("tanh"), depth=7, width=100)
    initialise(model, "vs_l", generator=gen)
    params = prunable_parameters(model, include_bias=True)
    masks = random_masks(params, kept_count(sum(p.numel() for p in params.values()), SPARSITY), gen)
    apply_masks(params, masks)
    return model, masks


def inputs(n: int) -> torch.Tensor:
    """n MNIST-shaped standard-normal inputs, (n, 1, 28, 28)."""
    return torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(SEED + 1))


def max_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def status_mib(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS now, VmHWM peak since the last reset), in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def naive_singular_values(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The reference: one autograd Jacobian per example, then its singular values."""
    out = []
    for i in range(x.shape[0]):
        jac = torch.autograd.functional.jacobian(model, x[i:i + 1])
        out.append(torch.linalg.svdvals(jac.reshape(jac.shape[1], -1)))
    return torch.stack(out)


def probe(n: int) -> None:
    """Child-process mode: print the peak memory that io_singular_values adds on n examples, as JSON."""
    torch.manual_seed(SEED)
    model, _ = pruned_mlp7()
    x = inputs(n)
    io_singular_values(model, x[:16])
    # Writing 5 to clear_refs resets the peak (VmHWM) to the current resident size, so the peak
    # read afterwards belongs to this one call, not to importing torch or building the inputs.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status_mib("VmRSS")
    io_singular_values(model, x)
    print(json.dumps({"n": n, "rss_before_mib": before, "peak_mib": status_mib("VmHWM"),
                      "max_rss_mib": max_rss_mib()}))


def probe_in_subprocess(n: int) -> dict[str, float]:
    """Run ``probe`` in a fresh interpreter so that the peak belongs to that measurement alone."""
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--probe", str(n)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bare_conv_passes(model: torch.nn.Module, x: torch.Tensor, chunk: int) -> None:
    """The floor of the generic path: per chunk one forward pass and one input-only backward pass per logit."""
    for xb in x.split(chunk):
        xb = xb.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(xb)
            for k in range(logits.shape[1]):
                torch.autograd.grad(logits[:, k].sum(), xb, retain_graph=k < logits.shape[1] - 1)


def generic_against_bare(n: int, repeats: int) -> tuple[float, float]:
    """CPU seconds (best of ``repeats``, alternating) of the generic path and of its bare passes on a ResNet-8."""
    from sparseprop.signal.jacobians import generic_chunk

    net = build_model("resnet", (1, 28, 28), 10, build_activation("relu"), depth=8).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    x = torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(SEED))
    chunk = generic_chunk(net, (1, 28, 28))
    io_singular_values(net, x[:4])
    ours, bare = [], []
    for _ in range(repeats):
        for fn, times in ((lambda: io_singular_values(net, x), ours), (lambda: bare_conv_passes(net, x, chunk), bare)):
            start = time.process_time()
            fn()
            times.append(time.process_time() - start)
    return min(ours), min(bare)


def pruned_vgg_c() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """VGG-C for CIFAR-10 (3x32x32, VS-L) with a 90% uniformly random global mask, biases included."""
    gen = torch.Generator().manual_seed(SEED)
    model = build_model("vgg_c", (3, 32, 32), 10, build_activation("relu"))
    initialise(model, "vs_l", generator=gen)
    params = prunable_parameters(model, include_bias=True)
    masks = random_masks(params, kept_count(sum(p.numel() for p in params.values()), SPARSITY), gen)
    apply_masks(params, masks)
    return model, masks


def ai_against_bare(steps: int, repeats: int) -> dict[str, float]:
    """Seconds per AI step on VGG-C, process CPU time and wall time (best of ``repeats``, alternating), of
    ``approximate_isometry`` and of the bare products each step needs: M Mᵀ, then (M Mᵀ − I) M, per layer.

    AI's per-step time is the difference between ``steps`` steps and none, so the objectives it computes once
    before and once after (a bare M Mᵀ each) are left out, as they are negligible over the paper's 10,000 steps;
    the one it records at the last step stays in (over 10,000 steps it records one every 100).
    """
    from sparseprop.signal.weights import as_matrix, weight_matrices

    model, masks = pruned_vgg_c()
    matrices = [as_matrix(w.detach()).clone() for _, w in weight_matrices(model)]

    def bare() -> None:
        for m in matrices:
            torch.mm(torch.mm(m, m.T), m)

    def ai(n: int) -> None:
        approximate_isometry(model, masks, steps=n, lr=0.1, record_every=max(1, n))

    ai(1)
    bare()
    out: dict[str, list[float]] = {"ai_cpu": [], "ai_wall": [], "bare_cpu": [], "bare_wall": []}
    for _ in range(repeats):
        for name, fn in (("ai", lambda: ai(steps)), ("ai0", lambda: ai(0)), ("bare", lambda: [bare() for _ in range(steps)])):
            cpu, wall = time.process_time(), time.perf_counter()
            fn()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            if name == "ai0":  # the call's fixed cost, taken off the last AI timing
                out["ai_cpu"][-1] -= cpu
                out["ai_wall"][-1] -= wall
            else:
                out[f"{name}_cpu"].append(cpu)
                out[f"{name}_wall"].append(wall)
    return {k: min(v) / steps for k, v in out.items()}


def bare_operator_passes(net: torch.nn.Module, x: torch.Tensor, steps: int) -> None:
    """The floor of the layerwise operator path: one recorded forward pass, then per layer ``steps``
    applications of its operation and of its transpose on all examples at once."""
    from sparseprop.signal.layer_operator import layer_maps

    for m in layer_maps(net, x):
        v = torch.randn_like(m.x)
        with torch.enable_grad():
            _, transpose = torch.func.vjp(m.linear, torch.zeros_like(m.x))
        u = torch.randn(x.shape[0], *m.out_shape)
        for _ in range(steps):
            with torch.no_grad():
                m.linear(v)
            transpose(u)


def operator_against_bare(n: int, repeats: int) -> tuple[float, float, float]:
    """CPU seconds (best of ``repeats``, alternating) of ResNet-8's layerwise Lanczos estimates and of their
    bare operator passes, and the largest relative residual bound of a layer's largest singular value."""
    from sparseprop.signal.layer_operator import ITERATIONS, layer_spectra

    net = build_model("resnet", (1, 28, 28), 10, build_activation("relu"), depth=8).eval()
    x = torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(SEED))
    layer_spectra(net, x[:2])
    ours, bare, spectra = [], [], []
    for _ in range(repeats):
        for fn, times in ((lambda: spectra.append(layer_spectra(net, x)), ours),
                          (lambda: bare_operator_passes(net, x, ITERATIONS), bare)):
            start = time.process_time()
            fn()
            times.append(time.process_time() - start)
    bound = max(float((est.bounds[:, 0] / est.values[:, 0]).max()) for _, _, est in spectra[-1])
    return min(ours), min(bare), bound


def timed(fn: Callable[..., T], *args: object, **kwargs: object) -> tuple[T, float]:
    """(result, seconds) of one call."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a fast look")
    parser.add_argument("--probe", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe is not None:
        probe(args.probe)
        return

    n, subset, ai_steps, layer_n, repeats = (5_400, 50, 1_000, 200, 2) if args.quick else (54_000, 200, 10_000, 1_000, 3)
    torch.manual_seed(SEED)
    model, masks = pruned_mlp7()
    x = inputs(n)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.2f} at start; MLP-7 tanh VS-L, {SPARSITY:.0%} random mask, N={n:,}")

    # One small call of each first, so neither timing includes one-off library initialisation.
    naive_singular_values(model, x[:2])
    io_singular_values(model, x[:16])
    # The two methods alternate and each keeps its best time, so that load from other processes
    # on a shared machine hits both alike and inflates neither figure.
    naive_times, ours_times = [], []
    for _ in range(repeats):
        naive, seconds = timed(naive_singular_values, model, x[:subset])
        naive_times.append(seconds)
        ours, seconds = timed(io_singular_values, model, x)
        ours_times.append(seconds)
    naive_s, ours_s = min(naive_times), min(ours_times)
    naive_per, ours_per = naive_s / subset, ours_s / n
    diff = (ours[:subset] - naive.double()).abs()
    rel_diff = float((diff / naive.double().abs()).max())
    rel_to_max = float((diff / naive.double().amax(dim=1, keepdim=True)).max())
    main_rss = max_rss_mib()
    small, large = probe_in_subprocess(n // 10), probe_in_subprocess(n)
    layers, layer_s = timed(layer_singular_values, model, x[:layer_n])
    ai, ai_s = timed(approximate_isometry, model, masks, steps=ai_steps)
    conv_n = 128 if args.quick else 512
    generic_s, bare_s = generic_against_bare(conv_n, repeats)
    op_n = 10 if args.quick else 50
    op_s, op_bare_s, op_bound = operator_against_bare(op_n, repeats)

    rows = [
        ("(a) naive autograd IO JSV", f"{naive_per * 1e3:.2f} ms/example", f"on {subset} examples, best of {repeats}"),
        ("(b) io_singular_values", f"{ours_s:.2f} s total", f"{ours_per * 1e6:.1f} us/example, N={n:,}, best of {repeats} "
                                                          f"(worst {max(ours_times):.2f} s); target <= 10 s"),
        ("    speed-up (a)/(b)", f"{naive_per / ours_per:.0f}x", "per example; target >= 100x"),
        ("    agreement on subset", f"{rel_diff:.1e}", f"max relative difference ({rel_to_max:.1e} of each example's largest)"),
        ("    max RSS, this process", f"{main_rss:.0f} MiB", "everything so far; target <= 2048 MiB"),
        (f"    peak added, N={small['n']:,}", f"{small['peak_mib'] - small['rss_before_mib']:.0f} MiB",
         f"fresh process: inputs and torch already resident, max RSS {small['max_rss_mib']:.0f} MiB"),
        (f"    peak added, N={large['n']:,}", f"{large['peak_mib'] - large['rss_before_mib']:.0f} MiB",
         f"fresh process: inputs and torch already resident, max RSS {large['max_rss_mib']:.0f} MiB"),
        ("(c) approximate isometry", f"{ai_s:.2f} s", f"{ai_steps:,} steps, objective {ai['total_before']:.3f} -> "
                                                     f"{ai['total_after']:.3f}; target <= 20 s"),
        ("(d) layer_singular_values", f"{layer_s:.2f} s", f"{layer_n:,} examples, {len(layers)} layers"),
        ("(e) generic path, ResNet-8", f"{generic_s / conv_n * 1e3:.2f} ms/example",
         f"CPU time, {conv_n} examples of 1x28x28, best of {repeats}; bare forward + 10 input backward passes: "
         f"{bare_s / conv_n * 1e3:.2f} ms/example, ratio {generic_s / bare_s:.2f}x (target <= 1.5x)"),
        ("(f) layerwise Lanczos, ResNet-8", f"{op_s / op_n * 1e3:.0f} ms/example",
         f"CPU time, {op_n} examples of 1x28x28, 9 layers, best of {repeats}; bare layer and transpose passes: "
         f"{op_bare_s / op_n * 1e3:.0f} ms/example, ratio {op_s / op_bare_s:.2f}x; largest relative bound of a "
         f"layer's largest value {op_bound:.1e}"),
    ]
    ai_steps_vgg = 3 if args.quick else 10
    vgg = ai_against_bare(ai_steps_vgg, repeats)
    rows.append(("(g) AI step, VGG-C", f"{vgg['ai_cpu'] / vgg['bare_cpu']:.2f}x CPU time",
                 f"{vgg['ai_cpu']:.3f} s/step against {vgg['bare_cpu']:.3f} s of bare M M^T and A M per layer (CPU time; wall "
                 f"{vgg['ai_wall']:.3f} vs {vgg['bare_wall']:.3f} s, {vgg['ai_wall'] / vgg['bare_wall']:.2f}x), "
                 f"{ai_steps_vgg} steps (not 10,000), best of {repeats}; target <= 1.2x"))
    width = [max(len(r[i]) for r in rows) for i in range(2)]
    for name, value, note in rows:
        print(f"{name:<{width[0]}}  {value:>{width[1]}}  {note}")
    print(f"load average {os.getloadavg()[0]:.2f} at end (the machine may be shared)")


if __name__ == "__main__":
    main()
