"""What the judge is asked and how strictly its replies are read: prompts and JSON verdict parsing.

Pointwise prompts ask for four 1-5 scores, pairwise prompts for a winner, both as exactly one
JSON object (optionally in one ```json fence). The parsers accept that and nothing else,
raising ``JudgeParseError`` with a sentence the judge is shown when it is re-asked. Each reply
kind is a ``ReplyFormat``: its JSON schema (the same keys and values the parser accepts) goes to
the backend, which decodes under it (an endpoint's structured outputs, a local judge's grammar),
and its parser stays the check. Pure, no backend; used by ``steps.evaluation.judge.verdicts``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from steps.evaluation.judge.client import Message

CRITERIA = ("accuracy", "completeness", "fluency", "helpfulness")
WINNERS = ("A", "B", "tie")

JSON_ONLY = "Reply with exactly one JSON object and nothing else: no prose, no markdown."
POINTWISE_SYSTEM = (
    "You are a strict grader. Score the answer to the question on four criteria, each an integer from "
    "1 (very poor) to 5 (excellent): accuracy (correct, and consistent with the reference answer when one is "
    "given), completeness (covers what the question asks), fluency (clear, well-formed language), helpfulness "
    f"(useful to the person who asked). {JSON_ONLY} Use exactly these keys: "
    '{"accuracy": 1-5, "completeness": 1-5, "fluency": 1-5, "helpfulness": 1-5, "reason": "one sentence"}'
)
PAIRWISE_SYSTEM = (
    "You compare two answers to the same question and decide which is better overall: correct, complete, "
    "clear and helpful. Neither the order of the answers nor their length is a reason to prefer one. "
    f'{JSON_ONLY} Use exactly these keys: {{"winner": "A" or "B" or "tie", "reason": "one sentence"}}'
)
_FENCE = re.compile(r"\A```[A-Za-z]*[ \t]*\n(.*?)\n?```\Z", re.DOTALL)


class JudgeParseError(ValueError):
    """A judge reply that is not the JSON object asked for; the message says what is wrong."""


def _context(item: Mapping[str, Any]) -> str:
    ref = item.get("reference")
    return f"Question:\n{item['question']}\n\n" + (f"Reference answer:\n{ref}\n\n" if ref else "")


def pointwise_prompt(item: Mapping[str, Any]) -> list[Message]:
    """System + user messages asking for the four scores of ``item['answer']`` as strict JSON."""
    user = f"{_context(item)}Answer to grade:\n{item['answer']}\n\nReply with the JSON object only."
    return [{"role": "system", "content": POINTWISE_SYSTEM}, {"role": "user", "content": user}]


def pairwise_prompt(item: Mapping[str, Any], first: str, second: str) -> list[Message]:
    """System + user messages asking which of two answers (shown as A then B) is better, as strict JSON."""
    user = f"{_context(item)}Answer A:\n{first}\n\nAnswer B:\n{second}\n\nReply with the JSON object only."
    return [{"role": "system", "content": PAIRWISE_SYSTEM}, {"role": "user", "content": user}]


def _json_object(text: str | None, keys: Sequence[str]) -> dict[str, Any]:
    """One JSON object with exactly ``keys``, alone or inside one ```json fence."""
    stripped = (text or "").strip()
    if not stripped:
        raise JudgeParseError("the reply is empty")
    fenced = _FENCE.match(stripped)
    body = fenced.group(1).strip() if fenced else stripped
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise JudgeParseError(f"the reply is not one JSON object ({exc.msg} at char {exc.pos}): {body[:80]!r}") from None
    if not isinstance(data, dict):
        raise JudgeParseError(f"the reply is JSON {type(data).__name__}, not an object")
    missing = [k for k in keys if k not in data]
    extra = [k for k in data if k not in keys]
    if missing or extra:
        raise JudgeParseError(f"the object must have exactly the keys {', '.join(keys)}; missing {missing}, unexpected {extra}")
    if not isinstance(data["reason"], str):
        raise JudgeParseError(f"'reason' must be a string; got {data['reason']!r}")
    return data


def parse_judgement(text: str | None) -> dict[str, Any]:
    """The four integer scores (1-5) and the reason from a pointwise reply.

    Raises:
        JudgeParseError: not exactly one JSON object with those keys and types.
    """
    data = _json_object(text, (*CRITERIA, "reason"))
    for key in CRITERIA:
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5:
            raise JudgeParseError(f"'{key}' must be an integer from 1 to 5; got {value!r}")
    return data


def parse_verdict(text: str | None) -> dict[str, Any]:
    """``{"winner": "A"|"B"|"tie", "reason": str}`` from a pairwise reply (winner's case ignored).

    Raises:
        JudgeParseError: not exactly one JSON object with those keys and values.
    """
    data = _json_object(text, ("winner", "reason"))
    winner = data["winner"]
    normal = {w.lower(): w for w in WINNERS}.get(winner.strip().lower()) if isinstance(winner, str) else None
    if normal is None:
        raise JudgeParseError(f"'winner' must be \"A\", \"B\" or \"tie\"; got {winner!r}")
    return {"winner": normal, "reason": data["reason"]}


# ---------------------------------------------------------------- reply schemas


def _object_schema(title: str, values: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A JSON schema for one object with exactly these keys, in this order, then a free-text ``reason``.

    OpenAI's strict structured outputs need every key required and no others allowed; the title
    names the schema in the request.
    """
    properties = {**values, "reason": {"type": "string"}}
    return {"title": title, "type": "object", "properties": properties, "required": list(properties),
            "additionalProperties": False}  # fmt: skip


@dataclass(frozen=True)
class ReplyFormat:
    """One kind of judge reply: the schema a backend decodes under, and the strict parser that checks it."""

    schema: dict[str, Any]
    parse: Callable[[str | None], dict[str, Any]]


JUDGEMENT = ReplyFormat(
    _object_schema("judgement", {c: {"type": "integer", "enum": [1, 2, 3, 4, 5]} for c in CRITERIA}), parse_judgement
)
VERDICT = ReplyFormat(_object_schema("verdict", {"winner": {"type": "string", "enum": list(WINNERS)}}), parse_verdict)
