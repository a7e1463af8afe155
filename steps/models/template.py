"""One chat template for training and serving, and the proof that they agree.

Training renders a conversation with the tokenizer's chat template (or the one named in
``train.chat_template``) and learns from the model's turns only: each assistant or
function_call turn's tokens up to and including its end-of-turn token, so the model learns to
stop. Which tokens are the model's is found generically, by prefix differences: the render of
``messages[:k]`` plus the generation prompt is what serving feeds the model before turn ``k``,
and the render of ``messages[:k + 1]`` adds exactly that turn. ``check_template_parity`` proves
the training render and the inference render of a conversation give the same token ids;
evaluation and serving call it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from steps.core.schema import MODEL_ROLES

FIX = "set train.chat_template in params.yaml to a template whose earlier turns render the same whatever follows"
_PROBE = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]


class TemplateError(ValueError):
    """A chat template whose training and inference renders disagree; the message names the fix."""


def to_chat(messages: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """Canonical messages as chat-template messages: function_call is spoken by the assistant.

    Both the training and the inference render go through here, so they see the same roles.
    ``tool`` results keep role ``tool`` (ChatML renders any role name).
    """
    return [{"role": "assistant" if m["role"] == "function_call" else m["role"], "content": m["content"]} for m in messages]


def parse_tools(tools: str | list[dict[str, Any]] | dict[str, Any] | None) -> list[dict[str, Any]] | None:
    """A record's ``tools`` (JSON text of one schema or a list of them) as the list templates expect."""
    if isinstance(tools, str):
        tools = json.loads(tools) if tools.strip() else None
    if isinstance(tools, dict):
        tools = [tools]
    return tools or None


def _ids(tokenizer: Any, chat: list[dict[str, str]], tools: Any, chat_template: str | None, gen: bool) -> list[int]:
    """Token ids of ``chat`` rendered by the template (normalising transformers 5's BatchEncoding)."""
    if not chat:
        raise TemplateError("cannot render an empty conversation: a model turn needs at least one message before it")
    out = tokenizer.apply_chat_template(
        chat, tools=tools, chat_template=chat_template, add_generation_prompt=gen, tokenize=True, return_dict=False
    )
    if hasattr(out, "keys"):
        out = out["input_ids"]
    return [int(i) for i in out]


def _first_difference(a: Sequence[int], b: Sequence[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def _around(tokenizer: Any, ids: Sequence[int], i: int, width: int = 8) -> str:
    return repr(tokenizer.decode(list(ids[max(0, i - width) : i + width])))


def end_of_turn_id(tokenizer: Any, chat_template: str | None = None) -> int:
    """The token that ends an assistant turn: the last special token the template writes after its content.

    For ChatML that is ``<|im_end|>``, for Llama 3 ``<|eot_id|>``, for Mistral ``</s>``. Falls back to
    ``tokenizer.eos_token_id`` when the turn ends with no special token.

    Raises:
        TemplateError: neither the template nor the tokenizer defines one.
    """
    before = _ids(tokenizer, _PROBE[:1], None, chat_template, True)
    turn = _ids(tokenizer, _PROBE, None, chat_template, False)[len(before) :]
    special = set(tokenizer.all_special_ids) | {int(i) for i in getattr(tokenizer, "added_tokens_decoder", {})}
    found = [t for t in turn if t in special]
    if found:
        return found[-1]
    if tokenizer.eos_token_id is None:
        raise TemplateError(
            f"the chat template ends an assistant turn with no special token and the tokenizer has no eos token; {FIX}"
        )
    return int(tokenizer.eos_token_id)


def _checked_prefix(tokenizer: Any, full: list[int], part: list[int], k: int, gen: bool) -> int:
    """``len(part)`` after checking ``part`` is a prefix of ``full``; a TemplateError otherwise."""
    if full[: len(part)] == part:
        return len(part)
    i = _first_difference(part, full)
    what = f"messages[:{k}]" + (" with the generation prompt" if gen else "")
    raise TemplateError(
        f"the chat template is not prefix-stable: the render of {what} is not a prefix of the whole conversation's "
        f"render (first difference at token {i}: {_around(tokenizer, part, i)} vs {_around(tokenizer, full, i)}), so "
        f"what the model sees at inference differs from what it was trained on; the template rewrites earlier turns "
        f"or its tokens merge across a turn boundary; {FIX}"
    )


def assistant_spans(
    tokenizer: Any,
    messages: Sequence[dict[str, Any]],
    tools: Any = None,
    chat_template: str | None = None,
    eot: int | None = None,
) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of the conversation and the ``[start, stop)`` span of each model turn.

    A span runs from the first token after the generation prompt to the turn's last end-of-turn
    token inclusive; template glue after it (ChatML's newline) is not the model's to learn.

    Raises:
        TemplateError: a render is not a prefix of the whole conversation's render.
    """
    chat, tools = to_chat(messages), parse_tools(tools)
    eot = end_of_turn_id(tokenizer, chat_template) if eot is None else eot
    full = _ids(tokenizer, chat, tools, chat_template, False)
    spans = []
    for k, msg in enumerate(messages):
        if msg["role"] not in MODEL_ROLES:
            continue
        start = _checked_prefix(tokenizer, full, _ids(tokenizer, chat[:k], tools, chat_template, True), k, True)
        end = _checked_prefix(tokenizer, full, _ids(tokenizer, chat[: k + 1], tools, chat_template, False), k + 1, False)
        ends = [i for i in range(start, end) if full[i] == eot]
        spans.append((start, ends[-1] + 1 if ends else end))
    return full, spans


def render_with_mask(
    tokenizer: Any,
    messages: Sequence[dict[str, Any]],
    tools: Any = None,
    chat_template: str | None = None,
    eot: int | None = None,
) -> tuple[list[int], list[int]]:
    """Token ids of the whole conversation and a 0/1 mask: 1 on each model turn and its end-of-turn token.

    Args:
        tokenizer: a tokenizer with a chat template.
        messages: canonical messages (roles system, user, assistant, function_call, tool).
        tools: the record's tool schema (JSON text, a dict or a list), passed to the template.
        chat_template: a Jinja template to use instead of the tokenizer's own.
        eot: the end-of-turn id, when the caller has it (``end_of_turn_id``); found otherwise.

    Raises:
        TemplateError: the template is not prefix-stable (see ``assistant_spans``).
    """
    ids, spans = assistant_spans(tokenizer, messages, tools, chat_template, eot)
    mask = [0] * len(ids)
    for start, stop in spans:
        mask[start:stop] = [1] * (stop - start)
    return ids, mask


def inference_prompt_ids(
    tokenizer: Any, messages: Sequence[dict[str, Any]], tools: Any = None, chat_template: str | None = None
) -> list[int]:
    """What serving feeds the model to get the next assistant turn (with the generation prompt)."""
    return _ids(tokenizer, to_chat(messages), parse_tools(tools), chat_template, True)


def check_template_parity(
    tokenizer: Any, messages: Sequence[dict[str, Any]], tools: Any = None, chat_template: str | None = None
) -> None:
    """Prove that training on ``messages`` with ``chat_template`` matches serving with ``tokenizer``'s own template.

    Checks, for every model turn ``k``: the inference prompt for ``messages[:k]`` (the tokenizer's
    own template, as saved with the checkpoint) equals the training ids before turn ``k``, and the
    turn's last trained token is the end-of-turn token; and the whole training render equals the
    tokenizer's own ``apply_chat_template(messages)``.

    Args:
        tokenizer: the tokenizer that serves (its ``chat_template`` is the inference template).
        messages: a canonical conversation with at least one assistant or function_call turn.
        tools: the record's tool schema, if any.
        chat_template: the template training renders with; None means the tokenizer's own.

    Raises:
        TemplateError: naming the first differing token position and the text around it.
    """
    eot = end_of_turn_id(tokenizer)
    ids, spans = assistant_spans(tokenizer, messages, tools, chat_template, eot)
    model_turns = [k for k, m in enumerate(messages) if m["role"] in MODEL_ROLES]
    for k, (start, stop) in zip(model_turns, spans):
        _same(tokenizer, ids[:start], inference_prompt_ids(tokenizer, messages[:k], tools), f"the prompt before turn {k}")
        if ids[stop - 1] != eot:
            raise TemplateError(
                f"turn {k} ({messages[k]['role']}) does not end with the end-of-turn token "
                f"{tokenizer.convert_ids_to_tokens(eot)!r} (it ends with {_around(tokenizer, ids, stop - 1, 4)}), so the "
                f"model would never learn to stop; {FIX}"
            )
    _same(tokenizer, ids, _ids(tokenizer, to_chat(messages), parse_tools(tools), None, False), "the whole conversation")


def _same(tokenizer: Any, train: list[int], serve: list[int], what: str) -> None:
    if train == serve:
        return
    i = _first_difference(train, serve)
    raise TemplateError(
        f"training and inference renders of {what} differ at token {i}: training has "
        f"{_around(tokenizer, train, i)}, inference has {_around(tokenizer, serve, i)}; a model trained on one and served "
        f"with the other sees text it never saw; train with the template the model is served with (leave "
        f"train.chat_template unset to use the tokenizer's) and save that template with the checkpoint"
    )
