"""The OpenAI chat-completions wire format: what a request may hold, errors, and what a reply looks like.

``ChatRequest`` checks a POST /v1/chat/completions body and ``validation_error`` turns the first
problem into a 400 naming the field, so a client mistake is never a 500; ``ApiError`` is any
refusal in OpenAI's shape ``{"error": {message, type, param, code}}``; ``Reply`` turns one
generation into a chat.completion or a stream of chat.completion.chunk events. Moved out of
steps/serve.py (which re-exports every name) so the step module stays Config + run() + main().
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from steps._serving import Run, StopTrimmer

log = logging.getLogger("tunegate.serve")
ROLES = ("system", "developer", "user", "assistant", "tool")  # developer is OpenAI's newer name for system


# ---------------------------------------------------------------- the request, as OpenAI sends it
class Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    role: str
    content: Any = None  # a string or a list of {"type": "text", "text": ...} parts
    tool_calls: list[dict[str, Any]] | None = None

    @field_validator("role")
    @classmethod
    def _role(cls, role: str) -> str:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}; got '{role}'")
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
                raise ValueError(f"content[{i}] is a '{kind}' part; only text parts ({{\"type\": \"text\", \"text\": ...}}) are supported")
        return content

    @model_validator(mode="after")
    def _has_content(self) -> Message:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(f"a {self.role} message needs content (a string or a list of text parts)")
        return self

    def canonical(self) -> dict[str, str]:
        """The message as steps._schema has it: a tool call is a function_call turn (as ingest writes it)."""
        if self.role == "assistant" and self.tool_calls:
            return {"role": "function_call", "content": json.dumps(self.tool_calls, ensure_ascii=False)}
        text = self.content if isinstance(self.content, str) else "\n".join(p["text"] for p in self.content or [])
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    include_usage: bool = False


class ChatRequest(BaseModel):
    """POST /v1/chat/completions; fields this server does not use are ignored, as OpenAI-compatible servers do."""

    model_config = ConfigDict(strict=True, extra="ignore")
    model: str
    messages: list[Message] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: Any = None  # a string or up to 4 strings
    n: int = 1
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[dict[str, Any]] | None = None
    logprobs: bool | None = None

    @field_validator("n")
    @classmethod
    def _one(cls, n: int) -> int:
        if n != 1:
            raise ValueError(f"only n=1 is supported (got {n}); send one request per completion")
        return n

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, v: bool | None) -> bool | None:
        if v:
            raise ValueError("logprobs are not supported by this server; leave logprobs unset")
        return v

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: Any) -> Any:
        if not (v is None or isinstance(v, str) or (isinstance(v, list) and all(isinstance(s, str) for s in v))):
            raise ValueError(f"stop must be a string or a list of strings; got {v!r:.40}")
        if isinstance(v, list) and len(v) > 4:
            raise ValueError(f"at most 4 stop sequences; got {len(v)}")
        return v


# ---------------------------------------------------------------- errors, in OpenAI's shape
class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        kind = "server_error" if self.status >= 500 else "invalid_request_error"
        body = {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=headers)


def validation_error(errors: list[dict[str, Any]]) -> ApiError:
    """The first problem of a request that failed validation, as a 400 naming the field."""
    first = errors[0]
    loc = [x for x in first.get("loc", ()) if x != "body"]
    more = f" (and {len(errors) - 1} more problem{'s' * (len(errors) > 2)})" if len(errors) > 1 else ""
    if first.get("type") == "json_invalid":
        why = (first.get("ctx") or {}).get("error", "")
        return ApiError(400, f"the body is not valid JSON ({why}); send a JSON object", code="invalid_json")
    if not loc:
        what = "empty" if first.get("type") == "missing" else "not a JSON object"
        return ApiError(400, f"the body is {what}; send a JSON object with model and messages (Content-Type: application/json)")
    param = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in loc).lstrip(".")
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return ApiError(400, f"{param}: {msg}{more}", param=param, code="invalid_value")


# ---------------------------------------------------------------- the reply, as OpenAI returns it
@dataclass
class Reply:
    """One generation turned into an OpenAI chat.completion, or a stream of chat.completion.chunk events."""

    run: Run
    trimmer: StopTrimmer
    model: str
    prompt_tokens: int
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

    def completion(self) -> dict[str, Any]:
        text = "".join(self.pieces())
        reason, usage = self.finish()
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "finish_reason": reason, "logprobs": None}
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": [choice], "usage": usage}  # fmt: skip

    def events(self, include_usage: bool) -> Iterator[str]:
        """Server-sent events: a role chunk, content chunks, a finish chunk, usage if asked, then [DONE]."""
        try:
            yield self._sse({"role": "assistant", "content": ""})
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
