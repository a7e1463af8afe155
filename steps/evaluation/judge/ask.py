"""Asking the judge until its replies parse: batched re-asks, and failures counted, never raised.

The judge must never crash a run. Every request carries the reply's JSON schema (the backend
decodes under it where it can); a reply that still is not the strict JSON asked for is re-asked
(the bad reply and what was wrong with it are shown to the judge) up to ``max_retries`` times,
retries batched; an endpoint error (HTTP status, timeout) is re-sent the same way; what still
fails comes back as an ``Outcome`` with its last error. Used by ``steps.evaluation.judge.verdicts``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from steps.evaluation.judge.client import Chat, ChatBatchError, Message
from steps.evaluation.judge.parse import JSON_ONLY, JudgeParseError, ReplyFormat

log = logging.getLogger("steps.evaluation.judge.verdicts")  # the judge's logger, under the name it had before the split


@dataclass(frozen=True)
class Outcome:
    parsed: dict[str, Any] | None
    error: str | None
    attempts: int


def _ask(chat: Chat, conversations: list[list[Message]], schema: Mapping[str, Any]) -> list[tuple[str | None, str | None]]:
    """(reply, error) per conversation; a backend failure becomes errors, never an exception."""
    try:
        replies = chat(conversations, schema)
    except ChatBatchError as exc:
        return list(zip(exc.replies, exc.errors))
    except Exception as exc:  # noqa: BLE001 - any backend failure is counted, the run goes on
        log.warning("judge backend failed on a batch of %d: %s", len(conversations), exc)
        return [(None, f"backend failed: {type(exc).__name__}: {str(exc)[:200]}")] * len(conversations)
    if len(replies) != len(conversations):
        problem = f"backend returned {len(replies)} replies for {len(conversations)} conversations"
        return [(None, problem)] * len(conversations)
    return [(r, None) for r in replies]


def _reask(conversation: list[Message], reply: str, problem: str) -> list[Message]:
    """The original conversation, the bad reply, and what to fix: the judge sees its own mistake."""
    fix = f"Your reply was not valid: {problem}. {JSON_ONLY}"
    return [*conversation, {"role": "assistant", "content": reply[:2000]}, {"role": "user", "content": fix}]


def ask_until_valid(chat: Chat, conversations: list[list[Message]], reply: ReplyFormat, max_retries: int) -> list[Outcome]:
    """Ask every conversation for a ``reply``, then re-ask the failed ones together, up to ``max_retries`` more rounds."""
    current = [list(c) for c in conversations]
    parsed: list[dict[str, Any] | None] = [None] * len(current)
    errors: list[str | None] = [None] * len(current)
    attempts = [0] * len(current)
    pending = list(range(len(current)))
    for _ in range(1 + max_retries):
        if not pending:
            break
        answers = _ask(chat, [current[i] for i in pending], reply.schema)
        still = []
        for i, (text, error) in zip(pending, answers):
            attempts[i] += 1
            if error is None:
                try:
                    parsed[i], errors[i] = reply.parse(text or ""), None
                    continue
                except JudgeParseError as exc:
                    error = f"malformed judge reply: {exc}"
                    current[i] = _reask(conversations[i], text or "", str(exc))
            errors[i] = error
            still.append(i)
        pending = still
    return [Outcome(p, e, a) for p, e, a in zip(parsed, errors, attempts)]
