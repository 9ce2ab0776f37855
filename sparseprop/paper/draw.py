"""Collected results -> every registered experiment's figures, the tables, the verdicts and REPRODUCTION.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from sparseprop.paper import claims, gather, report, tables
from sparseprop.paper.experiment import Experiment
from sparseprop.paper.plan import collected_dir
from sparseprop.paper.tables import usable
from sparseprop.runner.plots import plt, save


def draw_figures(results: dict[str, dict[str, Any]], out_dir: str | Path,
                 experiments: Sequence[Experiment]) -> tuple[list[Path], dict[str, str]]:
    """Draw every figure whose experiment has completed runs; returns (written paths, {figure: why not drawn})."""
    written, missing = [], {}
    ordered = sorted(experiments, key=lambda e: e.order if e.figure_order is None else e.figure_order)
    for exp in ordered:
        for fig in exp.figures:
            found = results.get(exp.id)
            if found is None or usable(found["runs"], diverged=True).empty:
                missing[fig.stem] = f"no completed runs of {exp.id}"
                continue
            try:
                written += save(fig.draw(*(found[i] for i in fig.inputs)), Path(out_dir) / fig.stem)
            except Exception as exc:  # noqa: BLE001 - one broken figure must not cost the others
                plt.close("all")
                missing[fig.stem] = f"could not draw: {type(exc).__name__}: {exc}"
    return written, missing


def draw(root: Path, profile: str, status: dict[str, Any], experiments: Sequence[Experiment]) -> str:
    """Gathered results -> figures, tables and REPRODUCTION.md; returns the verdict table."""
    results = {e.id: gather.load(collected_dir(root, profile, e.id)) for e in experiments
               if e.sweep and (collected_dir(root, profile, e.id) / gather.RUNS).is_file()}
    fig_paths, missing = draw_figures(results, root / "figures", experiments)
    table_paths = tables.write_tables(results, root / "tables", experiments)
    skipped = {e: st["skipped"] for e, st in status.get("experiments", {}).items() if st.get("skipped")}
    verdicts = claims.verdicts(results, experiments, skipped)
    not_tested = {claim: why for e in experiments for claim, why in e.not_tested.items()}
    report.write(root / "REPRODUCTION.md", verdicts, status, fig_paths, missing, table_paths,
                 claims.explanations(results, experiments), not_tested)
    return report.verdict_table(verdicts)
