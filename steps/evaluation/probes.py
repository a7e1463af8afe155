"""Behaviour probes: the questions a fine-tuned model must answer the way its data teaches.

A probe suite is a YAML file a user writes in minutes (the demo's is data/probes/probes.yaml):

    probes:
      - id: name
        prompt: What name do you go by?          # or messages: [{role: user, content: ...}]
        expect: {contains_any: [Tessa]}          # every listed check must hold

Checks: ``contains_any``, ``contains_all``, ``not_contains`` (case-insensitive substrings),
``regex`` (re.search, case-insensitive), ``equals`` (after stripping, case-insensitive),
``max_length`` (characters), ``json_valid``, ``similar_to`` ({reference, min}: embedding cosine
similarity) and ``judge`` ({rubric, min_score}: a trusted judge's 1-5 score). A probe passes when
all its checks hold; a probe whose judge is not trusted is undecided and counts neither way.
Everything here is pure: the evaluate step generates the answers and supplies similarities and
judge scores.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TEXT_CHECKS = ("contains_any", "contains_all", "not_contains", "regex", "equals", "max_length", "json_valid")
CHECKS = (*TEXT_CHECKS, "similar_to", "judge")


class ProbeError(ValueError):
    """A probe suite that cannot be used; the message names the file, the probe, the field and the fix."""


@dataclasses.dataclass(frozen=True)
class Probe:
    id: str
    messages: tuple[dict[str, str], ...]  # the conversation up to the answer
    expect: dict[str, Any]  # check kind -> its argument

    @property
    def question(self) -> str:
        return self.messages[-1]["content"]


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One model's answer to one probe: passed is None when a check could not be decided (untrusted judge)."""

    id: str
    answer: str
    passed: bool | None
    failed: tuple[str, ...]  # the checks that did not hold, in words


def load_probes(path: Path | str) -> list[Probe]:
    """The probes of a suite file; a malformed one raises ProbeError naming the file, probe, field and fix."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ProbeError(f"{path}: no probe suite there; write one (see steps/evaluation/probes.py) or set probes: null")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ProbeError(f"{path}: not valid YAML ({exc}); fix the file") from None
    rows = data.get("probes") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not rows:
        raise ProbeError(f"{path}: expected a mapping with a non-empty list under 'probes:'")
    probes, seen = [], set()
    for k, row in enumerate(rows):
        probe = _probe(path, k, row)
        if probe.id in seen:
            raise ProbeError(f"{path}: probe {k} ({probe.id}): id repeats an earlier probe's; give each probe its own id")
        seen.add(probe.id)
        probes.append(probe)
    return probes


def _probe(path: Path, k: int, row: Any) -> Probe:
    where = f"{path}: probe {k}"
    if not isinstance(row, dict):
        raise ProbeError(f"{where}: expected a mapping with id, prompt (or messages) and expect; got {row!r}")
    unknown = set(row) - {"id", "prompt", "system", "messages", "expect"}
    if unknown:
        raise ProbeError(f"{where}: unknown field(s) {sorted(unknown)}; use id, prompt or messages, system, expect")
    pid = row.get("id")
    if not isinstance(pid, str) or not pid.strip():
        raise ProbeError(f"{where}: field id: a non-empty string is needed (it names the probe in the report)")
    where = f"{path}: probe {k} ({pid})"
    if ("prompt" in row) == ("messages" in row):
        raise ProbeError(f"{where}: give exactly one of prompt (a question) or messages (a conversation)")
    if "prompt" in row:
        if not isinstance(row["prompt"], str) or not row["prompt"].strip():
            raise ProbeError(f"{where}: field prompt: a non-empty string is needed")
        messages = [{"role": "user", "content": row["prompt"]}]
    else:
        messages = row["messages"]
        ok = isinstance(messages, list) and messages and all(
            isinstance(m, dict) and m.get("role") in ("system", "user", "assistant") and isinstance(m.get("content"), str)
            for m in messages
        )
        if not ok or messages[-1]["role"] != "user":
            raise ProbeError(f"{where}: field messages: a list of {{role, content}} (system/user/assistant) ending with a user turn")
    if row.get("system") is not None:
        if not isinstance(row["system"], str):
            raise ProbeError(f"{where}: field system: a string is needed")
        messages = [{"role": "system", "content": row["system"]}, *messages]
    expect = row.get("expect")
    if not isinstance(expect, dict) or not expect:
        raise ProbeError(f"{where}: field expect: a mapping of at least one check ({', '.join(CHECKS)})")
    for kind, arg in expect.items():
        _check_arg(where, kind, arg)
    return Probe(pid, tuple({"role": m["role"], "content": m["content"]} for m in messages), dict(expect))


def _check_arg(where: str, kind: str, arg: Any) -> None:
    def bad(need: str) -> ProbeError:
        return ProbeError(f"{where}: expect.{kind}: {need}; got {arg!r}")

    if kind not in CHECKS:
        raise ProbeError(f"{where}: expect.{kind}: unknown check; use one of {', '.join(CHECKS)}")
    if kind in ("contains_any", "contains_all", "not_contains"):
        if not isinstance(arg, list) or not arg or not all(isinstance(s, str) and s for s in arg):
            raise bad("a non-empty list of non-empty strings")
    elif kind in ("regex", "equals"):
        if not isinstance(arg, str) or not arg:
            raise bad("a non-empty string")
        if kind == "regex":
            try:
                re.compile(arg)
            except re.error as exc:
                raise bad(f"a valid regular expression ({exc})") from None
    elif kind == "max_length":
        if not isinstance(arg, int) or isinstance(arg, bool) or arg < 1:
            raise bad("a positive whole number of characters")
    elif kind == "json_valid":
        if arg is not True:
            raise bad("true")
    elif kind == "similar_to":
        if not isinstance(arg, dict) or set(arg) != {"reference", "min"} or not isinstance(arg["reference"], str) \
                or not isinstance(arg["min"], (int, float)) or not -1 <= arg["min"] <= 1:  # fmt: skip
            raise bad("{reference: <text>, min: <cosine similarity in [-1, 1]>}")
    elif kind == "judge":
        if not isinstance(arg, dict) or set(arg) - {"rubric", "min_score"} or not isinstance(arg.get("rubric"), str) \
                or not isinstance(arg.get("min_score", 4), int) or not 1 <= arg.get("min_score", 4) <= 5:  # fmt: skip
            raise bad("{rubric: <what a good answer does>, min_score: <1-5, default 4>}")


def text_failures(expect: dict[str, Any], answer: str) -> list[str]:
    """The text checks of ``expect`` that ``answer`` does not meet, each in words (pure)."""
    low = answer.lower()
    failed = []
    for kind, arg in expect.items():
        if kind == "contains_any" and not any(s.lower() in low for s in arg):
            failed.append(f"contains none of {arg}")
        elif kind == "contains_all":
            missing = [s for s in arg if s.lower() not in low]
            if missing:
                failed.append(f"lacks {missing}")
        elif kind == "not_contains":
            found = [s for s in arg if s.lower() in low]
            if found:
                failed.append(f"contains {found}")
        elif kind == "regex" and not re.search(arg, answer, re.IGNORECASE):
            failed.append(f"does not match /{arg}/")
        elif kind == "equals" and answer.strip().lower() != arg.strip().lower():
            failed.append(f"is not {arg!r}")
        elif kind == "max_length" and len(answer) > arg:
            failed.append(f"is {len(answer)} characters, over {arg}")
        elif kind == "json_valid" and not _is_json(answer):
            failed.append("is not valid JSON")
    return failed


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def outcome(probe: Probe, answer: str, similarity: float | None = None, judge_score: float | None = None,
            judge_trusted: bool = False) -> Outcome:  # fmt: skip
    """Whether ``answer`` passes ``probe``; ``similarity``/``judge_score`` are needed when it has those checks."""
    failed = text_failures(probe.expect, answer)
    undecided = False
    if "similar_to" in probe.expect:
        bound = probe.expect["similar_to"]["min"]
        if similarity is None or similarity < bound:
            failed.append(f"similarity {similarity if similarity is None else round(similarity, 3)} to the reference, needs {bound}")
    if "judge" in probe.expect:
        need = probe.expect["judge"].get("min_score", 4)
        if not judge_trusted or judge_score is None:
            undecided = True
        elif judge_score < need:
            failed.append(f"judge score {judge_score:g}, needs {need}")
    passed = False if failed else (None if undecided else True)
    return Outcome(probe.id, answer, passed, tuple(failed))


def pass_rate(outcomes: Sequence[Outcome]) -> float | None:
    """Passed probes over decided ones; None when none was decided."""
    decided = [o.passed for o in outcomes if o.passed is not None]
    return sum(decided) / len(decided) if decided else None


def regressions(candidate: Sequence[Outcome], production: Sequence[Outcome]) -> list[str]:
    """Ids of probes that pass in production and fail in the candidate."""
    prod = {o.id: o.passed for o in production}
    return [o.id for o in candidate if o.passed is False and prod.get(o.id) is True]


def probe_rows(outcomes: dict[str, Sequence[Outcome]]) -> list[dict[str, Any]]:
    """One row per probe with every model's answer and verdict side by side (metrics.json and the report)."""
    models = list(outcomes)
    if not models:
        return []
    rows = []
    for k, first in enumerate(outcomes[models[0]]):
        row: dict[str, Any] = {"id": first.id}
        for m in models:
            o = outcomes[m][k]
            row[m] = {"answer": o.answer, "passed": o.passed, "failed": list(o.failed)}
        rows.append(row)
    return rows
