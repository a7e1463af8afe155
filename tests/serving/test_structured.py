"""Structured outputs and tools through the official ``openai`` client on a real uvicorn server.

``response_format`` json_object / json_schema decode under the schema's grammar (xgrammar), so even the
untrained tiny model replies with JSON that parses and matches; a schema the decoder cannot enforce is a
400 naming the keyword. ``tools`` need a chat template that reads them: the tiny model's ChatML does not
(400 naming tools); a copy with a tool-aware template gets ``tool_calls`` when ``tool_choice`` forces a call.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import openai
import pytest

from steps.serving.app import create_app
from steps.serving.batching import open_json
from steps.serving.config import ServeConfig
from steps.serving.engines import TransformersEngine
from steps.serving.tools import parse_tool_calls, template_reads_tools
from tests.openai_server import serving
from tests.tiny import CHATML_TEMPLATE

HELLO = [{"role": "user", "content": "Hello"}]
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", "parameters": {
    "type": "object", "properties": {"city": {"enum": ["Paris", "Oslo"]}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
    "required": ["city", "days"], "additionalProperties": False}}}  # fmt: skip
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
# ChatML with the tools in a system turn when there are any (as Qwen's and Hermes' templates do)
TOOL_TEMPLATE = ('{% if tools %}<|im_start|>system\nCall a tool with {"name": ..., "arguments": ...}: {{ tools | tojson }}'
                 "<|im_end|>\n{% endif %}" + CHATML_TEMPLATE)  # fmt: skip


@pytest.fixture(scope="module")
def client(tiny_model_dir) -> openai.OpenAI:
    engine = TransformersEngine(tiny_model_dir, "float32")
    with serving(create_app(ServeConfig(model_name="tiny", max_concurrency=4), tiny_model_dir, engine=engine)) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def tool_client(tiny_model_dir, tmp_path_factory) -> openai.OpenAI:
    from transformers import AutoTokenizer

    folder = Path(shutil.copytree(tiny_model_dir, tmp_path_factory.mktemp("tools") / "m"))
    tok = AutoTokenizer.from_pretrained(str(folder))
    tok.chat_template = TOOL_TEMPLATE
    tok.save_pretrained(str(folder))
    with serving(create_app(ServeConfig(model_name="tiny", max_concurrency=4), folder)) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_json_object_replies_parse(client):
    for fields in ({"temperature": 0}, {"temperature": 1.0, "seed": 3}):
        reply = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=64, response_format={"type": "json_object"}, **fields)
        assert isinstance(json.loads(reply.choices[0].message.content), dict), reply
        assert reply.choices[0].finish_reason == "stop"


def test_json_schema_replies_match_the_schema(client):
    schema = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}, "score": {"type": "integer", "minimum": 0, "maximum": 9},
              "tags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 3}}, "required": ["answer", "score", "tags"]}  # fmt: skip
    fmt = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema, "strict": True}}
    for fields in ({"temperature": 0}, {"temperature": 1.5, "seed": 11}, {"stream": True}):
        if fields.pop("stream", False):
            chunks = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=64, response_format=fmt, stream=True)
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        else:
            text = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=64, response_format=fmt, **fields)
            text = text.choices[0].message.content
        jsonschema.validate(json.loads(text), schema)
    plain = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=4, response_format={"type": "text"})
    assert plain.choices[0].finish_reason == "length"


@pytest.mark.parametrize(("response_format", "param"), [
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}}},
     "response_format.json_schema.schema.uniqueItems"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"not": {"type": "string"}}}}}},
     "response_format.json_schema.schema.properties.a.not"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "wat"}}}, "response_format.json_schema.schema"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/$defs/gone"}}}, "response_format.json_schema.schema"),
    ({"type": "json_schema"}, "response_format.json_schema"),
    ({"type": "json_object", "json_schema": {"name": "x"}}, "response_format.json_schema"),
    ({"type": "json_schema", "json_schema": {"name": "has space", "schema": {}}}, "response_format.json_schema.name"),
    ({"type": "xml"}, "response_format.type"),
])  # fmt: skip
def test_schemas_that_cannot_be_enforced_are_400_naming_the_field(client, response_format, param):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=4, response_format=response_format)
    assert err.value.body["param"] == param and err.value.body["message"].startswith(param), err.value.body


def test_tools_without_a_template_that_reads_them_are_400(client):
    assert not template_reads_tools(CHATML_TEMPLATE) and template_reads_tools(TOOL_TEMPLATE)
    with pytest.raises(openai.BadRequestError, match="never reads `tools`") as err:
        client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=4, tools=[WEATHER])
    assert err.value.body["param"] == "tools"
    reply = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=2, tool_choice="none")  # no tools: nothing to refuse
    assert reply.choices[0].message.tool_calls is None


def test_forced_tool_calls_come_back_as_tool_calls(tool_client):
    for choice in ("required", {"type": "function", "function": {"name": "get_weather"}}):
        reply = tool_client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=64, tools=[WEATHER, TIME], tool_choice=choice)
        call = reply.choices[0].message.tool_calls[0]
        assert reply.choices[0].finish_reason == "tool_calls" and call.type == "function" and call.id.startswith("call_")
        if isinstance(choice, dict):
            assert call.function.name == "get_weather"
            jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
    chunks = list(tool_client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=64, tools=[WEATHER], tool_choice="required",
                                                      stream=True))  # fmt: skip
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert [c.function.name for c in calls] == ["get_weather"] and chunks[-1].choices[0].finish_reason == "tool_calls"
    auto = tool_client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=4, tools=[WEATHER])  # free text: no call in it
    assert auto.choices[0].message.tool_calls is None and auto.choices[0].finish_reason == "length"


@pytest.mark.parametrize(("fields", "param"), [
    ({"tool_choice": "required"}, "tool_choice"),  # no tools
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice.function.name"),
    ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
    ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools[0].function.name"),
    ({"tools": [{**TIME, "function": {"name": "t", "parameters": {"type": "object", "properties": {"a": {"allOf": []}}}}}],
      "tool_choice": "required"}, "tools[0].function.parameters.properties.a.allOf"),
])  # fmt: skip
def test_bad_tools_are_400_naming_the_field(tool_client, fields, param):
    with pytest.raises(openai.BadRequestError) as err:
        tool_client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=4, **fields)
    assert err.value.body["param"] == param, err.value.body


def test_tool_calls_are_read_in_the_shapes_templates_teach():
    names = ["get_weather"]
    hermes = parse_tool_calls('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>', names)
    assert hermes[0] == "Let me check." and hermes[1][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    for text in ('{"name": "get_weather", "parameters": {"city": "Oslo"}}',  # Llama 3.1
                 '[{"type": "function", "function": {"name": "get_weather", "arguments": "{\\"city\\": \\"Oslo\\"}"}}]',  # tunegate's turns
                 '```json\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n```'):  # fmt: skip
        content, calls = parse_tool_calls(text, names)
        assert content is None and json.loads(calls[0]["function"]["arguments"]) == {"city": "Oslo"}
    for text in ("It is sunny.", '{"name": "other", "arguments": {}}', "<tool_call>{broken</tool_call>", '{"answer": 1}'):
        assert parse_tool_calls(text, names) is None


def test_a_structured_reply_near_its_budget_is_steered_to_close(client):
    """Sampled at temperature 2 the tiny model opens strings, objects and arrays at random; the last tokens close them."""
    assert [open_json(t) for t in ('{"a": {"b": "x\\"y', "{}", '[{"a": [1', '{"a": "}"')] == [3, 0, 3, 1]
    for seed in range(6):
        reply = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=16, temperature=2, seed=seed,
                                               response_format={"type": "json_object"})  # fmt: skip
        assert isinstance(json.loads(reply.choices[0].message.content), dict), reply.choices[0]
