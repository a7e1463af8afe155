"""The demo dataset under demo/data/: parses, has the expected size and shape, and is clean."""

from __future__ import annotations

import csv
import itertools
import json
import re

import pytest

from steps.core.schema import normalize
from tests.helpers import ROOT

DATA = ROOT / "demo" / "data"

EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
PHONE = re.compile(r"(?<!\w)(?:\+\d[\d\s().-]{7,}\d|\(?\d{3}\)?[\s.-]\d{3}[\s.-]\d{4})(?!\w)")
LONG_NUMBER = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
API_KEY = re.compile(r"\b(?:sk|pk|api|key)[-_][A-Za-z0-9_-]{12,}\b|\b[A-Za-z0-9]{32,}\b")


def _jsonl(name: str) -> list[dict]:
    with open(DATA / name, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@pytest.fixture(scope="module")
def identity() -> list[dict]:
    return json.loads((DATA / "identity.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def support() -> list[dict]:
    return _jsonl("support.jsonl")


@pytest.fixture(scope="module")
def prefs() -> list[dict]:
    return _jsonl("support_prefs.jsonl")


@pytest.fixture(scope="module")
def faq() -> list[dict]:
    with open(DATA / "faq.csv", encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["question", "answer", "category"]
        return list(reader)


def _all_text() -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(DATA.iterdir()) if p.is_file()}


def _first_user(rec: dict) -> str:
    return next(t["value"] for t in rec["conversations"] if t["from"] == "human")


def _grams(text: str, n: int = 3) -> set[tuple[str, ...]]:
    words = normalize(text).split()
    return {tuple(words[i : i + n]) for i in range(max(1, len(words) - n + 1))}


def _max_jaccard(texts: list[str]) -> tuple[float, int, int]:
    sets = [_grams(t) for t in texts]
    best = (0.0, -1, -1)
    for i, j in itertools.combinations(range(len(sets)), 2):
        inter = len(sets[i] & sets[j])
        if inter:
            score = inter / len(sets[i] | sets[j])
            best = max(best, (score, i, j))
    return best


def test_files_present_and_small():
    names = {p.name for p in DATA.iterdir() if p.is_file()}
    assert {"identity.json", "support.jsonl", "support_prefs.jsonl", "faq.csv"} <= names
    assert sum(p.stat().st_size for p in DATA.iterdir() if p.is_file()) < 400_000


def test_identity(identity):
    assert 50 <= len(identity) <= 75
    for rec in identity:
        assert set(rec) <= {"instruction", "input", "output", "system"}
        assert {"instruction", "input", "output"} <= set(rec)
        assert all(isinstance(v, str) for v in rec.values())
        assert rec["instruction"].strip() and rec["output"].strip()
    assert sum(bool(r["input"]) for r in identity) >= 5
    assert sum("system" in r for r in identity) >= 3
    assert sum("Tessa" in r["output"] for r in identity) >= 20
    assert sum("tunegate" in r["output"] for r in identity) >= 15
    assert len({normalize(r["instruction"] + "\n" + r["input"]) for r in identity}) == len(identity)


def test_support_shape_and_counts(support):
    assert 200 <= len(support) <= 240  # 180 chats + 34 drill questions (facts asked several ways)
    multi = 0
    for rec in support:
        conv = rec["conversations"]
        turns = conv[1:] if conv[0]["from"] == "system" else conv
        assert all(t["from"] != "system" for t in turns)
        assert len(turns) % 2 == 0 and turns
        for i, t in enumerate(turns):
            assert t["from"] == ("human" if i % 2 == 0 else "gpt")
            assert isinstance(t["value"], str) and t["value"].strip()
        multi += len(turns) > 2
    assert 25 <= multi <= 40
    assert sum(r["conversations"][0]["from"] == "system" for r in support) >= 10


def test_support_first_user_messages_unique(support):
    firsts = [normalize(_first_user(r)) for r in support]
    dupes = {f for f in firsts if firsts.count(f) > 1}
    assert not dupes


def test_no_near_duplicates(support, prefs, identity):
    """Word 3-gram Jaccard well below the 0.8 the dedup gate uses."""
    support_texts = ["\n".join(t["value"] for t in r["conversations"] if t["from"] != "system") for r in support]
    pref_texts = [r["prompt"] + "\n" + r["chosen"] for r in prefs]
    identity_texts = [r["instruction"] + "\n" + r["input"] + "\n" + r["output"] for r in identity]
    for texts in (support_texts, pref_texts, identity_texts):
        score, i, j = _max_jaccard(texts)
        assert score < 0.6, (score, texts[i], texts[j])


def test_prefs(prefs):
    assert 50 <= len(prefs) <= 75
    for rec in prefs:
        assert set(rec) == {"prompt", "chosen", "rejected"}
        assert all(isinstance(v, str) and v.strip() for v in rec.values())
        assert normalize(rec["chosen"]) != normalize(rec["rejected"])
    assert len({normalize(r["prompt"]) for r in prefs}) == len(prefs)


def test_faq(faq, support):
    assert 35 <= len(faq) <= 50
    for row in faq:
        assert row["question"].strip() and row["answer"].strip() and row["category"].strip()
    assert len({normalize(r["question"]) for r in faq}) == len(faq)
    support_firsts = {normalize(_first_user(r)) for r in support}
    assert not {normalize(r["question"]) for r in faq} & support_firsts


@pytest.mark.parametrize(
    "pattern", [EMAIL, PHONE, LONG_NUMBER, API_KEY], ids=["email", "phone", "long_number", "api_key"]
)
def test_no_pii(pattern):
    for name, text in _all_text().items():
        hits = pattern.findall(text)
        assert not hits, f"{name}: {hits[:5]}"


# Each sample and the pattern that must catch it (not just some pattern).
PII_SAMPLES = {"write to help@example.com": EMAIL, "call 555-123-4567": PHONE, "+1 415 555 0100": PHONE,
               "4111 1111 1111 1111": LONG_NUMBER, "4111111111111111": LONG_NUMBER}


@pytest.mark.parametrize("sample", list(PII_SAMPLES))
def test_pii_patterns_catch_samples(sample):
    pattern = PII_SAMPLES[sample]
    assert pattern.search(sample), f"{pattern.pattern} misses {sample!r}"
