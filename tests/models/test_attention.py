"""Per-example attention on packed rows gives what transformers' block-diagonal sdpa gives, values and gradients."""

from __future__ import annotations

import json

import pytest
import torch

from steps.models.attention import PACKED_SDPA, packed_sdpa, segment_bounds, use_packed_attention
from tests.tiny import tiny_causal_lm, tiny_tokenizer

LENGTHS = (5, 9, 3, 7)  # four examples packed into one row of 24 tokens


@pytest.fixture()
def models():
    tok = tiny_tokenizer()
    dense = tiny_causal_lm(tok, seed=5)
    packed = tiny_causal_lm(tok, seed=5)
    assert use_packed_attention(packed, 512)
    return dense, packed


def _row(vocab: int):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (1, sum(LENGTHS)), generator=gen)
    pos = torch.cat([torch.arange(n) for n in LENGTHS]).unsqueeze(0)
    return ids, pos


def test_segment_bounds():
    assert segment_bounds(torch.tensor([[0, 1, 2, 0, 1, 0]])) == [0, 3, 5, 6]
    assert segment_bounds(torch.tensor([[0, 1, 2, 3]])) is None  # one example: nothing to cut
    assert segment_bounds(torch.tensor([[4, 5, 0, 1]])) is None  # a continuation (a decoding cache), not a packed row
    assert segment_bounds(torch.tensor([[0, 1], [0, 1]])) is None  # a batch of rows
    assert segment_bounds(None) is None
    pos = torch.tensor([[0, 1, 0, 1]])
    assert segment_bounds(pos) == [0, 2, 4]
    pos[0, 2] = 2  # changed in place: not served from the last call's answer
    assert segment_bounds(pos) is None


def test_packed_row_equals_dense_mask_and_each_example_alone(models):
    dense, packed = models
    ids, pos = _row(dense.config.vocab_size)
    with torch.no_grad():
        # transformers builds the block-diagonal mask only without a cache (its training setup)
        want = dense(input_ids=ids, position_ids=pos, use_cache=False).logits
        got = packed(input_ids=ids, position_ids=pos, use_cache=False).logits
        start, alone = 0, []
        for n in LENGTHS:
            alone.append(dense(input_ids=ids[:, start : start + n]).logits)
            start += n
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got, torch.cat(alone, dim=1), rtol=1e-5, atol=1e-5)
    with torch.inference_mode():  # inference tensors keep no version counter: bounds are not cached for them
        torch.testing.assert_close(packed(input_ids=ids, position_ids=pos, use_cache=False).logits, want, rtol=1e-5, atol=1e-5)


def test_packed_row_gradients_equal_dense(models):
    dense, packed = models
    ids, pos = _row(dense.config.vocab_size)
    for model in models:
        model(input_ids=ids, position_ids=pos, labels=ids, use_cache=False).loss.backward()
    for (name, a), (_, b) in zip(dense.named_parameters(), packed.named_parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_padded_batch_and_generation_fall_back_to_sdpa(models):
    dense, packed = models
    ids = torch.randint(3, dense.config.vocab_size, (2, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        torch.testing.assert_close(packed(input_ids=ids, attention_mask=mask).logits, dense(input_ids=ids, attention_mask=mask).logits)
        a = packed.generate(ids[1:], max_new_tokens=5, do_sample=False)
        b = dense.generate(ids[1:], max_new_tokens=5, do_sample=False)
    assert a.tolist() == b.tolist()


def test_not_saved_with_the_model_and_eager_is_left_alone(models, tmp_path):
    _, packed = models
    packed.save_pretrained(tmp_path)
    assert PACKED_SDPA not in json.dumps(json.loads((tmp_path / "config.json").read_text()))
    eager = tiny_causal_lm(tiny_tokenizer())
    eager.set_attn_implementation("eager")
    assert not use_packed_attention(eager, 512)
    assert eager.config._attn_implementation == "eager"
    windowed = tiny_causal_lm(tiny_tokenizer())
    windowed.config.sliding_window = 256  # shorter than the rows: a packed example could outgrow it
    assert not use_packed_attention(windowed, 512) and windowed.config._attn_implementation == "sdpa"
    assert use_packed_attention(windowed, 256)


def test_attention_signature_returns_sdpa_layout():
    class Module:  # what sdpa_attention_forward reads from the attention module
        is_causal, num_key_value_groups, training = True, 1, False

    q = torch.randn(1, 2, 6, 4)
    pos = torch.tensor([[0, 1, 2, 0, 1, 2]])
    out, weights = packed_sdpa(Module(), q, q, q, None, position_ids=pos, dropout=0.0, scaling=0.5)
    assert out.shape == (1, 6, 2, 4) and weights is None
