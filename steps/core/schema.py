"""The canonical record every input format becomes.

One record is a JSON object::

    {"id": "d3f1...",                   # unique: digest of dataset, file and row
     "kind": "sft" | "preference" | "feedback" | "text" | "cls",
     "messages": [{"role": "system"|"user"|"assistant"|"function_call"|"tool", "content": str}],
     "chosen": [msg] | None,            # preference: preferred assistant turn(s)
     "rejected": [msg] | None,          # preference: dispreferred assistant turn(s)
     "completion": [msg] | None,        # feedback (KTO): the judged assistant turn(s)
     "label": bool | str | int | None,  # feedback: desirable?; cls: the class
     "text": str | None,                # text (continued pre-training) and cls
     "tools": str | None,               # tool schema (JSON text) for function calling
     "meta": {"dataset", "source", "row", "format", "hash", "timestamp"}}

``messages`` holds the whole conversation for ``sft`` and the prompt for
``preference`` and ``feedback``. ``meta.hash`` is the digest of the normalised
content, so exact duplicates share it whatever file or row they came from.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from typing import Any

KINDS = ("sft", "preference", "feedback", "text", "cls")
ROLES = ("system", "user", "assistant", "function_call", "tool")
# Roles spoken by the model: a turn of these is what SFT learns from.
MODEL_ROLES = ("assistant", "function_call")

_WS = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Case-, width- and whitespace-folded text: the key for exact duplicates."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def record_text(rec: dict[str, Any]) -> str:
    """All the text of a record, in order, for dedup, leakage and PII scans."""
    parts: list[str] = []
    for key in ("messages", "chosen", "rejected", "completion"):
        for msg in rec.get(key) or ():
            parts.append(msg["content"])
    if rec.get("text"):
        parts.append(rec["text"])
    return "\n".join(parts)


def content_hash(rec: dict[str, Any]) -> str:
    """Digest of kind, roles, normalised content and label (not of where it came from)."""
    payload = {
        "kind": rec["kind"],
        **{
            key: [[m["role"], normalize(m["content"])] for m in rec.get(key) or ()]
            for key in ("messages", "chosen", "rejected", "completion")
        },
        "text": normalize(rec["text"]) if rec.get("text") else None,
        "label": rec.get("label"),
    }
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:32]


def make_record(
    kind: str,
    *,
    dataset: str,
    source: str,
    row: int,
    fmt: str,
    messages: list[dict[str, str]] | None = None,
    chosen: list[dict[str, str]] | None = None,
    rejected: list[dict[str, str]] | None = None,
    completion: list[dict[str, str]] | None = None,
    label: Any = None,
    text: str | None = None,
    tools: str | None = None,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """Assemble a canonical record and stamp its id and content hash."""
    rec: dict[str, Any] = {
        "kind": kind,
        "messages": messages or [],
        "chosen": chosen,
        "rejected": rejected,
        "completion": completion,
        "label": label,
        "text": text,
        "tools": tools,
    }
    uid = hashlib.sha256(f"{dataset}\0{source}\0{row}".encode()).hexdigest()[:16]
    rec["id"] = uid
    rec["meta"] = {
        "dataset": dataset,
        "source": source,
        "row": row,
        "format": fmt,
        "hash": content_hash(rec),
        "timestamp": timestamp,
    }
    return rec


def is_replay(rec: dict[str, Any]) -> bool:
    """Whether a record is replay data (ingest.datasets ``replay: true``): general data that always trains, never rewritten."""
    return bool(rec["meta"].get("replay"))
