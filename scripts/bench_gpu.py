"""CUDA benchmark: sparseprop's training step against a bare PyTorch loop on the GPU, then the CUDA tests.

Needs a CUDA device: without one it stops with one line and exit code 1. On CIFAR-shaped random
images already on the device (3x32x32, batch 128, 90% masked, momentum SGD) it prints images per
second of both loops and their ratio (target: ours >= 0.95 x bare), in float32 and with bfloat16
autocast + channels-last, and the share of a step spent fetching the batch (target: < 5%). Then
it runs the tests that exercise the CUDA path (``pytest -k cuda``). The network is ``--arch`` when
that architecture is registered (default resnet32), else the small conv + BatchNorm net of
``bench_conv.py``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch

from bench_conv import compare

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (the host side of the loop)")
    ap.add_argument("--arch", default="resnet32", help="a registered architecture (else the small net of bench_conv.py)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench-gpu: no CUDA device is visible here (torch.cuda.is_available() is false); run it on a machine "
              "with an NVIDIA GPU and a CUDA build of torch", file=sys.stderr)
        return 1
    torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = True  # as a run with deterministic=false sets it
    device = torch.device("cuda")
    steps = args.steps or (50 if args.quick else 200)
    print(f"CUDA training step on {torch.cuda.get_device_name(device)}, 90% masked, momentum SGD, batch 128, "
          f"{steps} steps x 5 alternating repeats")
    for amp, channels_last in ((False, False), (True, True)):
        compare(args.arch, (3, 32, 32), 50_000, steps, 5, device, amp=amp, channels_last=channels_last)
    print("CUDA tests:", flush=True)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-k", "cuda", "-m", "slow or not slow", "tests"],
                          cwd=REPO).returncode


if __name__ == "__main__":
    sys.exit(main())
