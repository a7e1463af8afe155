"""The format gate: schema, non-empty content, role order, a turn to learn from, pairs and labels.

``format_problems`` says what is wrong with one record (column -> sentence), a pure
function the augment step reuses to reject generated records; ``format_columns`` turns
it into one boolean column per check for the suites and notes each failure in
``details``. Kept apart from token counting (steps/gates/tokens.py), which needs a
tokenizer and only runs on records that pass ``schema_ok``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from steps.core.schema import KINDS, MODEL_ROLES, ROLES, normalize
from steps.gates.records import record_turns


def _schema_problem(rec: Any) -> str:
    if not isinstance(rec, dict):
        return f"record is a {type(rec).__name__}, not an object"
    if rec.get("kind") not in KINDS:
        return f"kind {rec.get('kind')!r} is not one of {', '.join(KINDS)}"
    for key in ("messages", "chosen", "rejected", "completion"):
        value = rec.get(key)
        if value is None and key != "messages":
            continue
        if not isinstance(value, list):
            return f"{key} must be a list of {{role, content}}, got {type(value).__name__}"
        for i, m in enumerate(value):
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                return f"{key}[{i}] must be {{role in {'/'.join(ROLES)}, content: str}}, got {str(m)[:60]!r}"
    need = {"preference": ("chosen", "rejected"), "feedback": ("completion",)}.get(rec["kind"], ())
    for key in need:
        if rec.get(key) is None:
            return f"a {rec['kind']} record needs {key}"
    if rec["kind"] in ("text", "cls") and not isinstance(rec.get("text"), str):
        return f"a {rec['kind']} record needs text (a string)"
    meta = rec.get("meta")
    if not isinstance(meta, dict) or any(k not in meta for k in ("dataset", "source", "row", "hash")):
        return "meta must hold dataset, source, row and hash"
    return ""


# Which role may follow which (None: the start). System only first; function_call -> tool.
_NEXT = {None: ("system", "user"), "system": ("user",), "user": ("assistant", "function_call"),
         "assistant": ("user",), "function_call": ("tool",), "tool": ("assistant", "function_call")}


def _role_problem(seq: list[tuple[str, str]]) -> str:
    prev = None
    for name, role in seq:
        if role not in _NEXT[prev]:
            after = f"after {prev}" if prev else "first"
            return f"{name} is {role} {after}; expected {' or '.join(_NEXT[prev])}"
        prev = role
    return ""


def format_problems(rec: dict[str, Any]) -> dict[str, str]:
    """Failed format checks of one record: column -> what is wrong (empty when it is fine)."""
    schema = _schema_problem(rec)
    if schema:
        return {"schema_ok": schema}
    out = {}
    kind, msgs = rec["kind"], rec["messages"]
    named = {k: [(f"{k}[{i}]", m) for i, m in enumerate(record_turns(rec, k))] for k in ("messages", "chosen", "rejected", "completion")}
    empty = [n for turns in named.values() for n, m in turns if not m["content"].strip()]
    if empty:
        out["nonempty_ok"] = f"{empty[0]} is empty" + (f" (and {len(empty) - 1} more)" if len(empty) > 1 else "")
    elif kind in ("text", "cls") and not rec["text"].strip():
        out["nonempty_ok"] = "text is empty"
    tails = {"preference": ("chosen", "rejected"), "feedback": ("completion",)}.get(kind, (None,))
    if msgs or kind not in ("text", "cls"):
        for tail in tails:
            seq = [(n, m["role"]) for n, m in named["messages"] + (named[tail] if tail else [])]
            if problem := _role_problem(seq):
                out["roles_ok"] = problem
                break
    if kind == "sft" and not any(m["role"] in MODEL_ROLES for m in msgs):
        out["learnable_ok"] = "no assistant turn to learn from"
    if kind == "preference":
        chosen, rejected = rec["chosen"], rec["rejected"]
        if not chosen or not rejected:
            out["pair_ok"] = f"{'chosen' if not chosen else 'rejected'} is empty"
        elif [(m["role"], normalize(m["content"])) for m in chosen] == [(m["role"], normalize(m["content"])) for m in rejected]:
            out["pair_ok"] = "chosen and rejected are the same after normalisation"
    if kind == "feedback" and not isinstance(rec.get("label"), bool):
        out["label_ok"] = f"label must be true or false, got {rec.get('label')!r}"
    if kind == "cls" and rec.get("label") is None:
        out["label_ok"] = "a cls record needs a label"
    return out


def format_columns(df: pd.DataFrame, records: list[Any], details: dict[tuple[str, int], str]) -> None:
    """Add one boolean column per format check (True: fine) and note each failure's detail."""
    columns = ("schema_ok", "nonempty_ok", "roles_ok", "learnable_ok", "pair_ok", "label_ok")
    ok = {c: np.ones(len(df), dtype=bool) for c in columns}
    heldout = (df["split"] == "heldout").to_numpy()
    for i, rec in enumerate(records):
        for col, detail in format_problems(rec).items():
            if col == "learnable_ok" and heldout[i]:
                continue  # the held-out set may hold bare prompts: it is never trained on
            ok[col][i] = False
            details[(col, i)] = detail
    for col in columns:
        df[col] = ok[col]
