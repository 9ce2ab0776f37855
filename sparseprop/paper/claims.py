"""Verdicts on the paper's claims, each computed by its experiment's stated rules from the collected measurements."""

from __future__ import annotations

from typing import Any, Sequence

from sparseprop.paper.experiment import Experiment
from sparseprop.paper.judge import Verdict
from sparseprop.paper.tables import usable


def verdicts(results: dict[str, dict[str, Any]], experiments: Sequence[Experiment],
             skipped: dict[str, str] | None = None) -> list[Verdict]:
    """Every claim's verdicts from the collected results; an experiment without runs skips its claims, with ``skipped``'s reason."""
    skipped = skipped or {}
    out = []
    for exp in experiments:
        for rule in exp.rules:
            tables = results.get(exp.id)
            if tables is not None and not usable(tables["runs"]).empty:
                out += rule(tables)
                continue
            for v in rule(None):
                if skipped.get(exp.id):
                    v.skipped = f"{exp.id} skipped: {skipped[exp.id]}"
                out.append(v)
    return out


def explanations(results: dict[str, dict[str, Any]], experiments: Sequence[Experiment]) -> dict[str, str]:
    """Markdown, by claim, that explains the claim's verdicts from the measured numbers (where there is one)."""
    out = {}
    for exp in experiments:
        for claim, note in exp.notes.items():
            text = note(results.get(exp.id))
            if text:  # several experiments may explain one claim (E7's pairs): each adds its text
                out[claim] = f"{out[claim]}\n{text}" if claim in out else text
    return out
