"""The FastAPI app behind steps.serve: bearer auth, the body limit, the routes, streaming, each request's prompt and budget.

``create_app`` loads the engine once and serves GET /health, GET /v1/models[/{id}] and POST
/v1/chat/completions, answering every error (validation, HTTP, a crash) in OpenAI's shape
(steps/serving/chat.py). A request's prompt, and the grammar of its response_format or forced tool
call, are built in a worker thread outside the generation slots (steps/serving/prompt.py); requests
holding slots generate together (steps/serving/batching.py); a request whose client leaves, while it
waits for a slot or while it generates, streaming or not, is stopped at the next token. Kept out of steps/serve.py so the step
module stays Config + run() + main(); ServeConfig is named for types only, so there is no cycle.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from starlette.exceptions import HTTPException

from steps.models.structured import unenforced_keyword
from steps.serving.backend import load_engine
from steps.serving.chat import ApiError, ChatRequest, Reply, validation_error
from steps.serving.folder import ServeError
from steps.serving.generation import StopTrimmer
from steps.serving.prompt import PromptBuilder
from steps.serving.tools import call_schema, forced, template_reads_tools

if TYPE_CHECKING:
    from steps.serving.config import ServeConfig

log = logging.getLogger("tunegate.serve")
OPEN = ("/health",)  # the only path without the key: probes carry none
POLL_S = 0.1  # how often a waiting or non-streaming request checks that its client is still there


class BearerAuth:
    """ASGI middleware: every path but /health (the API, /docs, /openapi.json) needs ``Authorization: Bearer <key>``,
    checked before the body is read."""

    def __init__(self, app: Any, key: str) -> None:
        self.app, self.key = app, key.encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN and not self._ok(scope):
            err = ApiError(401, "missing or wrong API key: send the header 'Authorization: Bearer <key>'", code="invalid_api_key")
            await err.response({"WWW-Authenticate": "Bearer"})(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _ok(self, scope: dict[str, Any]) -> bool:
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is a 413, judged from its Content-Length before a
    byte is kept, else as soon as the bytes read pass the limit (a chunked upload).

    Nothing of a refused body is kept, but up to ``drain`` more bytes of it are read and thrown away before the
    413 is sent: a server that closes a connection with unread bytes in it makes the kernel answer the client
    with a reset, which can destroy the 413 before the client reads it (measured: 5 of 40 uploads of 5 MB lost
    their answer). A body longer than ``drain`` gets the 413 and a closed connection at once."""

    def __init__(self, app: Any, limit: int, drain: int = 64 << 20) -> None:
        self.app, self.limit, self.drain = app, limit, drain

    def _message(self, size: str) -> str:
        return f"the request body is {size} this server's limit of {self.limit} bytes (serve.max_body_bytes); send a shorter conversation"

    async def _discard(self, receive: Any, more: bool, budget: int) -> None:
        """Read and drop what is left of the body, at most ``budget`` bytes."""
        while more and budget > 0:
            message = await receive()
            if message["type"] != "http.request":
                return
            budget -= len(message.get("body", b""))
            more = message.get("more_body", False)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            if int(declared) <= self.drain:
                await self._discard(receive, True, self.drain)
            err = ApiError(413, self._message(f"{int(declared)} bytes, over"), code="request_too_large")
            await err.response({"Connection": "close"})(scope, receive, send)
            return
        seen = 0

        async def counted() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b"")) if message["type"] == "http.request" else 0
            if seen > self.limit:  # FastAPI passes an HTTPException raised while reading the body to the handlers
                await self._discard(receive, message.get("more_body", False), self.drain)
                raise HTTPException(413, self._message("over"), {"Connection": "close"})
            return message

        await self.app(scope, counted, send)


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
    card = {"id": name, "object": "model", "created": created, "owned_by": "tunegate",
            "max_model_len": engine.context}  # the context, from the model's folder, named as vLLM names it
    slots, prompts = threading.BoundedSemaphore(cfg.max_concurrency), PromptBuilder(engine.tokenizer)
    reads_tools = template_reads_tools(engine.tokenizer.chat_template)
    app = FastAPI(title="tunegate", description=f"OpenAI-compatible chat API serving {name}")
    app.add_middleware(BodyLimit, limit=cfg.max_body_bytes)
    if key:  # added last: the outer layer, so a caller without the key learns nothing, not even the limit
        app.add_middleware(BearerAuth, key=key.strip())
    elif cfg.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s without auth: set $%s to require a bearer token", cfg.host, cfg.api_key_env)

    @app.exception_handler(ApiError)
    async def _api_error(_: Any, exc: ApiError) -> Response:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Any, exc: RequestValidationError) -> Response:
        return validation_error(list(exc.errors())).response()

    @app.exception_handler(HTTPException)
    async def _http(_: Any, exc: HTTPException) -> Response:
        if exc.status_code == 400 and exc.__cause__ is not None:  # FastAPI could not read the body: not UTF-8, nested too deep
            why = f"the body could not be read as JSON ({type(exc.__cause__).__name__}: not UTF-8, or nested too deeply); send a JSON object"
            return ApiError(400, why, code="invalid_json").response()
        code = "request_too_large" if exc.status_code == 413 else None
        return ApiError(exc.status_code, str(exc.detail), code=code).response(exc.headers)

    @app.exception_handler(Exception)
    async def _crash(_: Any, exc: Exception) -> Response:
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

    async def take_slot(request: Request) -> None:
        """Wait for a generation slot, up to queue_timeout_s (then 503), giving up when the client leaves."""
        deadline = time.monotonic() + cfg.queue_timeout_s
        while not await run_in_threadpool(slots.acquire, True, max(0.0, min(POLL_S, deadline - time.monotonic()))):
            if await request.is_disconnected():
                raise ApiError(499, "the client closed the connection while waiting for a generation slot", code="client_closed")
            if time.monotonic() >= deadline:
                raise ApiError(503, f"the server is busy (all {cfg.max_concurrency} generation slots taken); retry later", code="server_busy")

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest, request: Request) -> Any:
        if req.model != name:
            raise ApiError(404, f"the model {req.model!r:.80} does not exist; this server serves '{name}' (GET /v1/models)", "model", "model_not_found")
        if req.tools and not reads_tools:
            raise ApiError(400, "tools: this model's chat template never reads `tools`, so the model would not see them "
                                "and could not call one; serve a model whose chat template renders tools, or leave tools unset",
                           "tools", "unsupported_value")  # fmt: skip
        prompt = await run_in_threadpool(build_prompt, prompts, req)  # worker threads, outside the generation slots
        schema, grammar = await run_in_threadpool(reply_grammar, engine, req)
        params = req.gen_params(token_budget(req, len(prompt), engine.context, cfg), schema, grammar)
        await take_slot(request)
        try:
            gen = engine.start(prompt, params, slots.release)
        except BaseException:
            slots.release()
            raise
        reply = Reply(gen, StopTrimmer(params.stop), name, len(prompt), req.tool_names())
        if req.stream:
            usage = bool(req.stream_options and req.stream_options.include_usage)
            headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
            return EventStream(reply.events(usage), on_close=gen.cancel, media_type="text/event-stream", headers=headers)
        return await until_done_or_gone(request, reply.completion, gen.cancel)

    return app


async def until_done_or_gone(request: Request, work: Callable[[], Any], cancel: Callable[[], None]) -> Any:
    """``work()`` in a worker thread; ``cancel()`` when the client leaves first (the generation stops at its next token)."""
    task = asyncio.ensure_future(run_in_threadpool(work))
    while not task.done():
        await asyncio.wait({task}, timeout=POLL_S)
        if not task.done() and await request.is_disconnected():
            cancel()
            break
    return await task


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


def build_prompt(prompts: PromptBuilder, req: ChatRequest) -> list[int]:
    """The request's messages as token ids, rendered exactly as training renders them (special-token text kept as text)."""
    try:
        return prompts([m.canonical() for m in req.messages], req.tool_dicts())
    except ApiError:
        raise
    except Exception as exc:  # jinja raise_exception, a template that rejects the roles, bad tools
        raise ApiError(400, f"the model's chat template rejected the messages: {exc}", "messages", "invalid_messages") from exc


def reply_grammar(engine: Any, req: ChatRequest) -> tuple[Any, Any]:
    """``(schema, compiled grammar)`` the reply must match: a forced tool call's, else response_format's; (None, None): free text.

    Raises:
        ApiError: 400 naming the schema's field when the decoder cannot enforce or compile it.
    """
    if (name := forced(req.tool_choice)) is not None:
        tools = req.tool_dicts() or []
        schema = call_schema(tools, name)
        parts = [(f"tools[{i}].function.parameters", t["function"].get("parameters") or {})
                 for i, t in enumerate(tools) if name in ("*", t["function"]["name"])]  # fmt: skip
    elif req.response_format is not None and (schema := req.response_format.reply_schema()) is not None:
        where = "response_format.json_schema.schema" if req.response_format.type == "json_schema" else "response_format"
        parts = [(where, schema)]
    else:
        return None, None
    for where, part in parts:
        if (path := unenforced_keyword(part)) is not None:
            raise ApiError(400, f"{where}.{path}: the structured-output decoder (xgrammar) does not enforce this keyword, "
                                f"so a reply could break it; remove it, or say it with keywords it enforces (anyOf, enum, bounds)",
                           f"{where}.{path}", "invalid_schema")  # fmt: skip
    where = parts[0][0] if len(parts) == 1 else "tools"
    try:
        return schema, engine.compile_schema(schema)
    except ImportError as exc:
        raise ApiError(400, f"{where}: structured output needs the xgrammar package, which this server lacks (pip install "
                            f"'tunegate[serve]'); leave it unset", where, "unsupported_value") from exc  # fmt: skip
    except (ValueError, RuntimeError) as exc:
        why = str(exc).strip().splitlines()[-1]
        why = why.split(": ", 1)[-1] if why.startswith("[") else why  # xgrammar's messages start with a time and a source line
        raise ApiError(400, f"{where}: the schema cannot be compiled for structured output ({why}); fix the schema",
                       where, "invalid_schema") from exc


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
