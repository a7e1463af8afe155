"""Personal data and secrets in text: find them, mask them. Pure functions over strings.

``scan(text)`` returns every finding as ``Finding(type, start, end)``; ``mask(text)``
replaces each with its placeholder (``[EMAIL]``, ``[PHONE]``, ``[ID]``, ``[CARD]``,
``[SECRET]``). Patterns aim at high precision on fine-tuning data: a phone number
needs a ``+country`` prefix or a common national layout, so years (2024), prices
($1,299.00), versions (1.2.3) and error codes (E5, 0x80070005) are left alone; a
card number must pass the Luhn check; a secret keeps its ``key=`` prefix and loses
only its value.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np

PLACEHOLDER = {"email": "[EMAIL]", "phone": "[PHONE]", "id": "[ID]", "card": "[CARD]", "secret": "[SECRET]"}


class Finding(NamedTuple):
    type: str  # a key of PLACEHOLDER
    start: int
    end: int


# Secrets first: the most specific patterns win an overlap (group "v", when present, is the value).
_SECRET = [
    re.compile(r"\bsk-(?:proj-|svcacct-|admin-|ant-)?[A-Za-z0-9_-]{20,}"),  # OpenAI (and Anthropic) keys
    re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b"),  # AWS access key ids
    re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})"),  # GitHub tokens
    re.compile(r"\bhf_[A-Za-z0-9]{30,}"),  # Hugging Face tokens
    re.compile(r"\bxox[bpars]-[A-Za-z0-9-]{10,}"),  # Slack tokens
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),  # JWTs
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)"),
    re.compile(r"\b[Bb]earer\s+(?P<v>[A-Za-z0-9\-._~+/]{16,}=*)"),
    # A long value after key=/token=/secret: ... (16+ characters, at least one digit).
    re.compile(
        r"(?i)\b(?:[a-z0-9_]*[_-])?(?:api[_-]?key|apikey|key|secret|token|access[_-]?key|password|passwd|pwd)"
        r"[\"']?\s*[=:]\s*[\"']?(?P<v>(?=[A-Za-z0-9_\-./+=]*\d)[A-Za-z0-9_\-./+=]{16,})"
    ),
]
_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# 13-19 digits, optionally in groups separated by single spaces or dashes; Luhn-checked below.
_CARD = re.compile(r"(?<![\w.,-])\d(?:[ -]?\d){12,18}(?![\w-]|[.,]\d)")
_ID = [
    re.compile(r"(?<![\w-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w-])"),  # US SSN
    re.compile(r"\b(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"),  # UK NI number
]
_NOT_BEFORE = r"(?<![\w.,/$€£+-])"
_NOT_AFTER = r"(?![\w/%-]|[.,]\d)"
_PHONE = [
    # +country code then 6-14 more digits in groups: +44 20 7946 0958, +1 (555) 010-9999, +49-30-1234567
    re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,5}){2,6}" + _NOT_AFTER),
    # North America: (555) 123-4567, 555-123-4567, 555.123.4567, 1-800-555-0199
    re.compile(_NOT_BEFORE + r"(?:1[ .-])?(?:\([2-9]\d{2}\) ?|[2-9]\d{2}[.-])\d{3}[.-]\d{4}" + _NOT_AFTER),
    re.compile(_NOT_BEFORE + r"(?:1 )?\([2-9]\d{2}\) \d{3} \d{4}" + _NOT_AFTER),
    # National numbers with a trunk 0: 020 7946 0958, 07700 900123, 030-1234567, 06 12 34 56 78
    re.compile(_NOT_BEFORE + r"0\d{1,4}(?:[ -]\d{2,8}){1,4}" + _NOT_AFTER),
    re.compile(_NOT_BEFORE + r"0[1-9]\d{8,10}" + _NOT_AFTER),
]
_DATE = re.compile(r"\d{1,2}[ .-]\d{1,2}[ .-](?:19|20)\d{2}")  # 01-02-2024 is a date, not a phone
_DIGIT = re.compile(r"\d")
_MAYBE_SECRET = re.compile(r"sk-|AKIA|ASIA|ABIA|ACCA|gh[pousr]_|github_pat_|hf_|xox|eyJ|PRIVATE KEY|[Bb]earer|[=:]")


# Cheap necessary conditions, checked over all texts at once (bytes and numpy, not regexes):
# only a text that has one gets a full ``scan``.
_LITERALS = (b"@", b"sk-", b"akia", b"asia", b"abia", b"acca", b"ghp_", b"gho_", b"ghu_", b"ghs_", b"ghr_",
             b"github_pat_", b"hf_", b"xox", b"eyj", b"private key",
             b"bearer", b"key", b"secret", b"token", b"passw", b"pwd")
_MIN_DIGITS = 6  # the shortest number scanned for (a UK NI number) has 6 digits


def scan_many(texts: list[str]) -> dict[int, list[Finding]]:
    """``scan`` of many texts: index -> findings, for the texts that have any.

    Fast on many texts because most need no regex at all: cheap necessary
    conditions (a literal, a run of digits) are checked over all texts at once.
    """
    blobs = [t.encode("utf-8") for t in texts]
    ends = np.cumsum([len(b) + 4 for b in blobs])  # 4 newlines between texts: numbers never join across
    joined = b"\n\n\n\n".join(blobs)
    hit = np.zeros(len(texts), dtype=bool)
    low = joined.lower()  # ASCII-only lowering keeps byte offsets
    for lit in _LITERALS:
        pos, at = [], low.find(lit)
        while at >= 0:  # bytes.find is a C memmem: far faster than a regex over the whole corpus
            pos.append(at)
            at = low.find(lit, at + 1)
        hit[np.searchsorted(ends, np.asarray(pos, dtype=np.int64), side="right")] = True
    # Digits at most 3 bytes apart form one number ("+1 (555)": 2 separators between); a number of
    # _MIN_DIGITS or more digits may be a phone, card or id number.
    digits = np.flatnonzero(np.frombuffer(joined, dtype=np.uint8) - np.uint8(48) < 10)  # wraps below "0"
    if len(digits):
        new = np.ones(len(digits), dtype=bool)
        new[1:] = np.diff(digits) > 3
        run = np.cumsum(new, dtype=np.int64 if len(digits) > 2**31 - 1 else np.int32) - 1
        starts = digits[new][np.bincount(run) >= _MIN_DIGITS]
        hit[np.searchsorted(ends, starts, side="right")] = True
    found = {int(i): scan(texts[i]) for i in np.flatnonzero(hit)}
    return {i: f for i, f in found.items() if f}


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum every payment card number satisfies."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _digits(s: str) -> str:
    return "".join(ch for ch in s if ch.isdigit())


def scan(text: str) -> list[Finding]:
    """Every piece of personal data or secret in ``text``, sorted, never overlapping."""
    found: list[Finding] = []
    if _MAYBE_SECRET.search(text):
        for pat in _SECRET:
            for m in pat.finditer(text):
                span = m.span("v") if "v" in pat.groupindex and m.group("v") else m.span()
                found.append(Finding("secret", *span))
    if "@" in text:
        found += [Finding("email", *m.span()) for m in _EMAIL.finditer(text)]
    if _DIGIT.search(text):
        for m in _CARD.finditer(text):
            d = _digits(m.group())
            if 13 <= len(d) <= 19 and len(set(d)) > 1 and luhn_ok(d):
                found.append(Finding("card", *m.span()))
        for pat in _ID:
            found += [Finding("id", *m.span()) for m in pat.finditer(text)]
        for pat in _PHONE:
            for m in pat.finditer(text):
                if 7 <= len(_digits(m.group())) <= 15 and not _DATE.fullmatch(m.group()):
                    found.append(Finding("phone", *m.span()))
    return _resolve(found)


_RANK = {"secret": 0, "email": 1, "card": 2, "id": 3, "phone": 4}


def _resolve(found: list[Finding]) -> list[Finding]:
    """Drop findings that overlap a stronger one (secret > email > card > id > phone, then longer)."""
    kept: list[Finding] = []
    for f in sorted(found, key=lambda f: (_RANK[f.type], f.start - f.end, f.start)):
        if all(f.end <= k.start or f.start >= k.end for k in kept):
            kept.append(f)
    return sorted(kept, key=lambda f: f.start)


def mask(text: str, findings: list[Finding] | None = None) -> str:
    """``text`` with every finding replaced by its placeholder."""
    findings = scan(text) if findings is None else findings
    out, pos = [], 0
    for f in findings:
        out += [text[pos : f.start], PLACEHOLDER[f.type]]
        pos = f.end
    out.append(text[pos:])
    return "".join(out)


def snippet(text: str, finding: Finding, findings: list[Finding] | None = None, width: int = 24) -> str:
    """A short excerpt around ``finding`` with every finding masked: no raw value ever leaves."""
    findings = scan(text) if findings is None else findings
    before = mask(text[: finding.start], [f for f in findings if f.end <= finding.start])
    after = mask(
        text[finding.end :],
        [Finding(f.type, f.start - finding.end, f.end - finding.end) for f in findings if f.start >= finding.end],
    )
    body = ("…" if len(before) > width else "") + before[-width:] + PLACEHOLDER[finding.type]
    body += after[:width] + ("…" if len(after) > width else "")
    return " ".join(body.split())
