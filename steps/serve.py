"""serve: an OpenAI-compatible chat API over one model folder (the production model by default).

``python -m steps.serve [MODEL_DIR] [--params params.yaml] [--host H] [--port P]`` serves
GET /health, GET /v1/models and POST /v1/chat/completions (streaming with ``stream: true``).
The prompt is the model's own chat template rendered by ``steps._template`` (the render the
model was trained on) and generation stops at the template's end-of-turn token. A full model
folder or an unmerged PEFT adapter folder (on its ``base_model_name_or_path``) is served, with
vLLM when it is installed on a CUDA GPU and transformers otherwise (steps/_serving.py).
Bearer-token auth is on when ``$TUNEGATE_API_KEY`` (``serve.api_key_env``) is set. A client
mistake is a 4xx in OpenAI's error shape ``{"error": {message, type, param, code}}``, never a 500.
"""

from __future__ import annotations

import argparse
import dataclasses
import hmac
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from starlette.exceptions import HTTPException

from steps._config import ConfigError, load_section
from steps._model import ModelError
from steps._serving import BACKENDS, DTYPES, GenParams, Run, ServeError, StopTrimmer, load_engine
from steps._template import TemplateError, inference_prompt_ids

log = logging.getLogger("tunegate.serve")
ROLES = ("system", "developer", "user", "assistant", "tool")  # developer is OpenAI's newer name for system


@dataclass(frozen=True)
class ServeConfig:
    """The ``serve:`` section of params.yaml."""

    model: str = "production"  # a model folder, or a registry stage that `tunegate serve` resolves
    host: str = "127.0.0.1"  # loopback: nothing outside this machine can call it; 0.0.0.0 in a container
    port: int = 8000
    model_name: str | None = None  # the id in /v1/models and in requests; None: the folder's name
    api_key_env: str = "TUNEGATE_API_KEY"  # auth is on when this variable is set
    max_new_tokens: int = 256  # reply length when the request names none
    max_new_tokens_limit: int = 2048  # a request asking for more is refused (400)
    max_concurrency: int = 1  # generations at once; on CPU one at a time is fastest per request
    queue_timeout_s: float = 120.0  # a request waiting longer than this for a slot gets 503
    backend: str = "auto"  # auto: vllm when installed on a CUDA GPU, else transformers
    dtype: str = "auto"  # auto: bfloat16 on a GPU, float32 on CPU
    gpu_memory_utilization: float = 0.85  # vLLM's share of GPU memory (weights + KV cache)
    adapter_base: str | None = None  # an adapter's base folder here, when its base_model_name_or_path is elsewhere
    threads: int | None = None  # torch CPU threads; None: torch's default. Set it to the container's CPU limit

    def __post_init__(self) -> None:
        def bad(key: str, why: str) -> None:
            raise ConfigError(f"serve.{key}: {why}")

        if self.backend not in BACKENDS:
            bad("backend", f"must be one of {', '.join(BACKENDS)}; got {self.backend!r}")
        if self.dtype not in DTYPES:
            bad("dtype", f"must be one of {', '.join(DTYPES)}; got {self.dtype!r}")
        if not 0 <= self.port <= 65535:
            bad("port", f"must be a TCP port (0-65535); got {self.port}")
        if not 1 <= self.max_new_tokens <= self.max_new_tokens_limit:
            bad("max_new_tokens", f"need 1 <= max_new_tokens <= max_new_tokens_limit; got {self.max_new_tokens} and {self.max_new_tokens_limit}")
        if self.max_concurrency < 1 or self.queue_timeout_s <= 0:
            bad("max_concurrency", f"need max_concurrency >= 1 and queue_timeout_s > 0; got {self.max_concurrency}, {self.queue_timeout_s}")
        if not 0 < self.gpu_memory_utilization <= 1:
            bad("gpu_memory_utilization", f"is a fraction in (0, 1]; got {self.gpu_memory_utilization}")
        if self.threads is not None and self.threads < 1:
            bad("threads", f"is a count of CPU threads (1 or more), or null for torch's default; got {self.threads}")
        if not self.api_key_env:
            bad("api_key_env", "name the environment variable that holds the API key, e.g. TUNEGATE_API_KEY")


def resolve_model_dir(spec: str, resolver: Callable[[str], str | Path | None] | None = None) -> Path:
    """The folder to serve: ``spec`` if it is one, else what ``resolver`` (the registry) says it names.

    ``resolver(spec)`` returns the local folder of a registry stage such as ``production``, or None
    when the stage holds no model.

    Raises:
        ServeError: no such folder, or one that holds no model (config.json or adapter_config.json).
    """
    path = Path(spec).expanduser()
    if not path.is_dir():
        if resolver is None:
            raise ServeError(
                f"serve.model '{spec}': no such folder, and registry stages need the registry; pass a model folder "
                f"(e.g. models/merged) or run `tunegate serve`, which resolves '{spec}' from the registry"
            )
        found = resolver(spec)
        if found is None:
            raise ServeError(f"serve.model '{spec}': the registry has no model there yet; promote one, or pass a model folder")
        path = Path(found).expanduser()
    if not ((path / "config.json").is_file() or (path / "adapter_config.json").is_file()):
        raise ServeError(
            f"serve.model '{spec}': {path} holds no model (no config.json or adapter_config.json); point it at the "
            f"merge step's output (models/merged) or a train output folder"
        )
    return path


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


class BearerAuth:
    """ASGI middleware: every /v1 path needs ``Authorization: Bearer <key>``, checked before the body is read."""

    def __init__(self, app: Any, key: str) -> None:
        self.app, self.key = app, key.encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1") and not self._ok(scope):
            err = ApiError(401, "missing or wrong API key: send the header 'Authorization: Bearer <key>'", code="invalid_api_key")
            await err.response({"WWW-Authenticate": "Bearer"})(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _ok(self, scope: dict[str, Any]) -> bool:
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)


# ---------------------------------------------------------------- the app
def create_app(cfg: ServeConfig, model_dir: Path | str, engine: Any = None) -> FastAPI:
    """The FastAPI app serving ``model_dir`` (loaded here, once; ``engine`` replaces loading).

    Raises:
        ServeError: the folder cannot be served, or the API key variable is set but empty.
        TemplateError: the model's chat template renders training and serving prompts differently.
    """
    model_dir = Path(model_dir)
    key = os.environ.get(cfg.api_key_env)
    if key is not None and not key.strip():
        raise ServeError(f"${cfg.api_key_env} is set but empty; set it to the API key, or unset it to serve without auth")
    engine = engine or load_engine(cfg, model_dir)
    name, created = cfg.model_name or model_dir.resolve().name, int(model_dir.stat().st_mtime)
    card = {"id": name, "object": "model", "created": created, "owned_by": "tunegate"}
    slots, tokenizing = threading.BoundedSemaphore(cfg.max_concurrency), threading.Lock()
    app = FastAPI(title="tunegate", description=f"OpenAI-compatible chat API serving {name}")
    if key:
        app.add_middleware(BearerAuth, key=key.strip())
    elif cfg.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s without auth: set $%s to require a bearer token", cfg.host, cfg.api_key_env)

    @app.exception_handler(ApiError)
    async def _api_error(_: Any, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Any, exc: RequestValidationError) -> JSONResponse:
        return validation_error(list(exc.errors())).response()

    @app.exception_handler(HTTPException)
    async def _http(_: Any, exc: HTTPException) -> JSONResponse:
        return ApiError(exc.status_code, str(exc.detail)).response(exc.headers)

    @app.exception_handler(Exception)
    async def _crash(_: Any, exc: Exception) -> JSONResponse:
        log.exception("internal error")
        return ApiError(500, f"internal error ({type(exc).__name__}); see the server log").response()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": name, "backend": engine.backend}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [card]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> dict[str, Any]:
        if model_id != name:
            raise ApiError(404, f"the model '{model_id}' does not exist; this server serves '{name}'", "model", "model_not_found")
        return card

    def prompt_of(req: ChatRequest) -> list[int]:
        with tokenizing:  # one fast tokenizer shared by worker threads: one encode at a time
            return build_prompt(engine.tokenizer, req)

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest) -> Any:
        if req.model != name:
            raise ApiError(404, f"the model '{req.model}' does not exist; this server serves '{name}' (GET /v1/models)", "model", "model_not_found")
        prompt = await run_in_threadpool(prompt_of, req)
        params = GenParams(
            max_new_tokens=token_budget(req, len(prompt), engine.context, cfg), temperature=req.temperature,
            top_p=req.top_p, stop=tuple(s for s in ([req.stop] if isinstance(req.stop, str) else req.stop or []) if s),
            seed=req.seed,
        )  # fmt: skip
        if not await run_in_threadpool(slots.acquire, True, cfg.queue_timeout_s):
            raise ApiError(503, f"the server is busy (all {cfg.max_concurrency} generation slots taken); retry later", code="server_busy")
        try:
            gen = engine.start(prompt, params, slots.release)
        except BaseException:
            slots.release()
            raise
        reply = Reply(gen, StopTrimmer(params.stop), name, len(prompt))
        if req.stream:
            usage = bool(req.stream_options and req.stream_options.include_usage)
            headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
            return EventStream(reply.events(usage), on_close=gen.cancel, media_type="text/event-stream", headers=headers)
        return await run_in_threadpool(reply.completion)

    return app


class EventStream(StreamingResponse):
    """A streaming response that stops the generation however it ends: finished, or the client went away."""

    def __init__(self, content: Iterator[str], on_close: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


def build_prompt(tokenizer: Any, req: ChatRequest) -> list[int]:
    """The request's messages as token ids, rendered exactly as training renders them."""
    try:
        return inference_prompt_ids(tokenizer, [m.canonical() for m in req.messages], req.tools)
    except Exception as exc:  # jinja raise_exception, a template that rejects the roles, bad tools
        raise ApiError(400, f"the model's chat template rejected the messages: {exc}", "messages", "invalid_messages") from exc


def token_budget(req: ChatRequest, prompt_tokens: int, context: int, cfg: ServeConfig) -> int:
    """max_new_tokens for this request; a 400 naming the limit when it cannot fit."""
    field = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
    asked = req.max_completion_tokens or req.max_tokens
    if asked and asked > cfg.max_new_tokens_limit:
        raise ApiError(400, f"{field}={asked} is above this server's limit of {cfg.max_new_tokens_limit} tokens "
                            f"(serve.max_new_tokens_limit); ask for fewer", field, "max_tokens_exceeded")  # fmt: skip
    room = context - prompt_tokens
    if room < 1:
        raise ApiError(400, f"the messages are {prompt_tokens} tokens with the chat template; this model's context is "
                            f"{context} tokens for prompt and reply together; shorten the conversation",
                       "messages", "context_length_exceeded")  # fmt: skip
    if asked and asked > room:
        raise ApiError(400, f"{field}={asked} plus the {prompt_tokens}-token prompt exceeds this model's context of "
                            f"{context} tokens; ask for at most {room}", field, "context_length_exceeded")  # fmt: skip
    return asked or min(cfg.max_new_tokens, room)


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


# ---------------------------------------------------------------- entry points
def run(cfg: ServeConfig, model_dir: Path | str | None = None, resolver: Callable[[str], str | Path | None] | None = None) -> None:
    """Serve until interrupted: ``model_dir``, or ``cfg.model`` resolved (through ``resolver`` for registry stages)."""
    import torch
    import uvicorn

    if cfg.threads:  # more threads than the CPUs a container may use makes every token many times slower
        torch.set_num_threads(cfg.threads)
    folder = resolve_model_dir(str(model_dir or cfg.model), resolver)
    app = create_app(cfg, folder)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="info")


OVERRIDES = ("host", "port", "model_name", "backend", "adapter_base")  # flags that override the serve: section


def parser() -> argparse.ArgumentParser:
    """``python -m steps.serve [MODEL_DIR] [--params P] [--host H] [--port N] [--model-name ID] [--backend B] [--adapter-base DIR]``."""
    ap = argparse.ArgumentParser(prog="python -m steps.serve", description=(__doc__ or "").split("\n")[0])
    ap.add_argument("model_dir", nargs="?", default=None, help="model folder; default: serve.model from params")
    ap.add_argument("--params", default=None, help="params file (default: params.yaml, or built-in defaults without one)")
    ap.add_argument("--host")
    ap.add_argument("--port", type=int)
    ap.add_argument("--model-name", dest="model_name", help="the model id clients send; default: the folder's name")
    ap.add_argument("--backend", choices=BACKENDS)
    ap.add_argument("--adapter-base", dest="adapter_base", help="an adapter's base model folder on this machine")
    return ap


def main(argv: list[str] | None = None, resolver: Callable[[str], str | Path | None] | None = None) -> int:
    """Serve until interrupted; 2 with one line on stderr when the params or the model cannot be served."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        params = args.params or ("params.yaml" if Path("params.yaml").is_file() else {})
        cfg = load_section(ServeConfig, "serve", params)
        cfg = dataclasses.replace(cfg, **{k: getattr(args, k) for k in OVERRIDES if getattr(args, k) is not None})
        run(cfg, args.model_dir, resolver)
    except (ConfigError, ServeError, ModelError, TemplateError) as exc:
        print(f"serve: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
