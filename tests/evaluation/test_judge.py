"""The LLM judge against a live OpenAI-compatible HTTP server (tests/openai_server.py) and a tiny local model."""

from __future__ import annotations

import json
import time

import pytest

from steps.core.config import ConfigError, load_section
from steps.evaluation.judge.client import LOCAL_BACKEND, JudgeConfig, openai_chat, resolve_backend
from steps.evaluation.judge.parse import CRITERIA, JudgeParseError, parse_judgement, parse_verdict
from steps.evaluation.judge.verdicts import judge_pairwise, judge_pointwise, swap_outcome
from tests.openai_server import MODEL, OpenAIServer, Slow, Status


def scores(a=4, c=4, f=4, h=4, reason="fine") -> str:
    return json.dumps({"accuracy": a, "completeness": c, "fluency": f, "helpfulness": h, "reason": reason})


ITEMS = [
    {"id": "q1", "question": "What is the capital of France?", "reference": "Paris.", "answer": "GOOD: Paris."},
    {"id": "q2", "question": "What is 2 + 2?", "answer": "BAD: five."},
]
PAIRS = [
    {"id": "p1", "question": "Capital of France?", "reference": "Paris.", "answer_a": "GOOD Paris", "answer_b": "Lyon"},
    {"id": "p2", "question": "2 + 2?", "answer_a": "GOOD 4", "answer_b": "5"},
]


@pytest.fixture(scope="module")
def live():
    with OpenAIServer() as server:
        yield server


@pytest.fixture
def server(live):
    live.script()
    return live


def chat_for(server, *, timeout_s=10.0, client_retries=0, concurrency=4):
    return openai_chat(server.base_url, MODEL, "test-key", timeout_s=timeout_s, client_retries=client_retries, concurrency=concurrency)


def last_user(body) -> str:
    return body["messages"][-1]["content"]


# ---------------------------------------------------------------- pointwise over HTTP


def test_scores_parsed_and_averaged_and_prompt_carries_the_item(server):
    server.respond(lambda body: scores(5, 5, 4, 5, "right") if "GOOD" in last_user(body) else scores(1, 2, 4, 1, "wrong"))
    result = judge_pointwise(chat_for(server), ITEMS, JudgeConfig(), backend="test")

    assert [s.id for s in result.items] == ["q1", "q2"]  # item order, whatever the request order
    assert result.items[0].scores == {"accuracy": 5, "completeness": 5, "fluency": 4, "helpfulness": 5}
    assert result.items[1].reason == "wrong"
    assert result.means == {"accuracy": 3.0, "completeness": 3.5, "fluency": 4.0, "helpfulness": 3.0}
    assert result.overall == pytest.approx(3.375)
    assert (result.failures, result.attempts, result.backend) == (0, 2, "test")
    assert result.metrics()["judge_overall"] == pytest.approx(3.375) and result.metrics()["judge_failures"] == 0

    bodies = {last_user(r.body): r.body for r in server.requests}
    q1 = next(b for text, b in bodies.items() if "GOOD" in text)
    assert q1["model"] == MODEL and q1["temperature"] == 0.0 and q1["messages"][0]["role"] == "system"
    assert all(k in q1["messages"][0]["content"] for k in (*CRITERIA, "reason", "JSON"))
    user = last_user(q1)
    assert "What is the capital of France?" in user and "Reference answer:\nParis." in user and "GOOD: Paris." in user
    q2 = next(b for text, b in bodies.items() if "BAD" in text)
    assert "Reference answer" not in last_user(q2)  # no reference, no reference section


def test_fenced_json_is_accepted(server):
    server.script(then=f"```json\n{scores(3, 3, 3, 3)}\n```")
    result = judge_pointwise(chat_for(server), ITEMS[:1], JudgeConfig())
    assert result.failures == 0 and result.overall == 3.0


def test_garbage_is_reasked_then_counted_without_raising(server):
    server.respond(lambda body: scores(4, 4, 4, 4) if "GOOD" in last_user(body) else "Sure! I think it is quite good, 4/5.")
    result = judge_pointwise(chat_for(server), ITEMS, JudgeConfig(max_retries=2))

    assert result.failures == 1 and result.items[0].scores is not None
    bad = result.items[1]
    assert bad.scores is None and bad.attempts == 3 and "malformed judge reply" in bad.error
    assert result.overall == 4.0 and result.attempts == 4  # means over the scored item only
    reasks = [r.body for r in server.requests if len(r.body["messages"]) > 2]
    assert len(reasks) == 2  # the retries re-ask with the bad reply shown and what was wrong
    assert reasks[0]["messages"][2] == {"role": "assistant", "content": "Sure! I think it is quite good, 4/5."}
    assert "not valid" in last_user(reasks[0]) and "not one JSON object" in last_user(reasks[0])


def test_reask_can_fix_a_malformed_reply(server):
    server.script('{"accuracy": 9}', then=scores(2, 2, 2, 2))
    result = judge_pointwise(chat_for(server, concurrency=1), ITEMS[:1], JudgeConfig(max_retries=1))
    assert result.failures == 0 and result.items[0].attempts == 2 and result.overall == 2.0


def test_http_500_then_valid_is_retried_and_succeeds(server):
    server.script(Status(500), then=scores(5, 5, 5, 5))
    result = judge_pointwise(chat_for(server, client_retries=0), ITEMS[:1], JudgeConfig(max_retries=1))
    assert result.failures == 0 and result.overall == 5.0 and result.attempts == 2
    assert len(server.requests) == 2


def test_http_errors_beyond_retries_are_counted(server):
    server.script(then=Status(503))
    result = judge_pointwise(chat_for(server), ITEMS, JudgeConfig(max_retries=1))
    assert result.failures == 2 and result.overall is None and "HTTP 503" in result.items[0].error
    assert len(server.requests) == 4


def test_timeout_is_counted_and_the_rest_of_the_batch_kept(server):
    server.respond(lambda body: Slow(1.5, scores()) if "BAD" in last_user(body) else scores(5, 5, 5, 5))
    start = time.monotonic()
    result = judge_pointwise(chat_for(server, timeout_s=0.3), ITEMS, JudgeConfig(max_retries=0))
    assert time.monotonic() - start < 1.4  # gave up at the timeout, did not wait for the slow reply
    assert result.failures == 1 and "timed out" in result.items[1].error
    assert result.items[0].scores is not None and result.overall == 5.0


def test_bearer_key_from_env_reaches_the_server(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "must-not-leak")
    env = {"TUNEGATE_JUDGE_BASE_URL": server.base_url, "TUNEGATE_JUDGE_MODEL": MODEL, "MY_JUDGE_KEY": "sk-test-123"}
    never = lambda: pytest.fail("the local model must not load when an endpoint is configured")  # noqa: E731
    chat, description = resolve_backend(JudgeConfig(api_key_env="MY_JUDGE_KEY"), never, env)
    server.script(then=scores())
    assert judge_pointwise(chat, ITEMS[:1], JudgeConfig(), description).failures == 0
    assert server.requests[0].bearer == "sk-test-123"
    assert description == f"endpoint {server.base_url} model {MODEL}" and "sk-test" not in description

    chat, _ = resolve_backend(JudgeConfig(), never, {k: v for k, v in env.items() if k != "MY_JUDGE_KEY"})
    server.script(then=scores())
    judge_pointwise(chat, ITEMS[:1], JudgeConfig())
    assert server.requests[0].bearer == "EMPTY"  # no key set: a placeholder, never $OPENAI_API_KEY


def test_models_endpoint_speaks_openai(server):
    from openai import OpenAI

    assert [m.id for m in OpenAI(base_url=server.base_url, api_key="k").models.list()] == [MODEL]


# ---------------------------------------------------------------- pairwise over HTTP


def test_pairwise_swap_cancels_a_judge_that_always_says_a(server):
    server.script(then='{"winner": "A", "reason": "first is best"}')
    result = judge_pairwise(chat_for(server), PAIRS, JudgeConfig())
    assert (result.wins, result.losses, result.ties, result.failures) == (0, 0, 2, 0)
    assert result.win_rate == 0.5 and result.metrics() == {"pairwise_win_rate": 0.5}
    assert [(v.in_order, v.swapped, v.outcome) for v in result.items] == [("A", "A", "tie")] * 2
    texts = [last_user(r.body) for r in server.requests]
    assert len(texts) == 4
    assert sum("Answer A:\nGOOD Paris\n\nAnswer B:\nLyon" in t for t in texts) == 1
    assert sum("Answer A:\nLyon\n\nAnswer B:\nGOOD Paris" in t for t in texts) == 1


def test_pairwise_consistent_verdicts_and_failures(server):
    def judge(body):
        text = "\n".join(m["content"] for m in body["messages"][:2])  # a re-ask repeats the original question
        if "2 + 2?" in text:
            return "no idea"
        return '{"winner": "%s", "reason": "GOOD is right"}' % ("A" if text.index("GOOD") < text.index("Answer B") else "B")

    server.respond(judge)
    result = judge_pairwise(chat_for(server), PAIRS, JudgeConfig(max_retries=1))
    assert (result.wins, result.losses, result.ties, result.failures, result.n_valid) == (1, 0, 0, 1, 1)
    assert result.win_rate == 1.0 and result.items[0].outcome == "candidate" and result.items[1].outcome is None
    assert result.items[1].attempts == 4 and "malformed" in result.items[1].error


def test_swap_outcome():
    assert swap_outcome("A", "B") == "candidate"
    assert swap_outcome("B", "A") == "production"
    assert swap_outcome("A", "A") == swap_outcome("B", "B") == swap_outcome("tie", "B") == "tie"


# ---------------------------------------------------------------- parsing


def test_parse_judgement_accepts_plain_and_fenced_json():
    expected = {"accuracy": 1, "completeness": 2, "fluency": 3, "helpfulness": 5, "reason": "ok"}
    assert parse_judgement(json.dumps(expected)) == expected
    assert parse_judgement("  ```json\n" + json.dumps(expected) + "\n```\n") == expected
    assert parse_judgement("```\n" + json.dumps(expected) + "```") == expected


@pytest.mark.parametrize(
    "text, why",
    [
        (scores(a=6), "'accuracy' must be an integer from 1 to 5"),
        (scores(c=0), "'completeness' must be an integer from 1 to 5"),
        (scores(f=4.5), "'fluency' must be an integer"),
        (scores(h=True), "'helpfulness' must be an integer"),
        (scores(a="5"), "'accuracy' must be an integer"),
        ('{"accuracy": 5, "completeness": 5, "fluency": 5, "reason": "x"}', "missing ['helpfulness']"),
        (scores()[:-1] + ', "overall": 5}', "unexpected ['overall']"),
        (scores(reason=3), "'reason' must be a string"),
        ("Here is my judgement: " + scores(), "not one JSON object"),
        (scores() + "\nHope this helps!", "not one JSON object"),
        (scores() + scores(), "not one JSON object"),
        ("```json\n" + scores() + "\n``` and more", "not one JSON object"),
        ("[5, 5, 5, 5]", "JSON list, not an object"),
        ("   ", "empty"),
        (None, "empty"),
    ],
)
def test_parse_judgement_rejects(text, why):
    with pytest.raises(JudgeParseError, match=__import__("re").escape(why)):
        parse_judgement(text)


def test_parse_verdict():
    assert parse_verdict('{"winner": "b", "reason": "x"}') == {"winner": "B", "reason": "x"}
    assert parse_verdict('```json\n{"winner": "TIE", "reason": "x"}\n```')["winner"] == "tie"
    for bad in ('{"winner": "C", "reason": "x"}', '{"winner": 1, "reason": "x"}', '{"winner": "A"}', "A"):
        with pytest.raises(JudgeParseError):
            parse_verdict(bad)


# ---------------------------------------------------------------- backends that misbehave, config


def test_a_backend_that_raises_or_miscounts_is_counted_never_raised():
    def broken(conversations, schema):
        raise RuntimeError("CUDA out of memory")

    result = judge_pointwise(broken, ITEMS, JudgeConfig(max_retries=1))
    assert result.failures == 2 and result.attempts == 4 and "CUDA out of memory" in result.items[0].error
    short = judge_pairwise(lambda convs, schema: ['{"winner": "A", "reason": "x"}'], PAIRS, JudgeConfig(max_retries=0))
    assert short.failures == 2 and short.win_rate is None and "1 replies for 4" in short.items[0].error


def test_items_are_checked_and_capped():
    with pytest.raises(ValueError, match=r"judge item 0 \(id 'q1'\): field 'answer' must be a string"):
        judge_pointwise(lambda c, schema: [], [{"id": "q1", "question": "q", "answer": None}], JudgeConfig())
    calls = []
    judge_pointwise(lambda c, schema: calls.append(len(c)) or [scores()] * len(c), ITEMS * 5, JudgeConfig(max_examples=3))
    assert calls == [3]


def test_config_validation_and_params_loading():
    cfg = load_section(JudgeConfig, "judge", {"judge": {"mode": "both", "max_retries": 1, "timeout_s": 5}})
    assert (cfg.mode, cfg.max_retries, cfg.timeout_s) == ("both", 1, 5.0)
    with pytest.raises(ConfigError, match="unknown key 'api_key'"):
        load_section(JudgeConfig, "judge", {"judge": {"api_key": "sk-secret"}})
    with pytest.raises(ConfigError, match="mode: use one of off, pointwise, pairwise, both"):
        JudgeConfig(mode="pairs")
    with pytest.raises(ConfigError, match="never the key itself"):
        JudgeConfig(api_key_env="sk-abc-123")
    with pytest.raises(ConfigError, match="base_url: give an http"):
        JudgeConfig(base_url="localhost:8000")
    with pytest.raises(ConfigError, match="max_retries: must be >= 0"):
        JudgeConfig(max_retries=-1)
    with pytest.raises(ConfigError, match="but no model"):
        resolve_backend(JudgeConfig(base_url="http://127.0.0.1:9/v1"), lambda: None, {})
    with pytest.raises(ConfigError, match="mode is off"):
        resolve_backend(JudgeConfig(mode="off"), lambda: None, {})


# ---------------------------------------------------------------- the local fallback


def test_local_base_model_judge_runs_offline_under_the_reply_schema():
    from tests.tiny import tiny_causal_lm, tiny_tokenizer

    def loader():
        tok = tiny_tokenizer()
        return tiny_causal_lm(tok), tok

    cfg = JudgeConfig(max_tokens=16, max_retries=1)
    chat, description = resolve_backend(cfg, loader, env={})
    assert description == LOCAL_BACKEND
    result = judge_pointwise(chat, ITEMS, cfg, description)  # a random model, yet every reply parses (structured generation)
    assert result.failures == 0 and result.attempts == len(ITEMS) and result.overall is not None
    pairs = judge_pairwise(chat, PAIRS[:1], cfg, description)
    assert pairs.failures == 0 and pairs.attempts == 2
