"""Augmented candidates from EDA and back-translation, each tagged with its origin record and method.

A candidate is a copy of a train record whose units (steps/augmentation/text.py ``units``) were rewritten;
labels, chosen/rejected and assistant turns are copied as they are. Its id is a digest of the
origin id, the method and the variant number, so reruns give the same ids; ``meta`` keeps the
origin's fields and adds ``origin``, ``augment`` (method) and ``augment_op`` (what was done).
Randomness comes from ``random.Random(f"{seed}:{record id}:{method}:{variant}")``: a record's
candidates do not depend on which other records are in the split or in what order.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from steps.augmentation import eda
from steps.augmentation.text import TOKEN_RE, Path, ProtectError, has_words, language, protect, replaced, restore, units
from steps.augmentation.translate import Translator, back_translate
from steps.core.schema import content_hash

Unit = tuple[Path, str, list[str], str]  # (path, masked text, protected spans, language)


@dataclass
class Candidate:
    """One augmented record before the guard rails judge it."""

    record: dict[str, Any]
    origin: dict[str, Any] | None  # None for generated (Self-Instruct) records
    method: str  # eda | backtranslate | self_instruct
    op: str  # eda: the operation; backtranslate: engine and pivot
    changed: list[Path] = field(default_factory=list)  # paths of the rewritten units
    problem: str = ""  # a format problem found while building it (a protected span lost)
    duplicate: str = ""  # known to repeat something already (Self-Instruct: not novel by ROUGE-L)


def masked_units(rec: dict[str, Any], fields: Sequence[str], pattern: Any, languages: Sequence[str]) -> list[Unit]:
    """The record's rewritable units, masked, in a language of ``languages`` and with prose left to change."""
    out = []
    for path, text in units(rec, fields):
        try:
            masked, spans = protect(text, pattern)
        except ProtectError:
            continue
        lang = language(masked)
        if lang in languages and has_words(masked):
            out.append((path, masked, spans, lang))
    return out


def derive(origin: dict[str, Any], new: dict[Path, str], method: str, variant: int, op: str) -> dict[str, Any]:
    """``origin`` with ``new`` units, a fresh id, and meta naming its origin and method."""
    rec = replaced(origin, new)
    rec["id"] = hashlib.sha256(f"{origin['id']}\0{method}\0{variant}".encode()).hexdigest()[:16]
    rec["meta"] = {**origin.get("meta", {}), "origin": origin["id"], "augment": method, "augment_op": op}
    rec["meta"]["hash"] = content_hash(rec)
    return rec


def _build(origin: dict[str, Any], us: list[Unit], outs: list[str | None], method: str, variant: int,
           op: str) -> Candidate:
    """A candidate from the rewritten masked texts (None: unit left as it is), spans restored."""
    new, problem = {}, ""
    for (path, masked, spans, _), out in zip(us, outs):
        if out is None or out == masked:
            continue
        text = restore(out, spans)
        if text is None:
            problem = "a protected span (code, number or marked entity) was lost or repeated by the rewrite"
            text = TOKEN_RE.sub(lambda m: spans[int(m.group(1))] if int(m.group(1)) < len(spans) else m.group(0), out)
        new[path] = text
    return Candidate(derive(origin, new, method, variant, op), origin, method, op, list(new), problem)


def eda_candidates(records: Sequence[dict[str, Any]], units_of: list[list[Unit]], rates: eda.Rates, num_aug: int,
                   lexicons: dict[str, eda.Lexicon], seed: int) -> list[Candidate]:
    """``num_aug`` EDA variants per record with units; variant k applies the k-th enabled operation in turn."""
    for lang, lex in lexicons.items():  # one pass over the synonym files for every word of the split
        lex.prepare(sorted({w for us in units_of for _, m, _, lg in us if lg == lang for w in eda.candidate_words(m, lg)}))
    ops = rates.enabled()
    out = []
    for rec, us in zip(records, units_of):
        if not us or not ops:
            continue
        start = random.Random(f"{seed}:{rec['id']}:eda").randrange(len(ops))
        for k in range(num_aug):
            rng = random.Random(f"{seed}:{rec['id']}:eda:{k}")
            for step in range(len(ops)):  # an operation with nothing to do (no synonyms) hands over to the next
                op = ops[(start + k + step) % len(ops)]
                outs = [eda.augment(m, lang, op, getattr(rates, op), lexicons[lang], rng) for _, m, _, lang in us]
                if any(o != m for o, (_, m, _, _) in zip(outs, us)):
                    break
            out.append(_build(rec, us, outs, "eda", k, op))
    return out


def backtranslate_candidates(records: Sequence[dict[str, Any]], units_of: list[list[Unit]], translator: Translator,
                             pivots: dict[str, str]) -> tuple[list[Candidate], Counter[str]]:
    """One round-trip candidate per record; counts records skipped because no direction serves their language."""
    flat = [(m, lang) for us in units_of for _, m, _, lang in us]
    outs = back_translate(translator, flat, pivots) if flat else []
    cands, skipped, pos = [], Counter(), 0
    for rec, us in zip(records, units_of):
        mine, pos = outs[pos : pos + len(us)], pos + len(us)
        if not us:
            continue
        if all(o is None for o in mine):
            langs = "/".join(sorted({lang for *_, lang in us}))
            skipped[f"backtranslate: {translator.name} has no round trip for {langs} (set augment.backtranslate.pivots)"] += 1
            continue
        ops = sorted({f"{translator.name}:{lang}>{pivots[lang]}>{lang}" for (*_, lang), o in zip(us, mine) if o is not None})
        cands.append(_build(rec, us, mine, "backtranslate", 0, ",".join(ops)))
    return cands, skipped


def lexicons_for(languages: set[str], wordnet_dir: str | None, senses: int, cilin_max_group: int) -> dict[str, Any]:
    """The synonym source of each language present: WordNet for en, Cilin for zh."""
    from steps.augmentation import lexicon as lex

    out: dict[str, Any] = {}
    if "en" in languages:
        out["en"] = lex.wordnet(wordnet_dir, senses)
    if "zh" in languages:
        out["zh"] = lex.Cilin(cilin_max_group)
    return out
