"""Tool calling: whether a chat template can show tools to the model, the grammar of a forced call, and reading calls back.

A request's ``tools`` reach the model only through its chat template's ``tools`` variable; a
template that never reads it would drop them silently, so the server refuses such a request (400)
rather than answer as if the model had seen them. ``tool_choice: "required"`` or a named function
forces one call: the reply is decoded under the grammar of ``{"name": ..., "arguments": {...}}``
(``call_schema``, the named tool's or any given tool's parameters). ``parse_tool_calls`` reads the
calls in a reply in the shapes chat templates teach: ``<tool_call>{...}</tool_call>`` blocks
(Hermes, Qwen), or a reply that is one JSON call or a list of them (Llama 3.1's ``parameters``,
OpenAI's ``{"type": "function", "function": {...}}``, the ``function_call`` turns tunegate trains on).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from typing import Any

_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)


def template_reads_tools(template: str | dict[str, str] | None) -> bool:
    """True when a chat template (or any of a tokenizer's named templates) reads the ``tools`` variable."""
    sources = list(template.values()) if isinstance(template, dict) else [template or ""]
    for source in sources:
        try:
            from jinja2 import meta
            from jinja2.ext import loopcontrols
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            env = ImmutableSandboxedEnvironment(extensions=[loopcontrols])
            if "tools" in meta.find_undeclared_variables(env.parse(source)):
                return True
        except Exception:  # a tag of transformers' own ({% generation %}): judge by the text
            if re.search(r"\btools\b", source):
                return True
    return False


def forced(tool_choice: Any) -> str | None:
    """The function a ``tool_choice`` forces ("*" for any of the tools: "required"), or None (auto, none)."""
    if tool_choice == "required":
        return "*"
    if isinstance(tool_choice, dict):
        return tool_choice["function"]["name"]
    return None


def call_schema(tools: Sequence[dict[str, Any]], name: str) -> dict[str, Any]:
    """The JSON schema of one call to the tool ``name`` ("*": any of ``tools``): its name and its parameters."""

    def one(function: dict[str, Any]) -> dict[str, Any]:
        arguments = function.get("parameters") or {"type": "object", "properties": {}}
        return {"type": "object", "properties": {"name": {"const": function["name"]}, "arguments": arguments},
                "required": ["name", "arguments"], "additionalProperties": False}  # fmt: skip

    chosen = [one(t["function"]) for t in tools if name in ("*", t["function"]["name"])]
    return chosen[0] if len(chosen) == 1 else {"anyOf": chosen}


def parse_tool_calls(text: str, names: Sequence[str]) -> tuple[str | None, list[dict[str, Any]]] | None:
    """``(content before the calls or None, tool_calls in OpenAI's shape)`` when ``text`` holds calls of the tools
    ``names``; None when it is an ordinary reply (not a call, a call to an unknown tool, or JSON that does not parse)."""
    blocks = _BLOCK.findall(text)
    if blocks:
        content = text[: text.index("<tool_call>")].strip() or None
    else:
        content, blocks = None, [m.group(1) if (m := _FENCE.match(text.strip())) else text.strip()]
    calls = []
    for block in blocks:
        try:
            found = json.loads(block)
        except ValueError:
            return None
        for item in found if isinstance(found, list) else [found]:
            if isinstance(item, dict) and item.get("type") == "function" and isinstance(item.get("function"), dict):
                item = item["function"]
            if not (isinstance(item, dict) and item.get("name") in names):
                return None
            arguments = item.get("arguments", item.get("parameters", {}))
            if not isinstance(arguments, str):
                arguments = json.dumps(arguments, ensure_ascii=False)
            calls.append({"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                          "function": {"name": item["name"], "arguments": arguments}})  # fmt: skip
    return (content, calls) if calls else None
