"""The length gate: which tokenizer, and how many tokens each record takes.

``gate_tokenizer`` picks ``validate.tokenizer`` or the base model's; ``count_tokens``
gives each well-formed record its token count under the chat template, tokenising
only the records whose cheap byte and word bounds cannot settle the min/max check
(its docstring says why that is still exact). Apart from the format checks
(steps/gates/format.py) because this is the one gate that needs a tokenizer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from steps.core.config import ConfigError
from steps.models.loading import load_tokenizer, tokenizer_from

if TYPE_CHECKING:
    from steps.gates.config import ValidateConfig


def gate_tokenizer(cfg: ValidateConfig) -> Any:
    """``cfg.tokenizer`` when set, else the base model's (steps.models.loading converts and caches it)."""
    if cfg.tokenizer:
        try:
            return tokenizer_from(cfg.tokenizer)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"validate.tokenizer: cannot load {cfg.tokenizer!r} ({exc}); "
                              "give a tokenizer folder or hub id, or remove the key to use base_model") from exc
    return load_tokenizer(cfg.base_model)


def count_tokens(records: list[Any], well_formed: np.ndarray, tokenizer: Any, cfg: ValidateConfig) -> np.ndarray:
    """Tokens per record: chat template for message records, plain text for text/cls; NaN when malformed.

    Exact for every record that could break a bound. The chat template's own
    tokens are counted once per distinct role sequence (rendered with empty
    contents) and added to the contents' tokens, which equals tokenising the
    rendered conversation when the template puts a special token or newline at
    each turn boundary (ChatML, Llama, Mistral, ...); ``tools`` schemas are not
    counted. Unless ``cfg.exact_tokens``, a record whose bounds settle it is not
    tokenised: a token covers at least one byte (plus one prefix token per turn)
    and each whitespace-separated word is at least one token, so such a record
    keeps its byte bound, which the check judges the same way.
    """
    contents: dict[str, int] = {}
    seqs: list[list[tuple[tuple[str, ...], list[int]]]] = []  # per record: (roles, content ids) per variant
    for rec, ok in zip(records, well_formed.tolist()):
        if not ok:
            seqs.append([])
        elif rec["kind"] in ("text", "cls") and not rec["messages"]:
            seqs.append([((), [contents.setdefault(rec["text"], len(contents))])])
        else:
            tails = {"preference": ("chosen", "rejected"), "feedback": ("completion",)}.get(rec["kind"], (None,))
            turns = [rec["messages"] + (rec.get(tail) or [] if tail else []) for tail in tails]
            seqs.append([(tuple(m["role"] for m in ts), [contents.setdefault(m["content"], len(contents)) for m in ts])
                         for ts in turns])
    texts = list(contents)
    upper = np.fromiter((len(t.encode("utf-8")) + 1 for t in texts), np.int64, len(texts))
    lower = np.fromiter((len(t.split(None, cfg.min_tokens)) for t in texts), np.int64, len(texts))
    overhead: dict[tuple[str, ...], int] = {}
    bound = np.full(len(seqs), np.nan)
    unsure = []
    for i, variants in enumerate(seqs):
        if variants:
            extra = [_overhead(tokenizer, roles, overhead) for roles, _ in variants]
            hi = max(e + int(upper[ids].sum()) for e, (_, ids) in zip(extra, variants))
            lo = min(e + int(lower[ids].sum()) for e, (_, ids) in zip(extra, variants))
            bound[i] = hi
            if cfg.exact_tokens or hi > cfg.max_tokens or lo < cfg.min_tokens:
                unsure.append(i)
    need = sorted({c for i in unsure for _, ids in seqs[i] for c in ids})
    exact = np.zeros(len(texts), dtype=np.int64)
    exact[need] = _lengths(tokenizer, [texts[c] for c in need])
    for i in unsure:
        bound[i] = max(overhead[roles] + int(exact[ids].sum()) for roles, ids in seqs[i])
    return bound


def _lengths(tokenizer: Any, texts: list[str]) -> np.ndarray:
    """Token count of each text, without special tokens, in one batch call."""
    if not texts:
        return np.zeros(0, dtype=np.int64)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        encode = getattr(backend, "encode_batch_fast", None) or backend.encode_batch
        return np.fromiter((len(e) for e in encode(texts, add_special_tokens=False)), np.int64, len(texts))
    return np.array([len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]], dtype=np.int64)


def _overhead(tokenizer: Any, roles: tuple[str, ...], cache: dict[tuple[str, ...], int]) -> int:
    """Tokens the chat template adds around turns with these roles (0 for plain text)."""
    if roles not in cache:
        if not roles:
            cache[roles] = 0
        else:
            conv = [{"role": r, "content": ""} for r in roles]
            try:
                rendered = tokenizer.apply_chat_template(conv, tokenize=False)
            except Exception:  # no template, or it rejects these roles: count "role:\n" per turn
                rendered = "".join(f"{r}:\n" for r in roles)
            cache[roles] = int(_lengths(tokenizer, [rendered])[0])
    return cache[roles]
