"""Requests served together, on a real uvicorn server through the official ``openai`` client: concurrent requests
share decode steps, and each gets what it would get alone (greedy text, its own stop strings, budget, seed and
grammar, streaming or not), also when another client leaves mid-batch. No timing is asserted: that the requests
were batched is read from the scheduler's step count."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
import torch

from steps.serving.app import create_app
from steps.serving.config import ServeConfig
from tests.openai_server import serving
from tests.serving.conftest import Recording

PROMPTS = ["Hello", "What is the capital of France?", "fox " * 9, "Hi", "1 2 3", "def add(a, b)"]


@pytest.fixture(scope="module")
def varied_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model with its weights scaled up: greedy replies differ from prompt to prompt (the untrained
    model answers every prompt with the same newline), so a row mixed up with another would show."""
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("varied")
    shutil.copytree(tiny_model_dir, folder, dirs_exist_ok=True)
    model = AutoModelForCausalLM.from_pretrained(str(folder))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(20)
    model.save_pretrained(str(folder))
    return folder


def ask(client: openai.OpenAI, content: str, **fields) -> tuple[str, str, int]:
    """(text, finish_reason, completion_tokens); streamed when ``stream=True``."""
    messages = [{"role": "user", "content": content}]
    if fields.pop("stream", False):
        chunks = list(client.chat.completions.create(model="tiny", messages=messages, stream=True,
                                                     stream_options={"include_usage": True}, **fields))  # fmt: skip
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = next(c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason)
        return text, finish, chunks[-1].usage.completion_tokens
    reply = client.chat.completions.create(model="tiny", messages=messages, **fields)
    return reply.choices[0].message.content, reply.choices[0].finish_reason, reply.usage.completion_tokens


def test_greedy_replies_are_the_same_alone_and_batched(varied_dir):
    engine = Recording(varied_dir, "float32", delay=0.01)
    with serving(create_app(ServeConfig(model_name="tiny", max_concurrency=8), varied_dir, engine=engine)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        alone = [ask(client, p, max_tokens=24, temperature=0) for p in PROMPTS]
        assert len(set(text for text, _, _ in alone)) == len(PROMPTS)  # every prompt its own reply
        before = engine.scheduler.steps
        with ThreadPoolExecutor(len(PROMPTS)) as pool:  # half of them streamed
            together = list(pool.map(lambda i: ask(client, PROMPTS[i], max_tokens=24, temperature=0, stream=i % 2 == 1),
                                     range(len(PROMPTS))))  # fmt: skip
        assert together == alone
        assert engine.scheduler.steps - before < sum(n for _, _, n in together)  # rows shared decode steps


def test_batched_requests_keep_their_own_settings(varied_dir):
    """Stop string, budget, seeded sampling, a JSON schema and plain greedy, in one batch: each as it is alone."""
    requests = [
        (PROMPTS[0], {"max_tokens": 24, "stop": [alone_stop := "e"]}),
        (PROMPTS[1], {"max_tokens": 3}),
        (PROMPTS[2], {"max_tokens": 12, "temperature": 1.3, "top_p": 0.9, "seed": 7}),
        (PROMPTS[3], {"max_tokens": 40, "temperature": 0, "response_format": {"type": "json_schema", "json_schema": {
            "name": "flag", "schema": {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}}}}),
        (PROMPTS[4], {"max_tokens": 16, "temperature": 0, "stream": True}),
    ]  # fmt: skip
    engine = Recording(varied_dir, "float32", delay=0.01)
    with serving(create_app(ServeConfig(model_name="tiny", max_concurrency=8), varied_dir, engine=engine)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        alone = [ask(client, p, **dict(f)) for p, f in requests]
        with ThreadPoolExecutor(len(requests)) as pool:
            together = list(pool.map(lambda r: ask(client, r[0], **dict(r[1])), requests))
    assert together == alone
    assert alone_stop not in alone[0][0] and alone[0][1] == "stop"
    assert alone[1][1:] == ("length", 3)
    assert alone[3][0] in ('{"ok": true}', '{"ok": false}') and alone[3][1] == "stop"


def test_a_client_that_leaves_mid_batch_stops_only_its_own_row(varied_dir):
    engine = Recording(varied_dir, "float32", delay=0.02)
    with serving(create_app(ServeConfig(model_name="tiny", max_concurrency=8), varied_dir, engine=engine)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        expected = ask(client, PROMPTS[1], max_tokens=60, temperature=0)
        with ThreadPoolExecutor(1) as pool:
            other = pool.submit(ask, client, PROMPTS[1], max_tokens=60, temperature=0)
            body = {"model": "tiny", "messages": [{"role": "user", "content": PROMPTS[0]}], "max_tokens": 400, "stream": True}
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as r:
                next(r.iter_lines())  # the role chunk: it is generating; then the client leaves
            assert other.result() == expected
        assert max(run.join(30).completion_tokens for run in engine.runs) < 400  # the leaver stopped early
