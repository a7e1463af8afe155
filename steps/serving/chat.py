"""The OpenAI chat-completions wire format: what a request may hold, errors, and what a reply looks like.

``ChatRequest`` checks a POST /v1/chat/completions body and ``validation_error`` turns the first
problem into a 400 naming the field, so a client mistake is never a 500; ``ApiError`` is any
refusal in OpenAI's shape ``{"error": {message, type, param, code}}``; ``Reply`` turns one
generation into a chat.completion or a stream of chat.completion.chunk events. Kept out of
steps/serve.py so the step module stays Config + run() + main().
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from steps.serving.generation import GenParams, Run, StopTrimmer
from steps.serving.tools import parse_tool_calls

log = logging.getLogger("tunegate.serve")
ROLES = ("system", "developer", "user", "assistant", "tool", "function")  # developer: OpenAI's newer system; function: the old tool
# A temperature below this samples as greedy decoding, as vLLM does (its _SAMPLING_EPS): logits divided by
# 1e-300 overflow float32 and the probabilities are NaN, and nothing that small differs from greedy anyway.
GREEDY_BELOW = 1e-5
INT64 = 2**63  # seed: OpenAI's bounds are a signed 64-bit integer's; torch.manual_seed raises past 2**64
NAME = r"^[a-zA-Z0-9_-]{1,64}$"  # OpenAI's rule for function and json_schema names


def _unsupported(why: str) -> PydanticCustomError:
    """A value OpenAI's API allows that this server cannot honour: refused (400), never silently ignored."""
    return PydanticCustomError("unsupported_value", why)


def _bad_text(data: Any) -> str | None:
    """The path of the first string (or key) in ``data`` that is not valid Unicode (a lone surrogate, such as JSON's "\\ud800")."""
    todo: list[tuple[str, Any]] = [("", data)]  # a loop, not recursion: JSON nests as deep as the parser allows
    while todo:
        path, value = todo.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return path or "body"
        elif isinstance(value, dict):
            for key, item in value.items():
                todo.append((f"{path}.{key}".lstrip(".") if isinstance(key, str) else path, item))
                if isinstance(key, str):
                    todo.append((path or "body", key))
        elif isinstance(value, list):
            todo.extend((f"{path}[{i}]", item) for i, item in enumerate(value))
    return None


# ---------------------------------------------------------------- the request, as OpenAI sends it
class Message(BaseModel):
    """One message; the fields OpenAI's message shapes have (of any role), and no others."""

    model_config = ConfigDict(strict=True, extra="forbid")
    role: str
    content: Any = None  # a string or a list of {"type": "text", "text": ...} parts
    name: str | None = None  # accepted, not rendered: the chat templates served here have no place for it
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    function_call: dict[str, Any] | None = None  # deprecated by OpenAI for tool_calls; read as one tool call
    refusal: str | None = None
    audio: dict[str, Any] | None = None  # an earlier audio reply's id: accepted, not used (the reply is text)

    @field_validator("role")
    @classmethod
    def _role(cls, role: str) -> str:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}; got {role!r:.40}")
        return role

    @field_validator("content", mode="before")
    @classmethod
    def _text(cls, content: Any) -> Any:
        if content is None or isinstance(content, str):
            return content
        if not isinstance(content, list):
            raise ValueError(f"content must be a string or a list of text parts; got {type(content).__name__}")
        for i, part in enumerate(content):
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ValueError(f"content[{i}] is a {kind!r:.40} part; only text parts ({{\"type\": \"text\", \"text\": ...}}) are supported")
        return content

    @model_validator(mode="after")
    def _has_content(self) -> Message:
        if self.content is None and not (self.role == "assistant" and (self.tool_calls or self.function_call)):
            raise ValueError(f"a {self.role} message needs content (a string or a list of text parts)")
        return self

    def canonical(self) -> dict[str, str]:
        """The message as steps.core.schema has it: a tool call is a function_call turn (as ingest writes it)."""
        calls = self.tool_calls or ([{"type": "function", "function": self.function_call}] if self.function_call else None)
        if self.role == "assistant" and calls:
            return {"role": "function_call", "content": json.dumps(calls, ensure_ascii=False)}
        text = self.content if isinstance(self.content, str) else "\n".join(p["text"] for p in self.content or [])
        role = {"developer": "system", "function": "tool"}.get(self.role, self.role)
        return {"role": role, "content": text}


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    include_usage: bool | None = False
    include_obfuscation: bool | None = None  # OpenAI's padding against length side channels: nothing to pad here


class Function(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    name: str = Field(pattern=NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON schema of the arguments object
    strict: bool | None = None  # a forced call always follows the parameters schema


class Tool(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    type: str
    function: Function

    @field_validator("type")
    @classmethod
    def _function(cls, v: str) -> str:
        if v != "function":
            raise _unsupported(f"only function tools are supported (got type {v!r:.40}); "
                               f"send {{\"type\": \"function\", \"function\": ...}}")  # fmt: skip
        return v


class JsonSchema(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    name: str = Field(pattern=NAME)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")  # None: any JSON value
    strict: bool | None = None  # the reply always follows the schema: decoding is constrained to it


class ResponseFormat(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchema | None = None

    @model_validator(mode="after")
    def _schema_with_type(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            why = "is required with type json_schema"
            why = why if self.type == "json_schema" else f"is only allowed with type json_schema, not {self.type}"
            raise PydanticCustomError("invalid_value", "{param}: " + why, {"param": "response_format.json_schema"})
        return self

    def reply_schema(self) -> dict[str, Any] | None:
        """The JSON schema the reply must match; None for free text."""
        if self.type == "json_object":
            return {"type": "object"}
        if self.json_schema is not None:
            return self.json_schema.schema_ if self.json_schema.schema_ is not None else {}
        return None


class ChatRequest(BaseModel):
    """POST /v1/chat/completions: every field of OpenAI's chat completions API, in its bounds, and no other.

    An unknown field is a 400, as OpenAI answers it. A field this server cannot honour (``n`` > 1,
    ``logprobs``, penalties, ``logit_bias``, audio, web search, the deprecated ``functions``) is a 400
    naming it; fields that change nothing about the reply (``user``, ``metadata``, ``store``,
    ``service_tier``, ...) are checked and accepted. ``temperature`` 0 and any temperature below
    ``GREEDY_BELOW`` (1e-5), or ``top_p`` 0, decode greedily.
    """

    model_config = ConfigDict(strict=True, extra="forbid")
    model: str
    messages: list[Message] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: Any = None  # a string or up to 4 strings
    n: int | None = Field(1, ge=1, le=128)
    seed: int | None = Field(None, ge=-INT64, lt=INT64)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    tools: list[Tool] | None = None  # passed to the chat template (a template that never reads tools: 400)
    tool_choice: Any = None  # "none", "auto", "required" or {"type": "function", "function": {"name": ...}}
    parallel_tool_calls: bool | None = None  # a forced call is one call; an unforced reply may hold several
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, int] | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: Any = None
    prediction: dict[str, Any] | None = None  # a latency hint: the reply is the same without it
    metadata: dict[str, str] | None = Field(None, max_length=16)
    store: bool | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    service_tier: str | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _unicode(cls, data: Any) -> Any:
        if isinstance(data, dict) and (path := _bad_text(data)) is not None:
            raise PydanticCustomError("invalid_text", "{param}: holds a lone UTF-16 surrogate (e.g. \\ud800), which is not text; "
                                      "send valid Unicode", {"param": path})  # fmt: skip
        return data

    @field_validator("n")
    @classmethod
    def _one(cls, n: int | None) -> int | None:
        if n not in (None, 1):
            raise _unsupported(f"only n=1 is supported (got {n}); send one request per completion")
        return n

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, v: bool | None) -> bool | None:
        if v:
            raise _unsupported("logprobs are not supported by this server; leave logprobs unset")
        return v

    @field_validator("top_logprobs")
    @classmethod
    def _no_top_logprobs(cls, v: int | None) -> int | None:
        if v:
            raise _unsupported(f"top_logprobs={v} needs logprobs, which this server does not support; leave it unset or 0")
        return v

    @field_validator("frequency_penalty", "presence_penalty")
    @classmethod
    def _no_penalty(cls, v: float | None) -> float | None:
        if v:
            raise _unsupported(f"penalties are not supported by this server (got {v}); leave it unset or 0")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _no_bias(cls, v: dict[str, int] | None) -> dict[str, int] | None:
        for token, bias in (v or {}).items():
            if not (token.isdigit() and -100 <= bias <= 100):
                raise ValueError(f"logit_bias maps token ids (\"123\") to a bias from -100 to 100; got {token!r:.20}: {bias}")
        if v:
            raise _unsupported("logit_bias is not supported by this server; leave it unset or {}")
        return v

    @field_validator("modalities")
    @classmethod
    def _text_only(cls, v: list[str] | None) -> list[str] | None:
        if v and any(m != "text" for m in v):
            raise _unsupported(f"this server replies with text only; send modalities [\"text\"] or leave it unset (got {v!r:.40})")
        return v

    @field_validator("audio", "web_search_options", "functions", "function_call")
    @classmethod
    def _not_here(cls, v: Any, info: Any) -> Any:
        fix = {"audio": "this server replies with text only", "web_search_options": "this server has no web search",
               "functions": "functions is deprecated: send tools", "function_call": "function_call is deprecated: send tool_choice"}
        if v is not None:
            raise _unsupported(f"{fix[info.field_name]}; leave {info.field_name} unset")
        return v

    @field_validator("tool_choice")
    @classmethod
    def _tool_choice(cls, v: Any) -> Any:
        if not (v is None or v in ("none", "auto", "required") or (isinstance(v, dict) and isinstance(v.get("type"), str))):
            raise ValueError(f"tool_choice must be \"none\", \"auto\", \"required\" or an object with a type; got {v!r:.40}")
        if isinstance(v, dict):
            function = v.get("function")
            if v["type"] != "function":
                raise _unsupported(f"only function tool choices are supported (got type {v['type']!r:.40}); "
                                   f"send {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}")  # fmt: skip
            named = isinstance(function, dict) and set(function) == {"name"} and isinstance(function["name"], str)
            if set(v) != {"type", "function"} or not named:
                raise ValueError('a named tool_choice is {"type": "function", "function": {"name": NAME}} and nothing else')
        return v

    @model_validator(mode="after")
    def _tools_and_choice(self) -> ChatRequest:
        names = [t.function.name for t in self.tools or []]
        choice = self.tool_choice
        if choice == "required" and not names:
            raise PydanticCustomError("invalid_value", '{param}: "required" needs tools to call; send tools or leave tool_choice unset',
                                      {"param": "tool_choice"})  # fmt: skip
        if isinstance(choice, dict) and choice["function"]["name"] not in names:
            raise PydanticCustomError("invalid_value", "{param}: names the function {name!r}, not among the tools ({names})",
                                      {"param": "tool_choice.function.name", "name": choice["function"]["name"][:64],
                                       "names": ", ".join(names) or "none given"})  # fmt: skip
        return self

    def tool_dicts(self) -> list[dict[str, Any]] | None:
        """The tools as the chat template reads them (OpenAI's shape, unset fields left out)."""
        return [t.model_dump(exclude_none=True) for t in self.tools] if self.tools else None

    def tool_names(self) -> list[str] | None:
        """The functions a reply may call (read back into tool_calls); None when no call is expected (no tools, or "none")."""
        if not self.tools or self.tool_choice == "none":
            return None
        return [t.function.name for t in self.tools]

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: Any) -> Any:
        if not (v is None or isinstance(v, str) or (isinstance(v, list) and all(isinstance(s, str) for s in v))):
            raise ValueError(f"stop must be a string or a list of strings; got {v!r:.40}")
        if isinstance(v, list) and len(v) > 4:
            raise ValueError(f"at most 4 stop sequences; got {len(v)}")
        return v

    @model_validator(mode="after")
    def _stream_options(self) -> ChatRequest:
        if self.stream_options is not None and not self.stream:
            raise PydanticCustomError("invalid_value", "{param}: is only allowed with stream: true; drop it or stream",
                                      {"param": "stream_options"})  # fmt: skip
        return self

    def gen_params(self, max_new_tokens: int, schema: Any = None, grammar: Any = None) -> GenParams:
        """The sampling settings to generate with: greedy for temperature 0 (or below GREEDY_BELOW) and top_p 0;
        ``grammar`` (compiled from ``schema``) constrains the reply."""
        greedy = (self.temperature is not None and self.temperature < GREEDY_BELOW) or self.top_p == 0
        stops = [self.stop] if isinstance(self.stop, str) else self.stop or []
        return GenParams(
            max_new_tokens=max_new_tokens, temperature=0.0 if greedy else self.temperature, top_p=None if greedy else self.top_p,
            stop=tuple(s for s in stops if s), seed=self.seed, grammar=grammar, schema=schema,
        )  # fmt: skip


# ---------------------------------------------------------------- errors, in OpenAI's shape
class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def response(self, headers: dict[str, str] | None = None) -> Response:
        """The error as JSON; non-ASCII is escaped, so a message quoting any client text always encodes."""
        kind = "server_error" if self.status >= 500 else "invalid_request_error"
        body = {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}
        return Response(json.dumps(body), status_code=self.status, headers=headers, media_type="application/json")


_PLAIN = {  # pydantic's wording where it names a Python class or says too little
    "model_type": "must be a JSON object",
    "dict_type": "must be a JSON object",
    "extra_forbidden": "is not a parameter of OpenAI's chat completions API (or not one this object has); remove it",
}


def validation_error(errors: list[dict[str, Any]]) -> ApiError:
    """The first problem of a request that failed validation, as a 400 naming the field, what is wrong and the fix."""
    first = errors[0]
    ctx = first.get("ctx") or {}
    loc = [x for x in first.get("loc", ()) if x != "body"]
    more = f" (and {len(errors) - 1} more problem{'s' * (len(errors) > 2)})" if len(errors) > 1 else ""
    kind = first.get("type")
    if kind == "json_invalid":
        return ApiError(400, f"the body is not valid JSON ({ctx.get('error', '')}); send a JSON object", code="invalid_json")
    if "param" in ctx:  # a check across fields that names its own field
        return ApiError(400, f"{first.get('msg')}{more}", param=ctx["param"], code="invalid_value")
    if not loc:
        what = "empty" if kind == "missing" else "not a JSON object"
        return ApiError(400, f"the body is {what}; send a JSON object with model and messages (Content-Type: application/json)")
    param = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in loc).lstrip(".")
    msg = _PLAIN.get(str(kind)) or str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    value = first.get("input")
    if kind not in {*_PLAIN, "value_error", "unsupported_value", "missing"} and isinstance(value, (bool, int, float, str)):
        msg += f"; got {json.dumps(value)[:40]}"  # pydantic's own messages say the rule, not the value
    code = {"extra_forbidden": "unknown_parameter", "unsupported_value": "unsupported_value"}.get(str(kind), "invalid_value")
    return ApiError(400, f"{param}: {msg}{more}", param=param, code=code)


# ---------------------------------------------------------------- the reply, as OpenAI returns it
@dataclass
class Reply:
    """One generation turned into an OpenAI chat.completion, or a stream of chat.completion.chunk events."""

    run: Run
    trimmer: StopTrimmer
    model: str
    prompt_tokens: int
    tools: list[str] | None = None  # function names a reply may call: it is read back into tool_calls
    id: str = dataclasses.field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = dataclasses.field(default_factory=lambda: int(time.time()))

    def pieces(self) -> Iterator[str]:
        """Text to send, cut at a stop string; stops the generation once one is seen."""
        for piece in self.run:
            if text := self.trimmer.feed(piece):
                yield text
            if self.trimmer.stopped:
                self.run.cancel()
        if tail := self.trimmer.flush():
            yield tail

    def finish(self) -> tuple[str, dict[str, int]]:
        gen = self.run.result
        reason = "stop" if self.trimmer.stopped or gen.stopped else "length"
        n = self.prompt_tokens
        return reason, {"prompt_tokens": n, "completion_tokens": gen.completion_tokens, "total_tokens": n + gen.completion_tokens}

    def calls(self, text: str) -> tuple[str | None, list[dict[str, Any]]] | None:
        """The tool calls in a finished reply's text (content before them, calls), or None for an ordinary reply."""
        return parse_tool_calls(text, self.tools) if self.tools else None

    def completion(self) -> dict[str, Any]:
        text = "".join(self.pieces())
        reason, usage = self.finish()
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if found := self.calls(text):
            message, reason = {"role": "assistant", "content": found[0], "tool_calls": found[1]}, "tool_calls"
        choice = {"index": 0, "message": message, "finish_reason": reason, "logprobs": None}
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": [choice], "usage": usage}  # fmt: skip

    def events(self, include_usage: bool) -> Iterator[str]:
        """Server-sent events: a role chunk, content chunks, a finish chunk, usage if asked, then [DONE].

        With tools the reply is sent when it is complete (a call is known only once it parses): its content
        in one chunk, or one chunk per tool call."""
        try:
            yield self._sse({"role": "assistant", "content": ""})
            if self.tools:
                text = "".join(self.pieces())
                reason, usage = self.finish()
                found = self.calls(text)
                if found is None and text:
                    yield self._sse({"content": text})
                elif found is not None:
                    reason = "tool_calls"
                    if found[0]:
                        yield self._sse({"content": found[0]})
                    for i, call in enumerate(found[1]):
                        yield self._sse({"tool_calls": [{"index": i, **call}]})
            else:
                for text in self.pieces():
                    yield self._sse({"content": text})
                reason, usage = self.finish()
            yield self._sse({}, reason)
            if include_usage:
                yield self._data({**self._head(), "choices": [], "usage": usage})
        except Exception as exc:  # the status line is gone: report it in the stream, as OpenAI does
            log.exception("generation failed mid-stream")
            yield self._data({"error": {"message": f"generation failed ({type(exc).__name__}); see the server log",
                                        "type": "server_error", "param": None, "code": None}})  # fmt: skip
        yield "data: [DONE]\n\n"

    def _head(self) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model}

    def _sse(self, delta: dict[str, Any], finish: str | None = None) -> str:
        return self._data({**self._head(), "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    @staticmethod
    def _data(obj: dict[str, Any]) -> str:
        return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"
