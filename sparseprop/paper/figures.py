"""`sparseprop figures`: redraw the paper's figures, tables and report from the sweeps already run (trains nothing).

Each figure is declared, with the function that draws it, by its experiment's module in ``experiments/``.
"""

from __future__ import annotations

from sparseprop.paper import reproduce


def main(args: list[str]) -> None:
    """`sparseprop figures [--profile P] [--outputs DIR]`: gather the sweeps again and redraw, without training."""
    reproduce.main(["--figures-only", *args])
