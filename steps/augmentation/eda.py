"""EDA (Wei and Zou, 2019): synonym replacement, random insertion, random swap, random deletion.

Works on a *masked* unit (steps/augmentation/text.py ``protect``): protected-span tokens (``ZXQ0``) are
never replaced, moved or deleted. English is split into words, spaces and punctuation with a
regex, Chinese into words with jieba; only words change, so spacing and punctuation stay.
Each variant applies one operation, as in the paper; a rate is the fraction of words it
touches (at least one word when the rate is above zero; deletion drops each word with that
probability). Synonyms: WordNet for English, Cilin for Chinese (steps/augmentation/lexicon.py).

Only lower-case English words are replaced, moved or deleted: capitalised words are
sentence starts or names, which a rewrite should leave where they are.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from steps.augmentation.text import TOKEN_ANY, TOKEN_RE

OPS = ("synonym", "insert", "swap", "delete")

_EN_TOKEN = re.compile(TOKEN_ANY + r"|[A-Za-z]+(?:'[a-z]+)?|\s+|.", re.S)
_EN_WORD = re.compile(r"^[a-z]+(?:'[a-z]+)?$")
_ZH_WORD = re.compile(r"^[\u3400-\u9fff\uf900-\ufaff]+$")
EN_STOP = frozenset(
    "a about above after again against all am an and any are as at be because been before being below between both "
    "but by can could did do does doing down during each few for from further had has have having he her here hers "
    "him his how i if in into is it its itself just me more most my no nor not now of off on once only or other our "
    "out over own same she should so some such than that the their them then there these they this those through to "
    "too under until up very was we were what when where which while who whom why will with would you your".split())
ZH_STOP = frozenset("的 了 是 在 和 与 及 或 也 都 就 而 我 你 您 他 她 它 我们 你们 他们 这 那 这个 那个 吗 呢 吧 啊 "
                    "一个 没有 不 请 如何 什么 怎么 怎样 为什么 哪 哪个 哪些 可以 能 会 要 把 被 对 从 到 给 让".split())


class Lexicon(Protocol):
    def prepare(self, words: Sequence[str]) -> None: ...
    def synonyms(self, word: str) -> list[str]: ...


@dataclass(frozen=True)
class Rates:
    """Fraction of a unit's words each operation touches; 0 switches it off."""

    synonym: float = 0.1
    insert: float = 0.1
    swap: float = 0.1
    delete: float = 0.1

    def enabled(self) -> list[str]:
        return [op for op in OPS if getattr(self, op) > 0]


def tokens(text: str, lang: str) -> list[str]:
    """Every character of ``text`` in order, split into words, spaces, punctuation and span tokens."""
    if lang == "zh":
        import jieba

        jieba.setLogLevel(60)
        out: list[str] = []
        for piece in re.split(f"({TOKEN_ANY})", text):  # span tokens stay whole
            if piece:
                out += [piece] if TOKEN_RE.fullmatch(piece) else jieba.lcut(piece, HMM=False)
        return out
    return _EN_TOKEN.findall(text)


def is_word(tok: str, lang: str) -> bool:
    """A token EDA may change (span tokens, names, numbers and punctuation are not words here)."""
    return bool((_ZH_WORD if lang == "zh" else _EN_WORD).match(tok))


def candidate_words(text: str, lang: str) -> list[str]:
    """The words of ``text`` that synonym lookups will be asked about (to prepare a lexicon in one pass)."""
    stop = ZH_STOP if lang == "zh" else EN_STOP
    return [t for t in tokens(text, lang) if is_word(t, lang) and t not in stop]


def choose_op(rates: Rates, rng: random.Random, variant: int) -> str:
    """The operation of variant ``variant``: the enabled ones in turn, from a per-record random start."""
    ops = rates.enabled()
    return ops[(rng.randrange(len(ops)) + variant) % len(ops)]


def augment(text: str, lang: str, op: str, rate: float, lexicon: Lexicon, rng: random.Random) -> str:
    """``text`` after one EDA operation at ``rate``; the same text when nothing applies."""
    toks = tokens(text, lang)
    words = [i for i, t in enumerate(toks) if is_word(t, lang)]
    if not words:
        return text
    n = max(1, round(rate * len(words)))
    stop = ZH_STOP if lang == "zh" else EN_STOP
    joiner = "" if lang == "zh" else " "
    if op == "synonym":
        pool = [i for i in words if toks[i] not in stop and lexicon.synonyms(toks[i])]
        for i in rng.sample(pool, min(n, len(pool))):
            toks[i] = rng.choice(lexicon.synonyms(toks[i]))
    elif op == "insert":
        pool = [toks[i] for i in words if toks[i] not in stop and lexicon.synonyms(toks[i])]
        for _ in range(n if pool else 0):
            new = rng.choice(lexicon.synonyms(rng.choice(pool)))
            at = rng.choice([i for i, t in enumerate(toks) if is_word(t, lang)])
            toks[at:at] = [new, joiner] if joiner else [new]
    elif op == "swap":
        for _ in range(n if len(words) > 1 else 0):
            i, j = rng.sample(words, 2)
            toks[i], toks[j] = toks[j], toks[i]
    elif op == "delete":
        drop = {i for i in words if rng.random() < rate}
        if len(drop) >= len(words):  # never delete every word
            drop.discard(rng.choice(words))
        toks = _delete(toks, drop, lang)
    else:
        raise ValueError(f"unknown EDA operation {op!r}; expected one of {', '.join(OPS)}")
    return "".join(toks)


def _delete(toks: list[str], drop: set[int], lang: str) -> list[str]:
    """``toks`` without the tokens at ``drop``, each English word taking one neighbouring space with it."""
    out = list(toks)
    for i in sorted(drop, reverse=True):  # from the end: earlier indices stay valid
        span = [i]
        if lang != "zh" and i + 1 < len(out) and out[i + 1] == " ":
            span.append(i + 1)
        elif lang != "zh" and i > 0 and out[i - 1] == " ":
            span.append(i - 1)
        for k in sorted(span, reverse=True):
            del out[k]
    return out
