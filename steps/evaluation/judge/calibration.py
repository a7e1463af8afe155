"""Whether a judge has earned trust: known-good vs known-bad answer pairs, the agreement rate, the rule.

Before its scores count, a judge is shown pairs built from the eval items: the reference answer
(known good) and a corrupted copy of it (known bad): another item's reference, the reference with
its numbers or names changed, or its words shuffled. The judge agrees on a pair when it prefers the
good answer; a pair it could not judge counts against it. It is trusted when it agrees on at least
``min_agreement`` of the pairs, and only then are the models judged. Asking stops as soon as the bar
is out of reach (``out_of_reach``): a judge that cannot work costs a few pairs, not all of them. Pure and seeded: the same items
and seed build the same pairs. The judge is asked in ``steps.evaluation.judge.verdicts.judge_calibration``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from steps.core.config import ConfigError

CORRUPTIONS = ("other_reference", "numbers", "names", "shuffle")
SUBSTITUTE_NAMES = ("Morgan", "Oslo", "Priya", "Zurich", "Kenji", "Lagos")  # when the references name too little
_NUMBER = re.compile(r"\d+")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")


@dataclass(frozen=True)
class CalibrationConfig:
    """The ``judge.calibration:`` subsection: how many pairs, and the agreement that earns trust."""

    pairs: int = 20  # known-good/known-bad pairs the judge must tell apart (at most one per test item)
    min_agreement: float = 0.8  # share of pairs where it must prefer the good answer

    def __post_init__(self) -> None:
        where = "evaluate.judge.calibration"
        if isinstance(self.pairs, bool) or not isinstance(self.pairs, int) or self.pairs < 1:
            raise ConfigError(f"{where}.pairs: give a whole number of pairs, 1 or more (e.g. 20); got {self.pairs!r}")
        if not 0.5 < self.min_agreement <= 1:
            raise ConfigError(
                f"{where}.min_agreement: give a share above 0.5 and at most 1 (0.8: the good answer preferred in 8 "
                f"pairs of 10); at 0.5 or below a judge that guesses passes; got {self.min_agreement!r}"
            )


@dataclass(frozen=True)
class CalibrationPair:
    """One test item's reference (good) and a corruption of it (bad), with the question they answer."""

    id: Any
    question: str
    reference: str
    good: str
    bad: str
    corruption: str  # one of CORRUPTIONS


@dataclass(frozen=True)
class Calibration:
    """What the judge did on the calibration pairs, and whether its scores count."""

    pairs: int  # pairs built
    # pointwise / pairwise -> agreement on the pairs asked; a mode after a failed one is not asked
    by_mode: dict[str, float | None]
    asked: dict[str, int]  # pointwise / pairwise -> pairs asked (fewer than built once the bar was out of reach)
    trusted: bool
    min_agreement: float
    seconds: float = 0.0

    @property
    def agreement(self) -> float | None:
        """The lowest agreement of the modes asked; None when nothing was measured."""
        rates = list(self.by_mode.values())
        return None if not rates or None in rates else min(r for r in rates if r is not None)

    def metrics(self) -> dict[str, Any]:
        """The fields every model's row carries: judge_trusted, judge_calibration, judge_calibration_pairs (asked)."""
        asked = min(self.asked.values(), default=0)
        return {"judge_trusted": self.trusted, "judge_calibration": self.agreement, "judge_calibration_pairs": asked}

    def summary(self) -> str:
        """One sentence: trusted or not, the rate per mode on how many pairs, against the bar."""
        if not self.pairs:
            return "untrusted: no calibration pairs could be built (the test items need reference answers)"
        rates = ", ".join(f"{m} {'-' if a is None else f'{a:.2f}'} on {self.asked[m]}" for m, a in self.by_mode.items())
        verdict = "trusted" if self.trusted else "untrusted, models not judged"
        stopped = "; stopped once out of reach" if any(n < self.pairs for n in self.asked.values()) else ""
        return (f"{verdict}: prefers the good answer at {rates} of {self.pairs} calibration pairs "
                f"(needs {self.min_agreement:.2f}{stopped})")  # fmt: skip


def _normal(text: str) -> str:
    return " ".join(text.lower().split())


def _names(text: str) -> list[str]:
    """Capitalised words that do not start a sentence (and are not "I"): the names and places of a text."""
    found = []
    for match in _WORD.finditer(text):
        before = text[: match.start()].rstrip()
        word = match.group()
        if word[0].isupper() and word != "I" and before and before[-1] not in ".!?:\n\"'(":
            found.append(word)
    return found


def corrupt(reference: str, kind: str, others: Sequence[str], rng: random.Random) -> str | None:
    """A wrong answer made from ``reference`` by one corruption, or None when it does not apply.

    Args:
        reference: the known-good answer.
        kind: ``other_reference`` (one of ``others``), ``numbers`` (each number changed),
            ``names`` (each name swapped for another), ``shuffle`` (its words in another order).
        others: the other items' references.
        rng: the seeded source of every choice.

    Returns:
        A text that differs from ``reference`` (ignoring case and spacing), or None.
    """
    if kind == "other_reference":
        choices = sorted({o for o in others if o.strip() and _normal(o) != _normal(reference)})
        bad = rng.choice(choices) if choices else None
    elif kind == "numbers":
        bad = _NUMBER.sub(lambda m: str(int(m.group()) + rng.randint(1, 9)), reference)
    elif kind == "names":
        names = sorted(set(_names(reference)))
        pool = sorted({n for o in others for n in _names(o)} - set(names)) or sorted(set(SUBSTITUTE_NAMES) - set(names))
        swap = {n: rng.choice(pool) for n in names}
        bad = re.sub(r"\b(" + "|".join(map(re.escape, names)) + r")\b", lambda m: swap[m.group()], reference) if names else None
    elif kind == "shuffle":
        words = reference.split()
        bad = None
        for _ in range(5 if len(words) >= 4 else 0):
            rng.shuffle(words)
            if _normal(" ".join(words)) != _normal(reference):
                bad = " ".join(words)
                break
    else:
        raise ValueError(f"unknown corruption {kind!r}; use one of {', '.join(CORRUPTIONS)}")
    return bad if bad is not None and _normal(bad) != _normal(reference) else None


def build_pairs(items: Sequence[Mapping[str, Any]], n: int, seed: int) -> list[CalibrationPair]:
    """Up to ``n`` known-good/known-bad pairs from items with an id, a question and a reference.

    Items are drawn with ``random.Random(seed)`` and kept in their order; each gets one corruption,
    chosen at random among those that apply to its reference. Items without a reference, or whose
    reference no corruption changes, are skipped.
    """
    rng = random.Random(seed)
    usable = [it for it in items if isinstance(it.get("reference"), str) and it["reference"].strip()]
    refs = [it["reference"] for it in usable]
    candidates = []
    for k, item in enumerate(usable):
        others = refs[:k] + refs[k + 1 :]
        kinds = list(CORRUPTIONS)
        rng.shuffle(kinds)
        for kind in kinds:
            bad = corrupt(item["reference"], kind, others, rng)
            if bad is not None:
                candidates.append(CalibrationPair(item["id"], item["question"], item["reference"], item["reference"], bad, kind))
                break
    chosen = sorted(rng.sample(range(len(candidates)), min(n, len(candidates))))
    return [candidates[k] for k in chosen]


def agreement(preferred: Sequence[bool | None]) -> float | None:
    """The share of pairs where the judge preferred the good answer; an unjudged pair (None) counts against it."""
    return sum(p is True for p in preferred) / len(preferred) if preferred else None


def out_of_reach(preferred: Sequence[bool | None], total: int, min_agreement: float) -> bool:
    """True when, even if every one of the ``total`` pairs not yet asked went right, the agreement stays below the bar."""
    right = sum(p is True for p in preferred)
    return right + (total - len(preferred)) < min_agreement * total


def is_trusted(rates: Sequence[float | None], min_agreement: float) -> bool:
    """Trusted when every rate asked was measured and reaches ``min_agreement``; never without a measurement."""
    return bool(rates) and all(r is not None and r >= min_agreement for r in rates)
