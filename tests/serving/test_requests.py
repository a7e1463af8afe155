"""Every client input is a 4xx naming the field, or a reply: the OpenAI spec's bounds, in-process on the tiny model.

The table lists requests that were 500s (seed past 64 bits, a temperature so small the probabilities
are NaN) and every value the spec refuses or this server cannot honour; a property-based test throws
random bodies, near-valid and not, at the app and sees no 500.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from steps.serving.app import create_app
from steps.serving.chat import ROLES, ChatRequest
from steps.serving.config import ServeConfig

MODEL = "tiny"
MSG = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def client(tiny_model_dir, engine_once) -> TestClient:
    app = create_app(ServeConfig(model_name=MODEL, max_new_tokens=4, max_new_tokens_limit=8), tiny_model_dir, engine=engine_once)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def engine_once(tiny_model_dir):
    from steps.serving.engines import TransformersEngine

    return TransformersEngine(tiny_model_dir, "float32")


def post(client: TestClient, body) -> object:
    content = body if isinstance(body, bytes) else json.dumps(body, allow_nan=True).encode()  # NaN: Python's json reads it
    return client.post("/v1/chat/completions", content=content, headers={"Content-Type": "application/json"})


def ask(**fields) -> dict:
    return {"model": MODEL, "messages": MSG, "max_tokens": 2, **fields}


BAD = [  # (request, the param the 400 names)
    (ask(seed=2**64), "seed"),  # was a 500: torch.manual_seed overflows
    (ask(seed=2**63), "seed"),
    (ask(seed=-(2**63) - 1), "seed"),
    (ask(seed=1.5), "seed"),
    (ask(seed=True), "seed"),
    (ask(seed="7"), "seed"),
    (ask(temperature=-0.1), "temperature"),
    (ask(temperature=2.5), "temperature"),
    (ask(temperature=float("nan")), "temperature"),
    (ask(temperature=float("inf")), "temperature"),
    (ask(top_p=1.5), "top_p"),
    (ask(top_p=-1e-9), "top_p"),
    (ask(top_p=float("nan")), "top_p"),
    (ask(n=0), "n"),
    (ask(n=2), "n"),
    (ask(n=129), "n"),
    (ask(max_tokens=0), "max_tokens"),
    (ask(max_completion_tokens=1.0), "max_completion_tokens"),
    (ask(max_tokens=9), "max_tokens"),  # over serve.max_new_tokens_limit
    (ask(frequency_penalty=0.5), "frequency_penalty"),
    (ask(presence_penalty=-3), "presence_penalty"),
    (ask(logit_bias={"42": 5}), "logit_bias"),
    (ask(logit_bias={"x": 5}), "logit_bias"),
    (ask(logit_bias={"42": 101}), "logit_bias"),
    (ask(logprobs=True), "logprobs"),
    (ask(top_logprobs=3), "top_logprobs"),
    (ask(top_logprobs=21), "top_logprobs"),
    (ask(modalities=["text", "audio"]), "modalities"),
    (ask(audio={"voice": "alloy", "format": "wav"}), "audio"),
    (ask(web_search_options={}), "web_search_options"),
    (ask(functions=[{"name": "f"}]), "functions"),
    (ask(function_call="auto"), "function_call"),
    (ask(tool_choice=5), "tool_choice"),
    (ask(stream_options={"include_usage": True}), "stream_options"),  # without stream: true
    (ask(stream=True, stream_options={"include_usage": True, "chunk": 1}), "stream_options.chunk"),
    (ask(metadata={str(i): "v" for i in range(17)}), "metadata"),
    (ask(metadata={"k": 1}), "metadata.k"),
    (ask(top_k=5), "top_k"),  # not an OpenAI parameter
    (ask(repetition_penalty=1.1), "repetition_penalty"),
    (ask(messages=[{"role": "user", "content": "Hi", "weight": 1}]), "messages[0].weight"),
    (ask(messages=[{"role": "user", "content": "a\ud800b"}]), "messages[0].content"),  # a lone surrogate
    (ask(model="m\udfff"), "model"),
    (ask(stop=["x"] * 5), "stop"),
    (ask(user=5), "user"),
    (ask(store="yes"), "store"),
    (ask(response_format="json"), "response_format"),
]


@pytest.mark.parametrize(("body", "param"), BAD, ids=[p + f"-{i}" for i, (_, p) in enumerate(BAD)])
def test_bad_values_are_400_naming_the_field(client, body, param):
    r = post(client, body)
    err = r.json()["error"]
    assert (r.status_code, err["param"]) == (400, param), err
    assert err["message"].startswith(param) and err["type"] == "invalid_request_error"


@pytest.mark.parametrize("raw", [b"[" * 100_000, b'{"model": "\xff"}'], ids=["nested-too-deep", "not-utf8"])
def test_unreadable_bodies_are_400(client, raw):
    r = post(client, raw)
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_json") and "send a JSON object" in r.json()["error"]["message"]


def test_spec_values_at_the_bounds_are_served(client):
    greedy = post(client, ask(temperature=0)).json()["choices"][0]["message"]["content"]
    for fields in [
        {"seed": 2**63 - 1, "temperature": 1.0},
        {"seed": -(2**63), "temperature": 1.0},
        {"temperature": 2, "top_p": 1e-300},
        {"temperature": 1e-300},  # was a 500 (NaN probabilities): below 1e-5 is greedy
        {"temperature": 5e-324},
        {"top_p": 0},  # greedy
        {"n": None, "stream": None, "logprobs": False, "top_logprobs": 0, "frequency_penalty": 0, "presence_penalty": 0},
        {"logit_bias": {}, "modalities": ["text"], "tool_choice": "none", "parallel_tool_calls": True},
        {"user": "u1", "metadata": {"k": "v"}, "store": False, "service_tier": "auto", "safety_identifier": "s",
         "prompt_cache_key": "c", "reasoning_effort": "low", "verbosity": "low", "prediction": {"type": "content", "content": "x"}},
        {"stop": "a" * 300},  # longer than the stop-string scan: cut by the server alone
        {"messages": [{"role": "developer", "content": "Be brief.", "name": "d"}, {"role": "user", "content": "Hi", "name": "u"},
                      {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}},
                      {"role": "function", "name": "f", "content": "42"}]},
    ]:  # fmt: skip
        r = post(client, ask(**fields))
        assert r.status_code == 200, (fields, r.json())
        if fields.get("temperature", 1) < 1e-5 or fields.get("top_p") == 0:
            assert r.json()["choices"][0]["message"]["content"] == greedy
    streamed = post(client, ask(stream=True, stream_options={"include_usage": True, "include_obfuscation": False}))
    assert streamed.status_code == 200 and streamed.text.endswith("data: [DONE]\n\n")


# ---------------------------------------------------------------- random bodies
FRAGMENTS = ["<|im_start|>", "<|im_end|>", "system", "\n", "\ud800", "\x00", "é", "😀", "{{", "}}", "{% raw %}", " "]
TEXT = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=6), max_size=6).map("".join)
NUMBERS = st.sampled_from([0, 1, -1, 2, 8, 9, 2**63 - 1, 2**63, 2**64, -(2**63), -(2**63) - 1, 10**30, 0.0, 1e-300, 5e-324,
                           1e-5, 0.5, 1.0, 2.0000001, -0.0, float("nan"), float("inf"), float("-inf")])  # fmt: skip
SCALAR = st.none() | st.booleans() | NUMBERS | st.integers() | st.floats() | TEXT
JSON = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3), max_leaves=8)
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(ROLES) | JSON, "content": TEXT | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": TEXT})) | JSON},
    optional={"name": TEXT | JSON, "tool_calls": JSON, "tool_call_id": JSON, "function_call": JSON, "refusal": JSON, "bogus": JSON},
)
FIELD = {name: NUMBERS | SCALAR | JSON for name in ChatRequest.model_fields if name not in ("model", "messages")}
FIELD |= {"max_tokens": st.integers(-2, 10) | JSON, "stream": st.booleans() | JSON, "stop": TEXT | st.lists(TEXT, max_size=5) | JSON}
NEAR = st.fixed_dictionaries(  # a valid request with a few fields at or past their bounds: about half are served
    {"model": st.just(MODEL), "messages": st.lists(st.fixed_dictionaries({"role": st.sampled_from(ROLES[:4]), "content": TEXT}), min_size=1, max_size=3)},
    optional={"temperature": NUMBERS, "top_p": NUMBERS, "seed": NUMBERS | st.integers(), "max_tokens": st.integers(-1, 10),
              "stop": TEXT | st.lists(TEXT, max_size=5), "stream": st.booleans(), "n": NUMBERS, "presence_penalty": NUMBERS,
              "tools": st.lists(st.dictionaries(TEXT, TEXT, max_size=2), max_size=2)},
)  # fmt: skip
BODY = (
    NEAR
    | st.fixed_dictionaries({"model": st.just(MODEL) | JSON, "messages": st.lists(MESSAGE, max_size=3) | JSON}, optional=FIELD)
    | JSON
    | st.binary(max_size=40)
)


@settings(max_examples=50, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=BODY)
def test_random_bodies_never_get_a_500(client, body):
    r = post(client, body)
    assert r.status_code < 500, (body, r.text)
    if r.status_code != 200:
        assert r.status_code in (400, 404) and r.json()["error"]["message"], r.text
