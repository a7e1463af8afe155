"""A request's prompt: the model's chat template, with the client's text kept as text.

The chat template renders the conversation and the tokenizer turns the render into ids. A
tokenizer matches its special tokens anywhere in the text it is given, so a user message holding
the text ``<|im_start|>system`` would become the control tokens of a system turn: a forged turn.
``PromptBuilder`` renders exactly as training does (``inference_prompt_ids``) when no message
holds a special token's text, which is every ordinary request. When one does, the text between
the template's own special tokens is tokenized again with special-token matching off, so the
forged text reaches the model as the plain characters it is and special-token ids appear only
where the template put them. A tool schema holding special-token text is refused (400).

Prompts are built in the server's worker threads, outside the generation slots, each on its own
copy of the tokenizer (one fast tokenizer is not for concurrent callers), so a long prompt being
tokenized holds up neither another request's prompt nor a generation.
"""

from __future__ import annotations

import copy
import json
import queue
import re
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from steps.models.template import inference_prompt_ids, parse_tools, to_chat
from steps.serving.chat import ApiError

COPIES = 4  # tokenizer copies: prompts built at once (a SmolLM2 tokenizer copy is a few MB and 0.1 s to make)


class PromptBuilder:
    """Token ids of a conversation for the model, on a small pool of tokenizer copies (thread-safe)."""

    def __init__(self, tokenizer: Any, copies: int = COPIES) -> None:
        self.tokenizer = tokenizer
        self.specials = special_texts(tokenizer)
        self._idle: queue.LifoQueue[Any] = queue.LifoQueue()
        self._to_make, self._lock = copies, threading.Lock()

    def __call__(self, messages: Sequence[dict[str, Any]], tools: Any = None) -> list[int]:
        """The prompt ids for canonical ``messages`` (roles of steps.core.schema) and the request's tools.

        Raises:
            ApiError: 400 when the text cannot be kept as text (see ``prompt_ids``).
        """
        with self._borrow() as tokenizer:
            return prompt_ids(tokenizer, messages, tools, self.specials)

    @contextmanager
    def _borrow(self) -> Iterator[Any]:
        try:
            tokenizer = self._idle.get_nowait()
        except queue.Empty:
            with self._lock:
                make, self._to_make = self._to_make > 0, self._to_make - 1
            tokenizer = copy.deepcopy(self.tokenizer) if make else self._idle.get()
        try:
            yield tokenizer
        finally:
            self._idle.put(tokenizer)


def special_texts(tokenizer: Any) -> frozenset[str]:
    """The text of every special token: what the tokenizer would read as a control token wherever it appears."""
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return frozenset({t.content for t in decoder.values() if t.special} | set(tokenizer.all_special_tokens)) - {""}


def _special_ids(tokenizer: Any) -> set[int]:
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return {int(i) for i, t in decoder.items() if t.special} | {int(i) for i in tokenizer.all_special_ids}


def _first_special(text: str, specials: frozenset[str]) -> str | None:
    return min((s for s in specials if s in text), key=text.find, default=None)


def prompt_ids(tokenizer: Any, messages: Sequence[dict[str, Any]], tools: Any, specials: frozenset[str]) -> list[int]:
    """The prompt for ``messages``, with any special-token text in their content tokenized as plain text.

    Raises:
        ApiError: 400 when a tool schema holds special-token text, or when a message does and this
            tokenizer or template cannot keep it as text (a slow tokenizer; a template that rewrites
            message text); the message names the field and the token.
    """
    if tools and (hit := _first_special(json.dumps(tools, ensure_ascii=False), specials)):
        raise ApiError(400, f"tools: holds the text of the special token {hit!r}; a tool schema is rendered into the prompt as it "
                            f"is, where that text would act as a control token; remove it", "tools", "invalid_tools")  # fmt: skip
    forged = [(i, hit) for i, m in enumerate(messages) if (hit := _first_special(m["content"], specials))]
    if not forged:
        return inference_prompt_ids(tokenizer, messages, tools)  # the training render, token for token
    i, hit = forged[0]

    def refuse(why: str) -> ApiError:
        return ApiError(400, f"messages[{i}].content: holds the text of the special token {hit!r}, and {why}, so it cannot be "
                             f"kept as plain text; remove it", f"messages[{i}].content", "invalid_messages")  # fmt: skip

    if not getattr(tokenizer, "is_fast", False):
        raise refuse("this model's tokenizer is not a fast tokenizer (no character offsets)")
    return _as_text(tokenizer, messages, tools, refuse)


def _as_text(tokenizer: Any, messages: Sequence[dict[str, Any]], tools: Any, refuse: Any) -> list[int]:
    """Ids of the render where special tokens inside message content are tokenized as text.

    The render is tokenized as usual; the special tokens outside every message's content are the
    template's own. The text between two of them is kept as tokenized when it holds no other special
    token, and tokenized again with special-token matching off when it does.
    """
    chat, tools = to_chat(messages), parse_tools(tools)
    text = tokenizer.apply_chat_template(chat, tools=tools, add_generation_prompt=True, tokenize=False)
    spans = _content_spans(tokenizer, chat, tools, text, refuse)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets, special = list(enc["input_ids"]), list(enc["offset_mapping"]), _special_ids(tokenizer)
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}

    def in_content(start: int, end: int) -> bool:
        return any(start < b and end > a for a, b in spans)

    legit = [k for k, t in enumerate(ids) if t in special and not in_content(*offsets[k])]
    out: list[int] = []
    prev, char = -1, 0  # the last template special token, and where the text after it starts
    for k in [*legit, len(ids)]:
        run = ids[prev + 1 : k]
        if any(t in special for t in run):  # a special token inside content: this stretch again, as plain text
            end = offsets[k][0] if k < len(ids) else len(text)
            before, after = decoder.get(ids[prev]) if prev >= 0 else None, decoder.get(ids[k]) if k < len(ids) else None
            piece = text[char:end]
            piece = piece.lstrip() if before is not None and before.rstrip else piece  # what those tokens strip, as usual
            piece = piece.rstrip() if after is not None and after.lstrip else piece
            run = list(tokenizer(piece, add_special_tokens=False, split_special_tokens=True)["input_ids"]) if piece else []
        out.extend(run)
        if k < len(ids):
            out.append(ids[k])
            prev, char = k, offsets[k][1]
    return out


def _content_spans(tokenizer: Any, chat: list[dict[str, str]], tools: Any, text: str, refuse: Any) -> list[tuple[int, int]]:
    """Where each message's content lies in the render ``text``: the render with a marker for each content tells.

    Raises:
        ApiError: the template changes content (trims it, splits it), so the markers do not map back.
    """
    tag = uuid.uuid4().hex
    marked = tokenizer.apply_chat_template(
        [{**m, "content": f"\ue000{tag}{i}\ue001"} for i, m in enumerate(chat)], tools=tools, add_generation_prompt=True, tokenize=False
    )
    for strip in (False, True):  # some templates trim content (Llama 3's `| trim`)
        parts, spans, at, pos = [], [], 0, 0
        for m in re.finditer(f"\ue000{tag}(\\d+)\ue001", marked):
            content = chat[int(m.group(1))]["content"]
            content = content.strip() if strip else content
            parts += [marked[at : m.start()], content]
            pos += m.start() - at
            spans.append((pos, pos + len(content)))
            pos, at = pos + len(content), m.end()
        if "".join([*parts, marked[at:]]) == text:
            return spans
    raise refuse("this model's chat template changes message text (it is not rendered as sent)")
