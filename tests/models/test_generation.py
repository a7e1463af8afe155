"""Batched generation equals one-at-a-time generation; perplexity counts only the tokens it should."""

from __future__ import annotations

import math

import pytest
import torch

from steps.models.generation import chat_perplexity, generate_chat, generate_ids, prompt_ids, text_perplexity
from steps.models.template import render_with_mask
from tests.tiny import tiny_causal_lm, tiny_tokenizer

CONVS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}],
    [{"role": "user", "content": "Please answer in one short sentence: what is 1 + 2 + 3 + 4 + 5?"}],
    [{"role": "user", "content": "hi"}],
    [{"role": "user", "content": "The quick brown fox jumps over the lazy dog. Thanks, that is all."}],
]


@pytest.fixture(scope="module")
def tiny():
    tok = tiny_tokenizer()
    return tiny_causal_lm(tok, seed=3).eval(), tok


def test_batched_generation_equals_per_sample(tiny):
    model, tok = tiny
    prompts = prompt_ids(tok, CONVS, 256)
    batched = generate_ids(model, tok, prompts, max_new_tokens=12, batch_size=4)
    single = [generate_ids(model, tok, [p], max_new_tokens=12, batch_size=1)[0] for p in prompts]
    assert batched == single
    assert all(len(row) <= 12 for row in batched)


def test_generate_chat_returns_text_per_conversation_in_order(tiny):
    model, tok = tiny
    texts = generate_chat(model, tok, CONVS, max_new_tokens=8, batch_size=2)
    assert len(texts) == len(CONVS) and all(isinstance(t, str) for t in texts)
    assert texts[0] == generate_chat(model, tok, CONVS[:1], max_new_tokens=8)[0]


def test_chat_perplexity_counts_assistant_tokens_only(tiny):
    model, tok = tiny
    conv = [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "The capital of France is Paris."}]
    ids, mask = render_with_mask(tok, conv)
    labels = torch.tensor([t if m else -100 for t, m in zip(ids, mask)])
    with torch.inference_mode():
        loss = model(input_ids=torch.tensor([ids]), labels=labels[None]).loss
    assert chat_perplexity(model, tok, [conv]) == pytest.approx(math.exp(float(loss)), rel=1e-4)
    # A bare prompt has nothing to score; padding a batch does not change the value.
    assert chat_perplexity(model, tok, CONVS) is None
    assert chat_perplexity(model, tok, [conv, conv[:1], conv], batch_size=2) == pytest.approx(
        math.exp(float(loss)), rel=1e-4
    )


def test_text_perplexity_matches_model_loss(tiny):
    model, tok = tiny
    a, b = "The quick brown fox jumps over the lazy dog.", "Hello! How can I help you today?"
    ids_a, ids_b = (tok(t, add_special_tokens=False)["input_ids"] for t in (a, b))
    with torch.inference_mode():
        la = model(input_ids=torch.tensor([ids_a]), labels=torch.tensor([ids_a])).loss
        lb = model(input_ids=torch.tensor([ids_b]), labels=torch.tensor([ids_b])).loss
    na, nb = len(ids_a) - 1, len(ids_b) - 1
    expected = math.exp((float(la) * na + float(lb) * nb) / (na + nb))
    assert text_perplexity(model, tok, [a, b], batch_size=2) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("room", [64, 1, 3])  # the default, and a cache that outgrows its room every step or every 3rd
def test_greedy_loop_equals_transformers_generate(tiny, room, monkeypatch):
    from steps.models import generation
    from steps.models.generation import stop_ids

    monkeypatch.setattr(generation, "_ROOM", room)
    model, tok = tiny

    stops = stop_ids(tok)
    prompts = prompt_ids(tok, CONVS, 256)
    ours = generate_ids(model, tok, prompts, max_new_tokens=12, batch_size=3)
    for p, got in zip(prompts, ours):
        with torch.inference_mode():
            ref = model.generate(input_ids=torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                 max_new_tokens=12, eos_token_id=stops, pad_token_id=tok.pad_token_id,
                                 do_sample=False)[0, len(p):].tolist()  # fmt: skip
        assert got == ref[: next((k for k, t in enumerate(ref) if t in stops), len(ref))]


def test_rolling_batch_joins_prompts_as_rows_stop(tiny, monkeypatch):
    """Rows that stop early free their places for the queue (their caches joined, left-padded): still each prompt's own tokens."""
    from steps.models import generation
    from steps.models.generation import _greedy

    joins = []
    real_join = generation._join
    monkeypatch.setattr(generation, "_join", lambda *a: joins.append(1) or real_join(*a))

    _, tok = tiny
    model = tiny_causal_lm(tok, seed=3).eval()
    with torch.no_grad():  # sharper logits: a tiny random model otherwise repeats one token in every row
        for w in model.parameters():
            if w.dim() == 2:
                w.mul_(8)
    prompts = prompt_ids(tok, CONVS * 2, 256)
    prompts = [p + p[-(k + 1) :] for k, p in enumerate(prompts)]  # ten prompts of different lengths
    alone = [_greedy(model, [p], [0], 1, 16, set(), 0, "cpu")[0] for p in prompts]
    stops = {alone[r][2 + r] for r in (0, 3, 6, 9)}  # rows end at different steps, some run their full budget
    expected = [row[: next((k for k, t in enumerate(row) if t in stops), len(row))] for row in alone]
    assert len({len(row) for row in expected}) > 3 and max(map(len, expected)) == 16
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    for batch_size in (2, 3, 4, 10):
        assert _greedy(model, prompts, order, batch_size, 16, stops, tok.pad_token_id, "cpu") == expected
    assert len(joins) >= 3  # prompts joined a batch that was already talking
    monkeypatch.setattr(generation, "_ROOM", 2)  # the reserved cache grows, rows leave and join across its copies
    kinds = []
    real_reserve = generation._reserve
    monkeypatch.setattr(generation, "_reserve", lambda c: real_reserve(c) or kinds.append({type(x).__name__ for x in c.layers}))
    assert _greedy(model, prompts, order, 3, 16, stops, tok.pad_token_id, "cpu") == expected
    assert kinds and all(k == {"ReservedLayer"} for k in kinds)
    assert _greedy(model, prompts, order, 4, 0, stops, tok.pad_token_id, "cpu") == [[] for _ in prompts]


@pytest.mark.gpu
def test_batched_generation_on_cuda_equals_transformers_batched_generate(tiny):
    """On CUDA (bench/gpu_check.sh runs it): the same tokens as transformers' own batched generate on the same batches."""
    _, tok = tiny
    from steps.models.generation import stop_ids

    cuda = tiny_causal_lm(tok, seed=3).eval().to("cuda")
    stops, pad = stop_ids(tok), tok.pad_token_id
    prompts = sorted(prompt_ids(tok, CONVS, 256), key=len)
    ours = generate_ids(cuda, tok, prompts, max_new_tokens=12, batch_size=len(prompts))
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device="cuda")
    with torch.inference_mode():
        ref = cuda.generate(input_ids=ids, attention_mask=(ids != pad).long(), max_new_tokens=12, eos_token_id=stops, pad_token_id=pad,
                            do_sample=False)[:, width:].tolist()  # fmt: skip
    assert ours == [r[: next((k for k, t in enumerate(r) if t in stops), len(r))] for r in ref]
