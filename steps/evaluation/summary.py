"""The report's first lines: what changed, in plain words, and why the gate said what it said (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from steps.evaluation.gate import GateDecision
from steps.evaluation.probes import Outcome


def _probe_line(probes: dict[str, Sequence[Outcome]]) -> str | None:
    parts = []
    for model in ("candidate", "base", "production"):
        decided = [o.passed for o in probes.get(model, ()) if o.passed is not None]
        if decided:
            parts.append(f"{model} {sum(decided)} of {len(decided)} ({sum(decided) / len(decided):.0%})")
    return ("Probes passed: " + "; ".join(parts) + ".") if parts else None


def summary(table: dict[str, dict[str, Any] | None], decision: GateDecision, probes: dict[str, Sequence[Outcome]]) -> list[str]:
    """Three to five sentences: probes passed per model, the significant and the unclear differences, the verdict."""
    lines = [x for x in [_probe_line(probes)] if x]
    significant, unclear = [], []
    for c in decision.checks:
        iv = c.interval
        if not iv or c.skipped:
            continue
        who = "production" if c.name == "vs_production" else "base"
        span = f"{iv['low']:+.1%} to {iv['high']:+.1%}"
        if iv["low"] > 0 or iv["high"] < 0:
            word = "better" if iv["low"] > 0 else "worse"
            significant.append(f"{c.metric} {word} than {who} ({iv['point']:+.1%}, {iv['confidence']:.0%} interval {span})")
        else:
            unclear.append(f"{c.metric} vs {who} ({iv['point']:+.1%}, interval {span})")
    if significant:
        lines.append("Significant differences: " + "; ".join(significant) + ".")
    if unclear:
        lines.append("Within the noise (the interval spans no change): " + "; ".join(unclear) + ".")
    if decision.passed:
        lines.append(f"The gate passed: all {sum(not c.skipped for c in decision.checks)} checks held.")
    else:
        lines.append("The gate failed: " + "; ".join(decision.reasons) + ".")
    return lines
