"""The training render masks the model's turns and matches the inference render, on a tiny and the real tokenizer."""

from __future__ import annotations

import pytest

from steps.models.loading import load_tokenizer
from steps.models.template import (
    TemplateError,
    assistant_spans,
    check_template_parity,
    end_of_turn_id,
    inference_prompt_ids,
    render_with_mask,
    to_chat,
)
from tests.tiny import tiny_tokenizer

SYSTEM = {"role": "system", "content": "Please answer in one short sentence."}
Q1 = {"role": "user", "content": "What is the capital of France?"}
A1 = {"role": "assistant", "content": "The capital of France is Paris."}
Q2 = {"role": "user", "content": "Thanks! And 2 + 2?"}
A2 = {"role": "assistant", "content": "4"}
CALL = {"role": "function_call", "content": '{"name": "get_weather", "arguments": {"city": "Paris"}}'}
RESULT = {"role": "tool", "content": '{"temp": 21}'}
A3 = {"role": "assistant", "content": "It is 21 degrees in Paris."}
TOOLS = '[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]'

CONVERSATIONS = {
    "single": [Q1, A1],
    "system_multi_turn": [SYSTEM, Q1, A1, Q2, A2],
    "tool_call": [Q1, CALL, RESULT, A3],
    "back_to_back_assistant": [Q1, A1, A2],
}


@pytest.fixture(scope="module", params=["tiny", "smollm2"])
def tok(request):
    return tiny_tokenizer() if request.param == "tiny" else load_tokenizer("smollm2-135m-instruct")


def trained_runs(tokenizer, ids, mask):
    """The decoded text of each maximal run of trained tokens."""
    runs, cur = [], []
    for t, m in zip(ids + [None], mask + [0]):
        if m:
            cur.append(t)
        elif cur:
            runs.append(tokenizer.decode(cur))
            cur = []
    return runs


@pytest.mark.parametrize("name", CONVERSATIONS)
def test_mask_covers_exactly_model_turns_and_their_end_of_turn(tok, name):
    messages = CONVERSATIONS[name]
    ids, mask = render_with_mask(tok, messages, tools=TOOLS if name == "tool_call" else None)
    assert len(ids) == len(mask) and set(mask) <= {0, 1}
    expected = [m["content"] + "<|im_end|>" for m in messages if m["role"] in ("assistant", "function_call")]
    assert trained_runs(tok, ids, mask) == expected
    untrained = tok.decode([t for t, m in zip(ids, mask) if not m])
    assert "<|im_start|>assistant\n" in untrained and Q1["content"] in untrained  # prompt side is not learned


def test_default_system_prompt_and_tool_results_are_not_trained(tok):
    ids, mask = render_with_mask(tok, [Q1, CALL, RESULT, A3])
    untrained = tok.decode([t for t, m in zip(ids, mask) if not m])
    assert "You are a helpful AI assistant named SmolLM" in untrained
    assert "<|im_start|>tool\n" + RESULT["content"] in untrained
    assert "<|im_start|>assistant\n" + CALL["content"] in tok.decode(ids)  # function_call renders as assistant


def test_every_trained_turn_ends_with_end_of_turn_token(tok):
    eot = end_of_turn_id(tok)
    assert eot == tok.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    ids, spans = assistant_spans(tok, [SYSTEM, Q1, A1, Q2, CALL, RESULT, A3])
    assert len(spans) == 3
    assert all(ids[stop - 1] == eot for _, stop in spans)


@pytest.mark.parametrize("name", CONVERSATIONS)
def test_parity_holds_for_the_tokenizers_own_template(tok, name):
    check_template_parity(tok, CONVERSATIONS[name], tools=TOOLS)


def test_inference_prompt_is_the_training_prefix(tok):
    messages = [SYSTEM, Q1, A1, Q2, A2]
    ids, mask = render_with_mask(tok, messages)
    prompt = inference_prompt_ids(tok, messages[:3] + [Q2])
    assert isinstance(prompt, list) and all(isinstance(i, int) for i in prompt)
    assert tok.decode(prompt).endswith("<|im_start|>assistant\n")
    assert ids[: len(prompt)] == prompt and mask[len(prompt)] == 1 and mask[len(prompt) - 1] == 0
    assert ids == [int(i) for i in tok.apply_chat_template(to_chat(messages), tokenize=True)["input_ids"]]


def test_training_with_a_different_template_is_caught(tok):
    # Training variant writes a space before <|im_end|>: looks harmless, differs in every turn.
    variant = tok.chat_template.replace("message['content'] + '<|im_end|>'", "message['content'] + ' <|im_end|>'")
    assert variant != tok.chat_template
    with pytest.raises(TemplateError, match=r"differ at token \d+: training has .* inference has") as info:
        check_template_parity(tok, [SYSTEM, Q1, A1], chat_template=variant)
    assert "train.chat_template" in str(info.value)


def test_template_that_rewrites_earlier_turns_is_rejected(tok):
    # Like templates that strip reasoning from earlier turns: an assistant turn renders
    # differently once a later message follows, so no prefix is stable.
    rewriting = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
        "{% if m['role'] == 'assistant' and not loop.last %}...{% else %}{{ m['content'] }}{% endif %}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    with pytest.raises(TemplateError, match="not prefix-stable.*train.chat_template"):
        render_with_mask(tok, [Q1, A1, Q2, A2], chat_template=rewriting)


def test_template_without_a_turn_terminator_fails_parity():
    tok = tiny_tokenizer()
    tok.chat_template = (
        "{% for m in messages %}{{ m['role'] }}:\n{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:\n{% endif %}"
    )
    with pytest.raises(TemplateError, match="never learn to stop"):
        check_template_parity(tok, [Q1, A1])


def test_tokens_merging_across_the_turn_boundary_are_caught():
    # "assistant: " + "The" tokenizes as "assistant:" + " The" in the whole conversation, but
    # the served prompt ends in a lone " ": the model would be prompted with ids it never saw.
    tok = tiny_tokenizer()
    merging = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}<|im_end|>{% endfor %}"
    merging += "{% if add_generation_prompt %}assistant: {% endif %}"
    with pytest.raises(TemplateError, match="not prefix-stable"):
        render_with_mask(tok, [Q1, A1], chat_template=merging)


def test_first_message_from_assistant_is_an_error(tok):
    with pytest.raises(TemplateError, match="empty conversation"):
        render_with_mask(tok, [A1])
