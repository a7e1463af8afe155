"""Batched generation and perplexity under a model's own chat template.

Generation feeds the exact ids serving feeds (``steps.models.template.inference_prompt_ids``), left-padded
in batches of similar length (sorted by prompt length, so little padding), greedy by default,
stopping at the end-of-turn token. Perplexity counts only the tokens a model is asked to
produce: assistant turns of a conversation (the training mask) or every token of plain text.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

from steps.models.template import end_of_turn_id, inference_prompt_ids, render_with_mask

Conversation = Sequence[dict[str, Any]]


def stop_ids(tokenizer: Any) -> list[int]:
    ids = {end_of_turn_id(tokenizer)}
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return sorted(ids)


def _pad_id(tokenizer: Any) -> int:
    return int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)


def prompt_ids(tokenizer: Any, conversations: Sequence[Conversation], max_prompt_tokens: int) -> list[list[int]]:
    """Inference ids for each conversation, keeping the last ``max_prompt_tokens`` (the question end)."""
    return [inference_prompt_ids(tokenizer, conv)[-max_prompt_tokens:] for conv in conversations]


def generate_ids(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[list[int]],
    *,
    max_new_tokens: int,
    batch_size: int = 8,
    do_sample: bool = False,
    temperature: float = 1.0,
) -> list[list[int]]:
    """New token ids for each prompt, at most ``batch_size`` prompts generating at once (left padding).

    Greedy decoding runs its own loop (``_greedy``): a row leaves the batch, KV cache included, as soon
    as it stops, and the next prompts (shortest first) take the free places. Sampling goes through
    ``model.generate`` in batches of ``batch_size``.
    """
    import torch

    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    pad, stops = _pad_id(tokenizer), stop_ids(tokenizer)
    device = next(model.parameters()).device
    if not do_sample:
        return _greedy(model, [list(p) for p in prompts], order, batch_size, max_new_tokens, set(stops), pad, device)
    out: list[list[int]] = [[] for _ in prompts]
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        ids, mask = _left_padded([prompts[i] for i in chunk], pad, device)
        with torch.inference_mode():
            gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, eos_token_id=stops,
                                 pad_token_id=pad, do_sample=True, temperature=temperature, top_p=None,
                                 top_k=None)[:, ids.shape[1] :].tolist()  # fmt: skip
        for row, i in enumerate(chunk):
            out[i] = gen[row][: next((k for k, t in enumerate(gen[row]) if t in stops), len(gen[row]))]
    return out


def _left_padded(prompts: Sequence[list[int]], pad: int, device: Any) -> tuple[Any, Any]:
    """Input ids and attention mask of ``prompts`` left-padded to the longest."""
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompts], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long)
    return ids.to(device), mask.to(device)


def _greedy(model: Any, prompts: list[list[int]], order: list[int], batch_size: int, max_new_tokens: int, stops: set[int], pad: int,
            device: Any) -> list[list[int]]:  # fmt: skip
    """Greedy decoding of ``prompts`` (taken in ``order``) with a rolling batch of at most ``batch_size`` rows.

    A row that emits a stop token (or reaches ``max_new_tokens``) leaves the batch and the KV cache at once,
    so the rows still talking do not pay for the finished ones; when a quarter of the places are free
    (or the rest of the queue fits) the next prompts are prefilled together and join the batch, their
    cache left-padded to the batch's length, so the batch stays full until the queue is empty. Each row
    sees only its own tokens (padding is masked, positions count real tokens): the same greedy tokens as
    one prompt at a time, up to float rounding between batch shapes.
    """
    import torch

    out: list[list[int]] = [[] for _ in prompts]
    queue, rows = list(order) if max_new_tokens > 0 else [], []  # rows: the prompt index of each batch row
    cache = mask = token = None
    with torch.inference_mode():
        while queue or rows:
            if rows:  # one decoding step for every row still talking
                mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
                step = model(input_ids=token[:, None], attention_mask=mask, position_ids=mask.sum(-1, keepdim=True) - 1,
                             past_key_values=cache, use_cache=True)  # fmt: skip
                token = step.logits[:, -1].argmax(-1)
            free = batch_size - len(rows)
            if queue and free and (not rows or free >= min(len(queue), max(1, batch_size // 4))):
                take, queue = queue[:free], queue[free:]
                new_cache, new_mask, new_token = _prefill(model, [prompts[i] for i in take], pad, device)
                if rows:
                    cache, mask = _join(cache, mask, new_cache, new_mask)
                    token = torch.cat([token, new_token])
                else:
                    cache, mask, token = new_cache, new_mask, new_token
                _reserve(cache)
                rows += take
            going = []
            for r, (i, t) in enumerate(zip(rows, token.tolist())):
                out[i].append(t)
                if t not in stops and len(out[i]) < max_new_tokens:
                    going.append(r)
            if len(going) < len(rows):
                keep = torch.tensor(going, dtype=torch.long, device=device)
                cache.batch_select_indices(keep)
                rows, mask, token = [rows[r] for r in going], mask[keep], token[keep]
                if rows:
                    _drop_leading_padding(cache, mask)
                    mask = mask[:, int(mask.any(0).long().argmax()) :]
    return [row[: next((k for k, t in enumerate(row) if t in stops), len(row))] for row in out]


def _prefill(model: Any, prompts: list[list[int]], pad: int, device: Any) -> tuple[Any, Any, Any]:
    """Cache, attention mask and first greedy token of a left-padded batch of prompts."""
    from transformers import DynamicCache

    ids, mask = _left_padded(prompts, pad, device)
    cache = DynamicCache()
    pos = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: positions count real tokens only
    step = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True, logits_to_keep=1)
    return cache, mask, step.logits[:, -1].argmax(-1)


def _join(cache: Any, mask: Any, new_cache: Any, new_mask: Any) -> tuple[Any, Any]:
    """The rows of ``new_cache`` appended to ``cache``, the shorter one left-padded (masked) to the longer's length."""
    import torch
    import torch.nn.functional as F

    width = max(mask.shape[1], new_mask.shape[1])
    for old, new in zip(cache.layers, new_cache.layers):
        for name in ("keys", "values"):
            a, b = getattr(old, name), getattr(new, name)  # (batch, heads, length, head_dim)
            setattr(old, name, torch.cat([F.pad(a, (0, 0, width - a.shape[2], 0)), F.pad(b, (0, 0, width - b.shape[2], 0))]))
    return cache, torch.cat([F.pad(mask, (width - mask.shape[1], 0)), F.pad(new_mask, (width - new_mask.shape[1], 0))])


def _drop_leading_padding(cache: Any, mask: Any) -> None:
    """Cut the cache's leading positions that are padding in every row left (rows that left took them)."""
    lead = int(mask.any(0).long().argmax())
    if lead:
        for layer in cache.layers:
            if hasattr(layer, "drop_leading"):  # a reserved layer (_reserve)
                layer.drop_leading(lead)
            else:
                layer.keys, layer.values = layer.keys[:, :, lead:], layer.values[:, :, lead:]


_ROOM = 64  # cache positions reserved at a time: one copy of the cache per 64 decoding steps instead of one per step


def _reserve(cache: Any) -> None:
    """Give every layer of a DynamicCache room to grow in place (``_reserved_layer_class``); same keys and values.

    Called after a prefill or a join (``_join`` sets each layer's keys and values to new tensors).
    """
    from transformers.cache_utils import DynamicLayer

    reserved = _reserved_layer_class()
    for k, layer in enumerate(cache.layers):  # only plain layers: a sliding-window layer keeps its own rule
        if type(layer) in (DynamicLayer, reserved) and layer.keys is not None and layer.keys.numel():
            cache.layers[k] = reserved(layer.keys, layer.values)


@functools.cache
def _reserved_layer_class() -> type:
    from transformers.cache_utils import DynamicLayer

    class ReservedLayer(DynamicLayer):
        """A DynamicLayer whose keys and values are views of buffers with room for more positions.

        DynamicLayer concatenates each step's key and value to the whole cache, copying all of it on
        every decoding step (for 32 rows of ~300 positions, ~0.4 GB a step on SmolLM2-135M); this one
        writes the new position in place and copies only when the room (``_ROOM`` positions) runs out.
        The attention reads the same values, so the tokens are the same.
        """

        def __init__(self, keys: Any, values: Any) -> None:
            super().__init__()
            self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
            self._k, self._v, self._n = self._grown(keys, keys.shape[2]), self._grown(values, values.shape[2]), keys.shape[2]
            self._views()

        @staticmethod
        def _grown(t: Any, used: int) -> Any:
            buf = t.new_empty(t.shape[0], t.shape[1], used + _ROOM, t.shape[3])
            buf[:, :, :used] = t[:, :, :used]
            return buf

        def _views(self) -> None:
            self.keys, self.values = self._k[:, :, : self._n], self._v[:, :, : self._n]

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            q = key_states.shape[2]
            while self._n + q > self._k.shape[2]:
                self._k, self._v = self._grown(self._k, self._n), self._grown(self._v, self._n)
            self._k[:, :, self._n : self._n + q] = key_states
            self._v[:, :, self._n : self._n + q] = value_states
            self._n += q
            self._views()
            return self.keys, self.values

        def batch_select_indices(self, indices: Any) -> None:
            self._k, self._v = self._k[indices], self._v[indices]
            self._views()

        def drop_leading(self, lead: int) -> None:
            self._k, self._v, self._n = self._k[:, :, lead:], self._v[:, :, lead:], self._n - lead
            self._views()

    return ReservedLayer


def generate_chat(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[Conversation],
    *,
    max_new_tokens: int,
    batch_size: int = 8,
    do_sample: bool = False,
    max_prompt_tokens: int = 1536,
) -> list[str]:
    """The model's next assistant turn for each conversation, as text (special tokens removed)."""
    ids = generate_ids(
        model,
        tokenizer,
        prompt_ids(tokenizer, conversations, max_prompt_tokens),
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        do_sample=do_sample,
    )
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in ids]


def _nll(model: Any, rows: Sequence[tuple[list[int], list[int]]], pad: int, batch_size: int) -> list[tuple[float, int]]:
    """Per row of ``rows``, in their order: summed negative log-likelihood and count of its masked (target) tokens."""
    import torch

    out: list[tuple[float, int]] = [(0.0, 0)] * len(rows)
    device = next(model.parameters()).device
    order = sorted(range(len(rows)), key=lambda k: len(rows[k][0]))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        width = max(len(rows[k][0]) for k in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        attn = torch.zeros_like(ids)
        target = torch.full_like(ids, -100)
        for r, k in enumerate(chunk):
            row_ids, row_mask = rows[k]
            n = len(row_ids)
            ids[r, :n] = torch.tensor(row_ids)
            attn[r, :n] = 1
            target[r, :n] = torch.tensor([t if m else -100 for t, m in zip(row_ids, row_mask)])
        # Logits only where a row's next token is scored: the vocabulary projection and its float32
        # log-softmax (~0.8 GB for 4 rows of 1024 tokens) skip prompts and padding.
        keep = (target[:, 1:] != -100).any(0).nonzero().squeeze(1)
        labels = target[:, 1:][:, keep].to(device)
        with torch.inference_mode():
            logits = _logits_at(model, ids.to(device), attn.to(device), keep.to(device)).float()
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
        for r, k in enumerate(chunk):
            out[k] = (float(loss[r].sum()), int((labels[r] != -100).sum()))
    return out


def _logits_at(model: Any, ids: Any, attn: Any, keep: Any) -> Any:
    """Logits at positions ``keep`` (a 1-D index tensor): ``logits_to_keep`` where the model takes one, else all, indexed."""
    try:
        logits = model(input_ids=ids, attention_mask=attn, logits_to_keep=keep).logits
    except TypeError:  # a model without logits_to_keep
        logits = model(input_ids=ids, attention_mask=attn).logits
    return logits if logits.size(1) == len(keep) else logits[:, keep]  # one that took the keyword and ignored it


def chat_nll(
    model: Any, tokenizer: Any, conversations: Sequence[Conversation | None], *, max_length: int = 1024, batch_size: int = 4
) -> list[tuple[float, int] | None]:
    """Per conversation: (summed NLL, count) of its assistant tokens (the tokens training teaches).

    None for a conversation without an assistant turn (or None itself); a conversation longer
    than ``max_length`` keeps its first ``max_length`` tokens.
    """
    rows, where = [], []
    for k, conv in enumerate(conversations):
        if not conv or not any(m["role"] in ("assistant", "function_call") for m in conv):
            continue
        ids, mask = render_with_mask(tokenizer, conv)
        if any(mask[1:max_length]):
            rows.append((ids[:max_length], mask[:max_length]))
            where.append(k)
    out: list[tuple[float, int] | None] = [None] * len(conversations)
    for k, item in zip(where, _nll(model, rows, _pad_id(tokenizer), batch_size)):
        out[k] = item
    return out


def perplexity_of(items: Sequence[tuple[float, int] | None]) -> float | None:
    """exp(sum NLL / sum tokens) over the scored items; None when nothing was scored."""
    scored = [x for x in items if x is not None]
    count = sum(n for _, n in scored)
    return math.exp(sum(nll for nll, _ in scored) / count) if count else None


def chat_perplexity(
    model: Any, tokenizer: Any, conversations: Sequence[Conversation], *, max_length: int = 1024, batch_size: int = 4
) -> float | None:
    """exp(mean NLL) over the assistant tokens of the conversations (the tokens training teaches).

    Conversations without an assistant turn are skipped; None when nothing is left to score.
    Conversations longer than ``max_length`` keep their first ``max_length`` tokens.
    """
    return perplexity_of(chat_nll(model, tokenizer, conversations, max_length=max_length, batch_size=batch_size))


def text_perplexity(
    model: Any, tokenizer: Any, texts: Sequence[str], *, max_length: int = 1024, batch_size: int = 4
) -> float | None:
    """exp(mean NLL) over every token of plain texts (no template)."""
    rows = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_length]
        if len(ids) > 1:
            rows.append((ids, [1] * len(ids)))
    return perplexity_of(_nll(model, rows, _pad_id(tokenizer), batch_size))
