"""Text helpers for augmentation: which strings of a record may change, their language, protected spans.

A record's *units* are the strings the ``fields`` setting lets augmentation rewrite: the
contents of user (or system, assistant) turns in ``messages`` and the ``text`` of text and
cls records. ``chosen``, ``rejected`` and ``completion`` are labels and are never units.

Before a unit is rewritten, its protected spans (code blocks and inline code, URLs, e-mail
addresses, placeholders such as ``[EMAIL]``, template variables, tags, numbers and the
configured entity terms) are swapped for tokens ``ZXQ0``, ``ZXQ1``, ... that translators and
EDA pass through unchanged; ``restore`` puts them back and refuses a text where any token was
lost or repeated, so a rewrite never changes code, a number or a marked entity.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from typing import Any

FIELDS = ("user", "system", "assistant", "text")  # message roles, and the text of text/cls records
TOKEN = "ZXQ"  # protected-span token prefix: alphanumeric, so every engine copies it as an unknown word
TOKEN_RE = re.compile(TOKEN + r"(\d+)(?!\d)")
TOKEN_ANY = TOKEN + r"\d+(?!\d)"  # the same, without a group: for use inside other patterns

# Spans never rewritten, longest constructs first (a fenced block may hold backticks, URLs, numbers).
_SPANS = [
    r"(?s:```.*?```)", r"(?s:~~~.*?~~~)",  # fenced code blocks
    r"(?m:^(?: {4}|\t).*\S.*$)",  # indented code lines
    r"`[^`\n]+`",  # inline code
    r"(?:https?://|www\.)\S*[^\s.,:;!?)\]'\"]",  # URLs, without the punctuation that ends a sentence
    r"[\w.+-]+@[\w-]+\.[\w.-]+",  # e-mail addresses
    r"\[[A-Z][A-Z_]*\]",  # masked PII and other placeholders: [EMAIL], [PHONE]
    r"\{\{.*?\}\}|\{[A-Za-z_]\w*\}",  # template variables
    r"<[^<>\n]+>",  # tags
]
# Numbers, and ASCII words holding a digit (mp3, H2O, v1.2): never EDA's or a translator's to change.
_NUMBER = r"[A-Za-z0-9_]*\d[A-Za-z0-9_]*(?:[.,:/]\d+)*%?"

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z]+")
# Function words: English ones, and frequent ones of other Latin-script languages that English lacks.
_EN = set("the a an of to in on at for with and or but is are was were be been it this that these those "
          "i you he she we they my your our their me him her us them do does did not no can could will would "
          "should how what when where which who why if then than there here have has had as by from about "
          "into out up so just all any some more most very".split())
_OTHER = set("el la los las del que y es una unos por para con se lo como pero muy le les des et est une "
             "du au aux ce cette dans pour avec sur der die das und ist nicht ein eine mit den dem zu "
             "il di che non della o em um uma os não são".split()) - _EN


class ProtectError(ValueError):
    """A text already holds the protected-span token prefix: it cannot be rewritten safely."""


def language(text: str) -> str | None:
    """``zh``, ``en`` or None (no letters, or another Latin-script language) for a unit of text.

    A Chinese character carries about as much as a short English word, so CJK wins when it
    makes up a quarter of the letters; a Latin text is English unless other languages' function
    words outnumber English ones.
    """
    cjk = len(_CJK.findall(text))
    words = [w.lower() for w in _LATIN_WORD.findall(text)]
    if cjk and cjk * 4 >= sum(map(len, words)):
        return "zh"
    if not words:
        return None
    en, other = sum(w in _EN for w in words), sum(w in _OTHER for w in words)
    return "en" if en >= other else None


def span_pattern(terms: Sequence[str] = (), patterns: Sequence[str] = (), numbers: bool = True) -> re.Pattern[str]:
    """One regex for every protected span: built-ins, user ``patterns``, entity ``terms`` and numbers."""
    parts = list(_SPANS) + list(patterns)
    for term in sorted(terms, key=len, reverse=True):  # a Latin term only as a whole word; a CJK one anywhere
        before = r"(?<![A-Za-z0-9_])" if term[:1].isascii() and term[:1].isalnum() else ""
        after = r"(?![A-Za-z0-9_])" if term[-1:].isascii() and term[-1:].isalnum() else ""
        parts.append(before + re.escape(term) + after)
    if numbers:
        parts.append(_NUMBER)
    return re.compile("|".join(f"(?:{p})" for p in parts))


def protect(text: str, pattern: re.Pattern[str]) -> tuple[str, list[str]]:
    """``text`` with each protected span replaced by ``ZXQ<n>``, and the spans in order."""
    if TOKEN.lower() in text.lower():
        raise ProtectError(f"text already contains {TOKEN!r}")
    spans: list[str] = []

    def swap(m: re.Match[str]) -> str:
        spans.append(m.group(0))
        return f"{TOKEN}{len(spans) - 1}"

    return pattern.sub(swap, text), spans


def restore(text: str, spans: Sequence[str]) -> str | None:
    """Put the protected spans back; None when a token was lost, repeated or invented."""
    found = [int(m.group(1)) for m in TOKEN_RE.finditer(text)]
    if sorted(found) != list(range(len(spans))):
        return None
    return TOKEN_RE.sub(lambda m: spans[int(m.group(1))], text)


def has_words(masked: str) -> bool:
    """Whether a masked unit has any prose left to rewrite (not only tokens, digits and punctuation)."""
    return bool(_CJK.search(masked) or _LATIN_WORD.search(TOKEN_RE.sub(" ", masked)))


# ---------------------------------------------------------------- units of a record

Path = tuple[Any, ...]  # ("messages", i) or ("text",)


def units(rec: dict[str, Any], fields: Sequence[str]) -> list[tuple[Path, str]]:
    """(path, text) of every string of ``rec`` that ``fields`` allows augmentation to rewrite."""
    roles = set(fields) - {"text"}
    out: list[tuple[Path, str]] = [(("messages", i), m["content"]) for i, m in enumerate(rec.get("messages") or ())
                                   if m.get("role") in roles and m.get("content")]
    if "text" in fields and rec.get("kind") in ("text", "cls") and rec.get("text"):
        out.append((("text",), rec["text"]))
    return out


def replaced(rec: dict[str, Any], new: dict[Path, str]) -> dict[str, Any]:
    """A deep copy of ``rec`` with the units at ``new``'s paths replaced."""
    out = copy.deepcopy(rec)
    for path, text in new.items():
        if path == ("text",):
            out["text"] = text
        else:
            out["messages"][path[1]]["content"] = text
    return out
