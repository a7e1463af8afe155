"""Reading raw files and mapping each known dataset format to the canonical record.

Readers yield ``(row, value)`` where ``row`` is the line number for JSONL and
CSV (what an editor shows) and the 1-based record index for JSON and Parquet.
A value that cannot be read is a ``RecordError`` in place of the dict, so the
caller quarantines it and goes on. Converters raise ``RecordError`` naming the
field, the reason and the fix.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMATS = ("alpaca", "sharegpt", "openai", "preference", "feedback", "text", "cls")
# Fields that may hold JSON inside a CSV cell.
_JSON_FIELDS = ("conversations", "messages", "history", "chosen", "rejected", "completion", "prompt", "tools")
# sharegpt role tags, as LLaMA-Factory's dataset_info.json names them.
DEFAULT_TAGS = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "observation_tag": "observation",
    "function_tag": "function_call",
    "system_tag": "system",
}


@dataclass(frozen=True)
class RecordError(Exception):
    """One record that cannot be read or mapped: where, why, and how to fix it."""

    field: str
    reason: str
    fix: str
    raw: str = ""  # the unreadable text itself, for the quarantine file

    def __str__(self) -> str:
        return f"{self.field}: {self.reason} ({self.fix})"


class FileError(ValueError):
    """A whole file cannot be read; the message names the file and the fix."""


# ---------------------------------------------------------------- readers


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | RecordError]]:
    suffix = path.suffix.lower()
    if not path.is_file():
        raise FileError(f"{path}: file not found; check ingest.datasets[].path in params.yaml (did you `dvc pull`?)")
    if suffix == ".jsonl":
        yield from _read_jsonl(path)
    elif suffix == ".json":
        yield from _read_json(path)
    elif suffix == ".csv":
        yield from _read_csv(path)
    elif suffix == ".parquet":
        yield from _read_parquet(path)
    else:
        raise FileError(f"{path}: unknown file type '{suffix}'; use .json, .jsonl, .csv or .parquet")


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any] | RecordError]]:
    with open(path, encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                yield n, RecordError("(line)", f"not valid JSON: {exc.msg} at column {exc.colno}", "fix the line's JSON", line.rstrip("\n"))
                continue
            yield n, value if isinstance(value, dict) else RecordError(
                "(line)", f"expected a JSON object, got {type(value).__name__}", "write one object per line", line.rstrip("\n")
            )


def _read_json(path: Path) -> Iterator[tuple[int, dict[str, Any] | RecordError]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FileError(f"{path}: not valid JSON ({exc}); fix the file or save it as JSONL, one record per line") from exc
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise FileError(f"{path}: expected a JSON list of records (or an object holding exactly one list)")
        data = lists[0]
    if not isinstance(data, list):
        raise FileError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    for n, value in enumerate(data, 1):
        yield n, value if isinstance(value, dict) else RecordError(
            "(record)", f"expected a JSON object, got {type(value).__name__}", "make every list item an object"
        )


def _read_csv(path: Path) -> Iterator[tuple[int, dict[str, Any] | RecordError]]:
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        reader = csv.DictReader(fh, restkey="\0extra", restval=None)
        header = reader.fieldnames or []
        if not header:
            raise FileError(f"{path}: empty CSV or no header row; the first line must name the columns")
        for row in reader:
            n = reader.line_num
            if "\0extra" in row or any(v is None for v in row.values()):
                got = len(header) + len(row.get("\0extra") or ()) - sum(v is None for v in row.values())
                raw = ",".join(str(v) for k, v in row.items() if k != "\0extra" and v is not None)
                raw = ",".join([raw, *row.get("\0extra", [])])
                yield n, RecordError("(row)", f"has {got} fields, the header has {len(header)}", "quote fields that hold commas", raw)
                continue
            yield n, {k: _maybe_json(k, v) for k, v in row.items()}


def _maybe_json(key: str, value: str) -> Any:
    if key in _JSON_FIELDS and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _read_parquet(path: Path) -> Iterator[tuple[int, dict[str, Any] | RecordError]]:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise FileError(f"{path}: not a readable Parquet file ({exc})") from exc
    yield from enumerate(rows, 1)


# ---------------------------------------------------------------- detection


def detect_format(row: dict[str, Any]) -> str | None:
    """The format a row's keys suggest, or None."""
    keys = set(row)
    if {"chosen", "rejected"} <= keys:
        return "preference"
    if {"completion", "label"} <= keys:
        return "feedback"
    if "conversations" in keys:
        return "sharegpt"
    if "messages" in keys:
        first = (row["messages"] or [None])[0] if isinstance(row["messages"], list) else None
        return "sharegpt" if isinstance(first, dict) and "from" in first else "openai"
    if {"instruction", "output"} <= keys:
        return "alpaca"
    if {"text", "label"} <= keys:
        return "cls"
    if "text" in keys:
        return "text"
    return None


def detect_dataset_format(rows: list[dict[str, Any]], path: Path) -> str:
    votes = Counter(f for f in map(detect_format, rows[:200]) if f)
    if not votes:
        keys = sorted(set().union(*rows[:5])) if rows else []
        raise FileError(
            f"{path}: cannot tell the format from the keys {keys}; declare `format:` "
            f"(one of {', '.join(FORMATS)}) and `columns:` for this dataset in params.yaml"
        )
    return votes.most_common(1)[0][0]


# ---------------------------------------------------------------- converters


def _need(row: dict[str, Any], key: str, fmt: str) -> Any:
    value = row.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        what = "missing" if value is None else "empty"
        raise RecordError(key, f"{what} for {fmt} format", f"give every record a non-empty '{key}' or map it with columns:")
    return value


def _str(value: Any, field: str) -> str:
    if isinstance(value, str):
        if value.strip():
            return value
        raise RecordError(field, "empty text", "remove the record or fill the field")
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):  # OpenAI content parts
        text = "".join(p.get("text", "") for p in value if p.get("type", "text") == "text")
        if text.strip():
            return text
    raise RecordError(field, f"expected text, got {type(value).__name__}", "make the field a string")


def _messages(value: Any, field: str, tags: dict[str, str], default_role: str | None = None) -> list[dict[str, str]]:
    """Messages from a string, one message dict, or a list of OpenAI/sharegpt message dicts."""
    if isinstance(value, str):
        if default_role is None:
            raise RecordError(field, "expected a list of messages, got text", "give a list of {role, content} objects")
        return [{"role": default_role, "content": _str(value, field)}]
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value:
        raise RecordError(field, "expected a non-empty list of messages", "give a list of {role, content} objects")
    roles = {
        tags["user_tag"]: "user", "user": "user", "human": "user",
        tags["assistant_tag"]: "assistant", "assistant": "assistant", "gpt": "assistant",
        tags["system_tag"]: "system", "system": "system",
        tags["observation_tag"]: "tool", "tool": "tool", "observation": "tool", "function": "tool",
        tags["function_tag"]: "function_call", "function_call": "function_call",
    }  # fmt: skip
    out = []
    for i, msg in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(msg, dict):
            raise RecordError(where, f"expected a message object, got {type(msg).__name__}", "use {role, content}")
        if tags["role_tag"] in msg:
            role_key, content_key = tags["role_tag"], tags["content_tag"]
        elif "role" in msg:
            role_key, content_key = "role", "content"
        else:
            raise RecordError(where, f"no role key ('{tags['role_tag']}' or 'role')", "set tags.role_tag for this dataset")
        tag = msg[role_key]
        if tag not in roles:
            raise RecordError(f"{where}.{role_key}", f"unknown role '{tag}'", "map it with tags: (user_tag, assistant_tag, ...)")
        role = roles[tag]
        if role == "assistant" and msg.get("tool_calls"):
            out.append({"role": "function_call", "content": json.dumps(msg["tool_calls"], ensure_ascii=False)})
            continue
        out.append({"role": role, "content": _str(msg.get(content_key), f"{where}.{content_key}")})
    return out


def _split_system(msgs: list[dict[str, str]], system: Any) -> list[dict[str, str]]:
    if system and not (msgs and msgs[0]["role"] == "system"):
        return [{"role": "system", "content": _str(system, "system")}, *msgs]
    return msgs


def _bool(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "good", "desirable"):
        return True
    if text in ("false", "0", "no", "bad", "undesirable"):
        return False
    raise RecordError(field, f"expected true/false, got {value!r}", "write the label as true or false")


def convert(fmt: str, row: dict[str, Any], tags: dict[str, str]) -> dict[str, Any]:
    """Map one row of a dataset in ``fmt`` to make_record keyword arguments (kind included)."""
    if fmt == "alpaca":
        msgs: list[dict[str, str]] = []
        for i, pair in enumerate(row.get("history") or []):
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
                raise RecordError(f"history[{i}]", "expected a [question, answer] pair", "write history as pairs")
            msgs += [{"role": "user", "content": _str(pair[0], f"history[{i}][0]")},
                     {"role": "assistant", "content": _str(pair[1], f"history[{i}][1]")}]  # fmt: skip
        prompt = _str(_need(row, "instruction", fmt), "instruction")
        if isinstance(row.get("input"), str) and row["input"].strip():
            prompt = f"{prompt}\n\n{row['input']}"
        msgs += [{"role": "user", "content": prompt},
                 {"role": "assistant", "content": _str(_need(row, "output", fmt), "output")}]  # fmt: skip
        return {"kind": "sft", "messages": _split_system(msgs, row.get("system"))}
    if fmt in ("sharegpt", "openai"):
        key = "conversations" if "conversations" in row else "messages"
        msgs = _messages(_need(row, key, fmt), key, tags)
        tools = row.get("tools")
        return {"kind": "sft", "messages": _split_system(msgs, row.get("system")),
                "tools": tools if isinstance(tools, str) or tools is None else json.dumps(tools)}  # fmt: skip
    if fmt in ("preference", "feedback"):
        if "prompt" in row:
            prompt = _messages(_need(row, "prompt", fmt), "prompt", tags, default_role="user")
        elif "instruction" in row:
            prompt = convert("alpaca", {**row, "output": "-"}, tags)["messages"][:-1]
        else:
            key = "conversations" if "conversations" in row else "messages"
            prompt = _messages(_need(row, key, fmt), key, tags, default_role="user")
        prompt = _split_system(prompt, row.get("system"))
        if fmt == "feedback":
            completion = _messages(_need(row, "completion", fmt), "completion", tags, default_role="assistant")
            return {"kind": "feedback", "messages": prompt, "completion": completion,
                    "label": _bool(_need(row, "label", fmt), "label")}  # fmt: skip
        chosen = _messages(_need(row, "chosen", fmt), "chosen", tags, default_role="assistant")
        rejected = _messages(_need(row, "rejected", fmt), "rejected", tags, default_role="assistant")
        return {"kind": "preference", "messages": prompt, "chosen": chosen, "rejected": rejected}
    if fmt == "text":
        return {"kind": "text", "text": _str(_need(row, "text", fmt), "text")}
    if fmt == "cls":
        label = _need(row, "label", fmt)
        if not isinstance(label, (str, int)) or isinstance(label, bool):
            raise RecordError("label", f"expected a class name or number, got {label!r}", "use a string or integer label")
        return {"kind": "cls", "text": _str(_need(row, "text", fmt), "text"), "label": label}
    raise ValueError(f"unknown format {fmt!r}")
