"""The FastAPI app behind steps.serve: bearer auth, the routes, streaming, each request's prompt and budget.

``create_app`` loads the engine once and serves GET /health, GET /v1/models[/{id}] and POST
/v1/chat/completions, answering every error (validation, HTTP, a crash) in OpenAI's shape
(steps/_serve_chat.py). Moved out of steps/serve.py (which re-exports every name) so the step
module stays Config + run() + main(); ServeConfig is named for types only, so there is no cycle.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from steps._serve_chat import ApiError, ChatRequest, Reply, validation_error
from steps._serving import GenParams, ServeError, StopTrimmer, load_engine
from steps._template import inference_prompt_ids

if TYPE_CHECKING:
    from steps.serve import ServeConfig

log = logging.getLogger("tunegate.serve")


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
