"""LLM-as-judge for the evaluation gate: pointwise scores and swap-checked pairwise verdicts.

This module judges and aggregates: ``judge_pointwise`` scores answers on four criteria and
averages them; ``judge_pairwise`` compares candidate with production in both orders and keeps
only verdicts that survive the swap; ``judge_calibration`` asks the judge about known-good and
known-bad answer pairs first, so that its scores count only when it tells them apart. The parts it
builds on live beside it in steps/evaluation/judge/, and callers import each name from the module
that defines it:

- ``steps.evaluation.judge.client``: ``JudgeConfig`` and the backends (``openai_chat``, ``local_chat``,
  ``resolve_backend``). A judge as small as the local base model is weak: its calibration
  decides whether its scores count.
- ``steps.evaluation.judge.parse``: the prompts, the reply schemas and the strict JSON parsers.
- ``steps.evaluation.judge.calibration``: the calibration pairs, the agreement rate and the trust rule.
- ``steps.evaluation.judge.ask``: re-asking until replies parse. The judge must never crash a run: what
  still fails is counted in ``failures`` with its last error, and the run goes on.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from steps.evaluation.judge.ask import Outcome, ask_until_valid
from steps.evaluation.judge.calibration import Calibration, CalibrationPair, agreement, is_trusted, out_of_reach
from steps.evaluation.judge.client import Chat, JudgeConfig
from steps.evaluation.judge.parse import CRITERIA, JUDGEMENT, VERDICT, pairwise_prompt, pointwise_prompt

log = logging.getLogger(__name__)  # the logger steps.evaluation.judge.ask writes to, under this same name


def _checked(items: Sequence[Mapping[str, Any]], answers: Sequence[str], max_examples: int) -> list[Mapping[str, Any]]:
    """The first ``max_examples`` items, each checked to carry an id, a question and the answers as text."""
    for n, item in enumerate(items[:max_examples]):
        for key in ("question", *answers):
            if not isinstance(item.get(key), str):
                raise ValueError(
                    f"judge item {n} (id {item.get('id')!r}): field '{key}' must be a string, got {item.get(key)!r}; "
                    "build judge items from the evaluate step's generations"
                )
        if "id" not in item:
            raise ValueError(f"judge item {n}: has no 'id'; got keys {sorted(item)}")
        if not isinstance(item.get("reference") or "", str):
            raise ValueError(f"judge item {n} (id {item['id']!r}): 'reference' must be a string or absent")
    return list(items[:max_examples])


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


# ---------------------------------------------------------------- pointwise


@dataclass(frozen=True)
class ItemScore:
    """One answer's judgement: scores and reason, or None and the last error."""

    id: Any
    scores: dict[str, int] | None
    reason: str | None
    error: str | None
    attempts: int


@dataclass(frozen=True)
class JudgeResult:
    """Pointwise results in item order; means over the items that were scored."""

    items: tuple[ItemScore, ...]
    means: dict[str, float | None]
    overall: float | None  # mean of the four criterion means
    failures: int
    attempts: int
    backend: str

    def metrics(self) -> dict[str, float | int | None]:
        """The flat metric names of the eval contract: judge_overall, judge_<criterion>, judge_failures."""
        means = {f"judge_{c}": self.means[c] for c in CRITERIA}
        return {"judge_overall": self.overall, **means, "judge_failures": self.failures}


def judge_pointwise(
    chat: Chat, items: Sequence[Mapping[str, Any]], cfg: JudgeConfig, backend: str = ""
) -> JudgeResult:
    """Score each item's answer 1-5 on the four criteria; malformed or failed replies are retried, then counted.

    Args:
        chat: the backend.
        items: dicts with id, question, answer and optionally reference; the first ``cfg.max_examples`` are judged.
        cfg: the judge params (``max_retries``, ``max_examples``).
        backend: the backend's description, recorded in the result.
    """
    items = _checked(items, ("answer",), cfg.max_examples)
    outcomes = ask_until_valid(chat, [pointwise_prompt(it) for it in items], JUDGEMENT, cfg.max_retries)
    scored = [
        ItemScore(
            it["id"],
            {c: o.parsed[c] for c in CRITERIA} if o.parsed else None,
            o.parsed["reason"] if o.parsed else None,
            o.error,
            o.attempts,
        )
        for it, o in zip(items, outcomes)
    ]
    means = {c: _mean([s.scores[c] for s in scored if s.scores]) for c in CRITERIA}
    overall = None if any(m is None for m in means.values()) else _mean([m for m in means.values() if m is not None])
    failures = sum(s.scores is None for s in scored)
    return JudgeResult(tuple(scored), means, overall, failures, sum(o.attempts for o in outcomes), backend)


# ---------------------------------------------------------------- pairwise


@dataclass(frozen=True)
class PairVerdict:
    """One comparison: the raw winners in both orders and the swap-checked outcome."""

    id: Any
    in_order: str | None  # winner with the candidate shown as A
    swapped: str | None  # winner with the production answer shown as A
    outcome: str | None  # candidate | production | tie; None when a pass failed
    reasons: tuple[str, ...]
    error: str | None
    attempts: int


@dataclass(frozen=True)
class PairwiseResult:
    """Pairwise results in item order; the win rate counts ties as half a win."""

    items: tuple[PairVerdict, ...]
    wins: int
    losses: int
    ties: int
    failures: int
    n_valid: int
    win_rate: float | None  # (wins + 0.5 * ties) / n_valid; None when nothing was judged
    attempts: int
    backend: str

    def metrics(self) -> dict[str, float | None]:
        """The flat metric name of the eval contract: pairwise_win_rate."""
        return {"pairwise_win_rate": self.win_rate}


def swap_outcome(in_order: str, swapped: str) -> str:
    """Candidate, production or tie from the two passes: a verdict counts only if it survives the swap."""
    first = {"A": "candidate", "B": "production"}.get(in_order, "tie")
    second = {"A": "production", "B": "candidate"}.get(swapped, "tie")
    return first if first == second else "tie"


def _verdict(item_id: Any, first: Outcome, second: Outcome) -> PairVerdict:
    """Both passes of one item as a verdict; no outcome unless both passes were parsed."""
    in_order = first.parsed["winner"] if first.parsed else None
    swapped = second.parsed["winner"] if second.parsed else None
    return PairVerdict(
        id=item_id,
        in_order=in_order,
        swapped=swapped,
        outcome=swap_outcome(in_order, swapped) if in_order and swapped else None,
        reasons=tuple(o.parsed["reason"] for o in (first, second) if o.parsed),
        error=first.error or second.error,
        attempts=first.attempts + second.attempts,
    )


def judge_pairwise(
    chat: Chat, items: Sequence[Mapping[str, Any]], cfg: JudgeConfig, backend: str = ""
) -> PairwiseResult:
    """Compare candidate (answer_a) with production (answer_b), in both orders to cancel position bias.

    Args:
        chat: the backend.
        items: dicts with id, question, answer_a (candidate), answer_b (production), optionally reference.
        cfg: the judge params (``max_retries``, ``max_examples``).
        backend: the backend's description, recorded in the result.
    """
    items = _checked(items, ("answer_a", "answer_b"), cfg.max_examples)
    conversations = [pairwise_prompt(it, it["answer_a"], it["answer_b"]) for it in items]
    conversations += [pairwise_prompt(it, it["answer_b"], it["answer_a"]) for it in items]
    outcomes = ask_until_valid(chat, conversations, VERDICT, cfg.max_retries)
    n = len(items)
    verdicts = [_verdict(it["id"], first, second) for it, first, second in zip(items, outcomes[:n], outcomes[n:])]
    count = {k: sum(v.outcome == k for v in verdicts) for k in ("candidate", "production", "tie")}
    n_valid = sum(count.values())
    win_rate = (count["candidate"] + 0.5 * count["tie"]) / n_valid if n_valid else None
    return PairwiseResult(
        items=tuple(verdicts),
        wins=count["candidate"],
        losses=count["production"],
        ties=count["tie"],
        failures=len(verdicts) - n_valid,
        n_valid=n_valid,
        win_rate=win_rate,
        attempts=sum(o.attempts for o in outcomes),
        backend=backend,
    )


# ---------------------------------------------------------------- calibration


def _prefers_good_pointwise(chat: Chat, pairs: Sequence[CalibrationPair], cfg: JudgeConfig, backend: str) -> list[bool | None]:
    """Per pair: the good answer's mean score above the bad one's (a tie is no preference); None if unscored."""
    items = [{"id": f"{p.id}:{side}", "question": p.question, "reference": p.reference, "answer": getattr(p, side)}
             for side in ("good", "bad") for p in pairs]  # fmt: skip
    scored = judge_pointwise(chat, items, cfg, backend).items
    mean = [sum(s.scores.values()) / len(s.scores) if s.scores else None for s in scored]
    n = len(pairs)
    return [None if g is None or b is None else g > b for g, b in zip(mean[:n], mean[n:])]


def _prefers_good_pairwise(chat: Chat, pairs: Sequence[CalibrationPair], cfg: JudgeConfig, backend: str) -> list[bool | None]:
    """Per pair: the good answer wins in both orders (the swap check); None if a pass went unjudged."""
    items = [{"id": p.id, "question": p.question, "reference": p.reference, "answer_a": p.good, "answer_b": p.bad}
             for p in pairs]  # fmt: skip
    verdicts = judge_pairwise(chat, items, cfg, backend).items
    return [None if v.outcome is None else v.outcome == "candidate" for v in verdicts]


def judge_calibration(
    chat: Chat,
    pairs: Sequence[CalibrationPair],
    cfg: JudgeConfig,
    modes: Sequence[str],
    backend: str = "",
    *,
    stop_early: bool = True,
) -> Calibration:
    """Ask the judge about known-good/known-bad pairs in each mode it will be used in; trusted if it tells them apart.

    Pairs are asked ``cfg.batch_size // 2`` at a time (two replies each: one backend batch); a mode
    stops once ``min_agreement`` is out of reach, and the modes after a failed one are not asked.

    Args:
        chat: the backend.
        pairs: from ``steps.evaluation.judge.calibration.build_pairs``; ``max_examples`` does not cap them.
        cfg: the judge params (``max_retries``, ``batch_size``; ``calibration.min_agreement`` is the bar).
        modes: ``pointwise`` and/or ``pairwise``: the judgements whose scores are to count.
        backend: the backend's description.
        stop_early: False asks every pair in every mode (to measure a judge, as bench/bench_judge.py does).

    Returns:
        The agreement and pairs asked per mode, and ``trusted``: every mode reaches the bar.
    """
    tick = time.perf_counter()
    ask = {"pointwise": _prefers_good_pointwise, "pairwise": _prefers_good_pairwise}
    bar = cfg.calibration.min_agreement
    step = max(1, cfg.batch_size // 2)
    every = dataclasses.replace(cfg, max_examples=2 * step)
    by_mode: dict[str, float | None] = {}
    asked: dict[str, int] = {}
    for mode in modes if pairs else ():
        preferred: list[bool | None] = []
        for start in range(0, len(pairs), step):
            preferred += ask[mode](chat, pairs[start : start + step], every, backend)
            if stop_early and out_of_reach(preferred, len(pairs), bar):
                break
        by_mode[mode], asked[mode] = agreement(preferred), len(preferred)
        if stop_early and not is_trusted([by_mode[mode]], bar):
            break
    trusted = set(by_mode) == set(modes) and is_trusted(list(by_mode.values()), bar)
    return Calibration(len(pairs), by_mode, asked, trusted, bar, seconds=round(time.perf_counter() - tick, 1))
