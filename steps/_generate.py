"""Batched generation and perplexity under a model's own chat template.

Generation feeds the exact ids serving feeds (``_template.inference_prompt_ids``), left-padded
in batches of similar length (sorted by prompt length, so little padding), greedy by default,
stopping at the end-of-turn token. Perplexity counts only the tokens a model is asked to
produce: assistant turns of a conversation (the training mask) or every token of plain text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from steps._template import end_of_turn_id, inference_prompt_ids, render_with_mask

Conversation = Sequence[dict[str, Any]]


def _stop_ids(tokenizer: Any) -> list[int]:
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
    """New token ids for each prompt, generated ``batch_size`` prompts at a time (left padding).

    Greedy decoding runs its own loop (``_greedy``) that drops a row from the batch, KV cache
    included, as soon as it stops; sampling goes through ``model.generate``.
    """
    import torch

    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    pad, stops = _pad_id(tokenizer), _stop_ids(tokenizer)
    device = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        width = max(len(prompts[i]) for i in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, i in enumerate(chunk):
            n = len(prompts[i])
            ids[row, width - n :] = torch.tensor(prompts[i], dtype=torch.long)
            mask[row, width - n :] = 1
        with torch.inference_mode():
            if do_sample:
                gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                                     eos_token_id=stops, pad_token_id=pad, do_sample=True, temperature=temperature,
                                     top_p=None, top_k=None)[:, width:].tolist()  # fmt: skip
            else:
                gen = _greedy(model, ids.to(device), mask.to(device), max_new_tokens, set(stops))
        for row, i in enumerate(chunk):
            new = gen[row]
            cut = next((k for k, t in enumerate(new) if t in stops), len(new))
            out[i] = new[:cut]
    return out


def _greedy(model: Any, ids: Any, mask: Any, max_new_tokens: int, stops: set[int]) -> list[list[int]]:
    """Greedy decoding of a left-padded batch; a row that emits a stop token leaves the batch (and the
    KV cache) at once, so the rows still talking do not pay for the finished ones."""
    import torch
    from transformers import DynamicCache

    out: list[list[int]] = [[] for _ in range(ids.shape[0])]
    live = torch.arange(ids.shape[0], device=ids.device)  # original row of each row still generating
    cache = DynamicCache()
    pos = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: positions count real tokens only
    step = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True,
                 logits_to_keep=1)  # fmt: skip
    for _ in range(max_new_tokens):
        token = step.logits[:, -1].argmax(-1)
        for row, t in zip(live.tolist(), token.tolist()):
            out[row].append(t)
        going = torch.tensor([t not in stops for t in token.tolist()], device=ids.device)
        if not going.any() or len(out[live[0]]) >= max_new_tokens:
            break
        if not going.all():
            keep = going.nonzero().flatten()
            cache.batch_select_indices(keep)
            live, mask, token = live[keep], mask[keep], token[keep]
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        step = model(input_ids=token[:, None], attention_mask=mask, position_ids=mask.sum(-1, keepdim=True) - 1,
                     past_key_values=cache, use_cache=True)  # fmt: skip
    return out


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


def _nll(model: Any, rows: Sequence[tuple[list[int], list[int]]], pad: int, batch_size: int) -> tuple[float, int]:
    """Summed negative log-likelihood and count of the masked (target) tokens of ``rows``."""
    import torch

    total, count = 0.0, 0
    device = next(model.parameters()).device
    rows = sorted(rows, key=lambda r: len(r[0]))
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        width = max(len(ids) for ids, _ in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        attn = torch.zeros_like(ids)
        target = torch.full_like(ids, -100)
        for r, (row_ids, row_mask) in enumerate(chunk):
            n = len(row_ids)
            ids[r, :n] = torch.tensor(row_ids)
            attn[r, :n] = 1
            target[r, :n] = torch.tensor([t if m else -100 for t, m in zip(row_ids, row_mask)])
        with torch.inference_mode():
            logits = model(input_ids=ids.to(device), attention_mask=attn.to(device)).logits.float()
        labels = target[:, 1:].to(device)
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum"
        )
        total += float(loss)
        count += int((labels != -100).sum())
    return total, count


def chat_perplexity(
    model: Any, tokenizer: Any, conversations: Sequence[Conversation], *, max_length: int = 1024, batch_size: int = 4
) -> float | None:
    """exp(mean NLL) over the assistant tokens of the conversations (the tokens training teaches).

    Conversations without an assistant turn are skipped; None when nothing is left to score.
    Conversations longer than ``max_length`` keep their first ``max_length`` tokens.
    """
    rows = []
    for conv in conversations:
        if not any(m["role"] in ("assistant", "function_call") for m in conv):
            continue
        ids, mask = render_with_mask(tokenizer, conv)
        if any(mask[1:max_length]):
            rows.append((ids[:max_length], mask[:max_length]))
    return _perplexity(model, rows, tokenizer, batch_size)


def text_perplexity(
    model: Any, tokenizer: Any, texts: Sequence[str], *, max_length: int = 1024, batch_size: int = 4
) -> float | None:
    """exp(mean NLL) over every token of plain texts (no template)."""
    rows = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_length]
        if len(ids) > 1:
            rows.append((ids, [1] * len(ids)))
    return _perplexity(model, rows, tokenizer, batch_size)


def _perplexity(model: Any, rows: list[tuple[list[int], list[int]]], tokenizer: Any, batch_size: int) -> float | None:
    if not rows:
        return None
    total, count = _nll(model, rows, _pad_id(tokenizer), batch_size)
    return math.exp(total / count) if count else None
