"""What one client can cost the others, on a real uvicorn server: a body over the limit is a 413 and is never kept,
a client that leaves stops its generation (streaming or not, generating or still waiting for the slot), prompts
are built outside the generation slot, and with a key the docs need it too."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from steps.core.config import ConfigError
from steps.serving.app import create_app
from steps.serving.config import ServeConfig
from tests.openai_server import serving

HELLO = [{"role": "user", "content": "Hello"}]


def chat(url: str, timeout: float = 60, **fields) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json={"model": "tiny", "messages": HELLO, **fields}, timeout=timeout)


def in_background(fn, *args, **kwargs) -> threading.Thread:
    thread = threading.Thread(target=fn, args=args, kwargs=kwargs, daemon=True)
    thread.start()
    return thread


def test_body_over_the_limit_is_413_and_the_client_reads_it(tiny_model_dir):
    """The 413 reaches the client every time: the server drains the refused body before it closes (a close with
    unread bytes resets the connection and lost 5 of 40 answers)."""
    with pytest.raises(ConfigError, match="max_body_bytes"):
        ServeConfig(max_body_bytes=10)
    with serving(create_app(ServeConfig(model_name="tiny", max_body_bytes=4096, max_new_tokens=2), tiny_model_dir)) as url:
        big = b'{"model": "tiny", "messages": [{"role": "user", "content": "' + b"a " * 2_500_000 + b'"}]}'  # 5 MB

        def chunks():  # no Content-Length: counted as it arrives
            yield big[:3000]
            yield big[3000:6000]
            yield big[6000:]

        start = time.monotonic()
        for attempt in range(10):
            r = httpx.post(f"{url}/v1/chat/completions", content=big if attempt % 2 else chunks(),
                           headers={"Content-Type": "application/json"}, timeout=30)
            err = r.json()["error"]
            assert (r.status_code, err["code"]) == (413, "request_too_large") and "serve.max_body_bytes" in err["message"]
        assert time.monotonic() - start < 20
        under = chat(url, messages=[{"role": "user", "content": "a " * 1500}])  # 3 kB: read and judged (too many tokens)
        assert (under.status_code, under.json()["error"]["code"]) == (400, "context_length_exceeded")


def test_client_that_leaves_a_non_streaming_request_stops_it(engine):
    """20 ms a token: 300 tokens take 6 s; the client gives up after 0.5 s and the generation stops soon after."""
    with serving(create_app(ServeConfig(model_name="tiny"), engine.model.name_or_path, engine=engine)) as url:
        with pytest.raises(httpx.ReadTimeout):
            chat(url, timeout=0.5, max_tokens=300)
        result = engine.runs[0].join(5)
        assert result is not None and result.completion_tokens < 100, result
        assert chat(url, max_tokens=2).json()["usage"]["completion_tokens"] == 2  # the slot is free again


def test_client_that_leaves_while_waiting_for_the_slot_is_never_generated(engine):
    with serving(create_app(ServeConfig(model_name="tiny"), engine.model.name_or_path, engine=engine)) as url:
        first = in_background(chat, url, max_tokens=100)  # holds the only slot for about 2 s
        time.sleep(0.3)
        with pytest.raises(httpx.ReadTimeout):
            chat(url, timeout=0.5, max_tokens=5)  # waits for the slot, then leaves
        first.join(30)
        time.sleep(0.3)
        assert [r.result.completion_tokens for r in engine.runs] == [100]


def test_prompt_is_built_outside_the_generation_slot(engine):
    """While a generation holds the only slot, another request's prompt is still rendered, tokenized and judged."""
    with serving(create_app(ServeConfig(model_name="tiny"), engine.model.name_or_path, engine=engine)) as url:
        first = in_background(chat, url, max_tokens=150)  # about 3 s
        time.sleep(0.3)
        start = time.monotonic()
        r = chat(url, messages=[{"role": "user", "content": "word " * 600}])  # longer than the 512-token context
        assert (r.status_code, r.json()["error"]["code"]) == (400, "context_length_exceeded")
        assert time.monotonic() - start < 1.5 and first.is_alive()
        first.join(30)


def test_docs_and_openapi_need_the_key(tiny_model_dir, monkeypatch):
    monkeypatch.setenv("TUNEGATE_API_KEY", "k3y")
    with serving(create_app(ServeConfig(model_name="tiny"), tiny_model_dir)) as url:
        for path in ("/openapi.json", "/docs", "/redoc", "/v1/models"):
            assert httpx.get(f"{url}{path}").status_code == 401, path
            assert httpx.get(f"{url}{path}", headers={"Authorization": "Bearer k3y"}).status_code == 200, path
        assert httpx.get(f"{url}/health").status_code == 200
        big = httpx.post(f"{url}/v1/chat/completions", content=b"x" * (2 << 20))
        assert big.status_code == 401  # the key is checked first: a caller without it learns nothing more
    monkeypatch.delenv("TUNEGATE_API_KEY")
    with serving(create_app(ServeConfig(model_name="tiny"), tiny_model_dir)) as url:
        assert httpx.get(f"{url}/openapi.json").status_code == 200  # no key configured: open, as the API is
