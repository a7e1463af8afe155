"""A real OpenAI-compatible HTTP server for tests: FastAPI on uvicorn, in a background thread.

It serves ``POST /v1/chat/completions`` and ``GET /v1/models`` on a free local port. What it
answers is scripted per test: ``script(...)`` queues replies (then repeats a default), or
``respond(fn)`` decides from each request body. A reply is a string (the assistant's text,
HTTP 200), ``Status(code)`` (an error response) or ``Slow(seconds, text)`` (answers late, to
trip the client's timeout). Every request is recorded (path, headers, JSON body) so tests can
assert on the prompts the judge sent and on the bearer key.

Usage::

    with OpenAIServer() as server:
        server.script("not json", then='{"winner": "A", "reason": "x"}')
        ... OpenAI(base_url=server.base_url, api_key="k") ...
        assert server.requests[0].bearer == "k"
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

MODEL = "judge-test-model"


@dataclass(frozen=True)
class Status:
    """An HTTP error response with an OpenAI-style error body."""

    code: int
    message: str = "scripted failure"


@dataclass(frozen=True)
class Slow:
    """A valid reply sent only after ``seconds`` (past a short client timeout)."""

    seconds: float
    text: str = "{}"


Reply = str | Status | Slow


@dataclass(frozen=True)
class Recorded:
    """One request the server received."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def bearer(self) -> str | None:
        """The key from ``Authorization: Bearer <key>``, or None."""
        auth = self.headers.get("authorization", "")
        return auth[len("Bearer ") :] if auth.startswith("Bearer ") else None

    @property
    def text(self) -> str:
        """All message contents of a chat request, joined: what the judge was asked."""
        return "\n".join(m.get("content") or "" for m in self.body.get("messages", []))


class OpenAIServer:
    """The scripted server; a context manager that starts and stops it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[Reply] = deque()
        self._default: Reply = "{}"
        self._responder: Callable[[dict[str, Any]], Reply] | None = None
        self.requests: list[Recorded] = []
        self._running: Any = None  # the serving() context while started
        self.port = 0

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1``: what an OpenAI client takes as base_url."""
        return f"http://127.0.0.1:{self.port}/v1"

    # ------------------------------------------------------------ scripting

    def script(self, *replies: Reply, then: Reply = "{}") -> None:
        """Answer the next requests with ``replies`` in order, then ``then`` forever; clears the record."""
        with self._lock:
            self._queue = deque(replies)
            self._default = then
            self._responder = None
            self.requests = []

    def respond(self, fn: Callable[[dict[str, Any]], Reply]) -> None:
        """Answer each request with ``fn(request_body)``; clears the record."""
        with self._lock:
            self._responder = fn
            self._queue = deque()
            self.requests = []

    def _next(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            if self._responder is not None:
                return self._responder(body)
            return self._queue.popleft() if self._queue else self._default

    def _record(self, path: str, headers: Any, body: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(Recorded(path, {k.lower(): v for k, v in headers.items()}, body))

    # ------------------------------------------------------------ the app

    def _app(self) -> Any:
        app = FastAPI()

        @app.get("/v1/models")
        async def models(request: Request) -> dict[str, Any]:
            self._record("/v1/models", request.headers, {})
            return {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "tests"}]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Any:
            body = await request.json()
            self._record("/v1/chat/completions", request.headers, body)
            reply = self._next(body)
            if isinstance(reply, Status):
                error = {"error": {"message": reply.message, "type": "server_error", "code": reply.code}}
                return JSONResponse(error, status_code=reply.code)
            if isinstance(reply, Slow):
                await asyncio.sleep(reply.seconds)
                reply = reply.text
            return _completion(body.get("model", MODEL), reply)

        return app

    # ------------------------------------------------------------ lifecycle

    def start(self) -> OpenAIServer:
        """Bind a free port and serve in a daemon thread; returns once the server accepts requests."""
        self._running = serving(self._app(), lifespan="off")
        self.port = int(self._running.__enter__().rsplit(":", 1)[1])
        return self

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for its thread."""
        if self._running is not None:
            self._running.__exit__(None, None, None)
            self._running = None

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def serving(app: Any, lifespan: str = "auto") -> Iterator[str]:
    """Run ``app`` under a real uvicorn in a daemon thread on a free loopback port; yield its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan=lifespan, timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start within 30 s")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _completion(model: str, text: str) -> dict[str, Any]:
    """A chat.completion object as the OpenAI API returns it."""
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }
