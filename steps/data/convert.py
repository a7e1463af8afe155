"""Mapping one row of a known dataset format to the canonical record's fields.

``convert(fmt, row, tags)`` turns an alpaca, sharegpt, openai, preference, feedback, text or
cls row into ``make_record`` keyword arguments; the small helpers check one field each. Every
problem raises ``RecordError`` naming the field, the reason and the fix, so ingest quarantines
the record instead of dropping it. Split out of steps/data/formats.py; callers import ``convert`` from here.
"""

from __future__ import annotations

import json
from typing import Any

from steps.data.errors import RecordError


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
    if isinstance(value, list) and all(isinstance(p, dict) and isinstance(p.get("text", ""), str) for p in value):  # OpenAI parts
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
        if not isinstance(tag, str):
            raise RecordError(f"{where}.{role_key}", f"expected a role name, got {type(tag).__name__} {tag!r:.60}", "write the role as text")
        if tag not in roles:
            raise RecordError(f"{where}.{role_key}", f"unknown role '{tag}'", "map it with tags: (user_tag, assistant_tag, ...)")
        role = roles[tag]
        if role == "assistant" and msg.get("tool_calls"):
            out.append({"role": "function_call", "content": json.dumps(msg["tool_calls"], ensure_ascii=False)})
            continue
        out.append({"role": role, "content": _str(msg.get(content_key), f"{where}.{content_key}")})
    return out


def _tools(tools: Any) -> str | None:
    if tools is None or isinstance(tools, str):
        return tools or None
    if isinstance(tools, (list, dict)):
        return json.dumps(tools, ensure_ascii=False)
    raise RecordError("tools", f"expected a JSON list of tool schemas, got {type(tools).__name__}", "write tools as a list or its JSON text")


def _last_answer(msgs: list[dict[str, str]], key: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Split a conversation into the prompt and its last assistant turn, the answer a KTO label judges."""
    if len(msgs) < 2 or msgs[-1]["role"] not in ("assistant", "function_call"):
        raise RecordError(key, "the last turn must be the assistant's answer that the label judges",
                          "end each conversation with the judged assistant turn, or give a completion column")  # fmt: skip
    return msgs[:-1], msgs[-1:]


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
        history = row.get("history")
        if history is not None and not isinstance(history, list):
            raise RecordError("history", f"expected a list of [question, answer] pairs, got {type(history).__name__}",
                              "write history as a list of pairs")  # fmt: skip
        for i, pair in enumerate(history or []):
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
                raise RecordError(f"history[{i}]", "expected a [question, answer] pair", "write history as pairs")
            msgs += [{"role": "user", "content": _str(pair[0], f"history[{i}][0]")},
                     {"role": "assistant", "content": _str(pair[1], f"history[{i}][1]")}]  # fmt: skip
        prompt = _str(_need(row, "instruction", fmt), "instruction")
        extra = row.get("input")
        if extra is not None and not isinstance(extra, str):  # never dropped, never turned into text by guess
            raise RecordError("input", f"expected text, got {type(extra).__name__} {extra!r:.60}", "write input as a string")
        if extra and extra.strip():
            prompt = f"{prompt}\n\n{extra}"
        msgs += [{"role": "user", "content": prompt},
                 {"role": "assistant", "content": _str(_need(row, "output", fmt), "output")}]  # fmt: skip
        return {"kind": "sft", "messages": _split_system(msgs, row.get("system")), "tools": _tools(row.get("tools"))}
    if fmt in ("sharegpt", "openai"):
        key = "conversations" if "conversations" in row else "messages"
        msgs = _messages(_need(row, key, fmt), key, tags)
        tools = row.get("tools")
        return {"kind": "sft", "messages": _split_system(msgs, row.get("system")), "tools": _tools(tools)}
    if fmt in ("preference", "feedback"):
        if "prompt" in row:
            prompt = _messages(_need(row, "prompt", fmt), "prompt", tags, default_role="user")
        elif "instruction" in row:
            prompt = convert("alpaca", {**row, "output": "-"}, tags)["messages"][:-1]
        else:
            key = "conversations" if "conversations" in row else "messages"
            prompt = _messages(_need(row, key, fmt), key, tags, default_role="user")
        if fmt == "feedback" and "completion" not in row and "prompt" not in row and "instruction" not in row:
            prompt, completion = _last_answer(prompt, key)  # LLaMA-Factory / TRL KTO: messages + label
        elif fmt == "feedback":
            completion = _messages(_need(row, "completion", fmt), "completion", tags, default_role="assistant")
        prompt = _split_system(prompt, row.get("system"))
        if fmt == "feedback":
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
