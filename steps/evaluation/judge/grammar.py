"""Structured generation for a local judge: greedy decoding under the reply's JSON schema (xgrammar).

Only tokens that keep the reply a prefix of a schema-valid object may be chosen, so a local judge,
however small, answers with the very object the strict parser accepts. Two things make that a
guarantee rather than a likelihood: the free-text ``reason`` is bounded to ``REASON_CHARS``
printable ASCII characters without ``"`` or ``\\`` (no escapes, no control characters, which
``json.loads`` rejects) and no optional whitespace is allowed, so the longest valid reply has a
known length in bytes; and a chosen token always adds at least one byte, so a budget of that
many tokens always reaches the closing brace. Used by ``steps.evaluation.judge.client.local_chat``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from steps.models.structured import SEPARATORS, JsonGrammars

REASON_CHARS = 160  # about one sentence; bounds a local reply to ~230 bytes (pointwise), hence ~230 tokens at worst
_TEXT = r"[ -!#-\[\]-~]"  # printable ASCII but '"' and '\': never needs an escape


def bounded_schema(schema: Mapping[str, Any], reason_chars: int = REASON_CHARS) -> tuple[dict[str, Any], int]:
    """The schema a local judge decodes under, and the length in bytes of the longest reply it allows.

    Args:
        schema: a reply schema of ``steps.evaluation.judge.parse``: an object whose values are enums
            or free strings.
        reason_chars: the most characters a free string may hold.

    Returns:
        ``(schema with every free string bounded to 1..reason_chars safe characters, longest reply bytes)``.

    Raises:
        ValueError: a value that is neither an enum nor a string (its longest form is not known here).
    """
    properties: dict[str, Any] = {}
    longest: dict[str, Any] = {}
    for key, value in schema["properties"].items():
        if "enum" in value:
            properties[key] = dict(value)
            longest[key] = max(value["enum"], key=lambda v: len(json.dumps(v)))
        elif value.get("type") == "string":
            properties[key] = {"type": "string", "pattern": f"^{_TEXT}{{1,{reason_chars}}}$"}
            longest[key] = "x" * reason_chars
        else:
            raise ValueError(f"reply schema {schema.get('title')!r}, key {key!r}: only enums and strings can be bounded")
    text = json.dumps(longest, separators=SEPARATORS)
    return {**schema, "properties": properties}, len(text.encode())


class GrammarDecoder:
    """Greedy, batched generation of a model's next turn, constrained to a JSON schema.

    The tokenizer's vocabulary is read once and each schema compiled once and cached
    (``steps.models.structured.JsonGrammars``, which the server decodes through too). The turn ends at the model's end-of-turn or eos token, which the grammar
    allows only once the object is complete.
    """

    def __init__(self, model: Any, tokenizer: Any, *, reason_chars: int = REASON_CHARS) -> None:
        from steps.models.generation import stop_ids

        self.model, self.tokenizer, self.reason_chars = model, tokenizer, reason_chars
        self.stops = stop_ids(tokenizer)
        self._grammars = JsonGrammars(tokenizer, model.config.vocab_size, self.stops)
        self._compiled: dict[str, tuple[Any, int]] = {}

    def _grammar(self, schema: Mapping[str, Any]) -> tuple[Any, int]:
        key = json.dumps(schema, sort_keys=True)
        if key not in self._compiled:
            local, longest = bounded_schema(schema, self.reason_chars)
            compiled = self._grammars.compile(local)
            self._compiled[key] = (compiled, longest)
        return self._compiled[key]

    def __call__(
        self,
        conversations: Sequence[Sequence[Mapping[str, Any]]],
        schema: Mapping[str, Any],
        *,
        max_new_tokens: int,
        batch_size: int = 8,
        max_prompt_tokens: int = 1536,
    ) -> list[str]:
        """One schema-valid reply per conversation (in order).

        Args:
            conversations: chat messages, rendered with the tokenizer's chat template.
            schema: the reply schema; free strings are bounded (``bounded_schema``).
            max_new_tokens: the token budget, raised to the longest valid reply when smaller, so
                that no reply is cut before it closes.
            batch_size: conversations generated together (left padding, similar lengths together).
            max_prompt_tokens: prompt tokens kept, from the end.
        """
        import torch
        import xgrammar as xgr
        from transformers import LogitsProcessorList

        from steps.models.generation import prompt_ids

        compiled, longest = self._grammar(schema)
        budget = max(max_new_tokens, longest + 1)  # one byte a token at the least, then the stop token
        prompts = prompt_ids(self.tokenizer, conversations, max_prompt_tokens)
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        device = next(self.model.parameters()).device
        out = [""] * len(prompts)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            width = max(len(prompts[i]) for i in chunk)
            ids = torch.tensor([[pad] * (width - len(prompts[i])) + prompts[i] for i in chunk])
            mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in chunk])
            processor = xgr.contrib.hf.LogitsProcessor(compiled)  # stateful: one per generate call
            with torch.inference_mode():
                new = self.model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=budget,
                                          do_sample=False, top_p=None, top_k=None, temperature=None,
                                          eos_token_id=self.stops, pad_token_id=pad,
                                          logits_processor=LogitsProcessorList([processor]))[:, width:].tolist()  # fmt: skip
            for row, i in zip(new, chunk):
                cut = next((k for k, t in enumerate(row) if t in self.stops), len(row))
                out[i] = self.tokenizer.decode(row[:cut], skip_special_tokens=True)
        return out
