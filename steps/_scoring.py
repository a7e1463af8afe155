"""The metric table of evaluate: every model scored on the same items, one model in memory at a time.

The base model is loaded first and kept, since it is also the offline judge; the candidate and the
production model are scored and freed in turn. Reference metrics go through Hugging Face
``evaluate`` (steps._metrics); the judge through any OpenAI-compatible endpoint or the local base.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import sys
import time
from pathlib import Path
from typing import Any

from steps import _evaluation as E
from steps._evaluation import EvalSet


@dataclasses.dataclass(frozen=True)
class Scored:
    table: dict[str, dict[str, Any] | None]  # candidate, base, production (None when there is none)
    outputs: dict[str, dict[str, list[str]]]  # model -> {"test": [...], "heldout": [...]}
    per_example: dict[str, list[dict[str, float]]]  # model -> per test item scores
    judge_backend: str
    production_version: str | None
    seconds: dict[str, float]


def _say(message: str) -> None:
    """Progress on stderr: evaluation takes minutes on CPU, and a silent step looks hung."""
    print(f"evaluate: {message}", file=sys.stderr, flush=True)


def _question(item: E.Item) -> str:
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in item.prompt)


def _reference_metrics(cfg: Any, evalset: EvalSet, outs: dict[str, list[str]]) -> tuple[dict[str, float], list[dict[str, float]]]:
    from steps._metrics import text_metrics

    refs = [i.reference for i in evalset.test]
    scores = text_metrics(outs["test"], refs, encoder=cfg.encoder, source=cfg.metric_source, batch_size=64)
    row = dict(scores.corpus)
    held = [(o, i.reference) for o, i in zip(outs["heldout"], evalset.heldout) if i.reference is not None]
    if held:
        general = text_metrics([o for o, _ in held], [r for _, r in held], encoder=cfg.encoder, source=cfg.metric_source,
                               batch_size=64)
        row["heldout_bertscore_f1"] = general.corpus["bertscore_f1"]
        row["heldout_rougeL"] = general.corpus["rougeL"]
    return row, scores.per_example


def _safety(cfg: Any, outs: dict[str, list[str]]) -> int:
    from steps._safety import rules_from_settings, safety_hits

    rules = rules_from_settings(cfg.safety.defaults, cfg.safety.blocklist, cfg.safety.patterns)
    return sum(1 for hits in safety_hits(outs["test"] + outs["heldout"], rules) if hits)


def _judge_items(evalset: EvalSet, outs: dict[str, list[str]], n: int) -> list[dict[str, Any]]:
    return [{"id": i.id, "question": _question(i), "reference": i.reference, "answer": a}
            for i, a in list(zip(evalset.test, outs["test"]))[:n]]  # fmt: skip


def _judge(cfg: Any, evalset: EvalSet, outputs: dict, table: dict, base: tuple[Any, Any]) -> str:
    from steps import _judge as J

    if cfg.judge.mode == "off":
        return "off"
    chat, description = J.resolve_backend(cfg.judge, lambda: base)
    if cfg.judge.mode in ("pointwise", "both"):
        for name, outs in outputs.items():
            res = J.judge_pointwise(chat, _judge_items(evalset, outs, cfg.judge.max_examples), cfg.judge, description)
            table[name].update(res.metrics())
    if cfg.judge.mode in ("pairwise", "both") and "production" in outputs:
        cand = _judge_items(evalset, outputs["candidate"], cfg.judge.max_examples)
        items = [dict(c, answer_a=c["answer"], answer_b=p) for c, p in zip(cand, outputs["production"]["test"])]
        table["candidate"].update(J.judge_pairwise(chat, items, cfg.judge, description).metrics())
    return description


def score_all(cfg: Any, evalset: EvalSet, model_dir: Path, production_dir: Path | None) -> Scored:
    """Score base, candidate and production (if any) on ``evalset``; run the judge; return the table."""
    from steps._model import load_model, load_tokenizer
    from steps._template import check_template_parity

    seconds: dict[str, float] = {}
    tick = time.perf_counter()
    base = (load_model(cfg.base_model).eval(), load_tokenizer(cfg.base_model))
    table: dict[str, dict[str, Any] | None] = {}
    outputs: dict[str, dict[str, list[str]]] = {}
    per_example: dict[str, list[dict[str, float]]] = {}
    loaders = {"base": lambda: base, "candidate": lambda: E.load_trained(model_dir)}
    if production_dir is not None:
        loaders["production"] = lambda: E.load_trained(production_dir)
    _say(f"{len(evalset.test)} test items, {len(evalset.heldout)} held-out questions; models: {', '.join(loaders)}")
    for name, load in loaders.items():
        model, tok = load()
        _say(f"{name}: perplexity, then {len(evalset.test) + len(evalset.heldout)} answers of up to {cfg.max_new_tokens} tokens")
        if name != "base":  # the model is served with the template it was trained with: prove it first
            for item in evalset.test[:8]:
                check_template_parity(tok, item.conversation)
        row, outs = E.score_generative(model, tok, evalset, cfg)
        refs, per_example[name] = _reference_metrics(cfg, evalset, outs)
        table[name] = {**row, **refs, "safety_hits": _safety(cfg, outs)}
        outputs[name] = outs
        seconds[name] = round(time.perf_counter() - tick, 1)
        _say(f"{name}: done in {seconds[name]:.0f} s (test perplexity {row['test_perplexity']}, rougeL {refs.get('rougeL', 0):.3f})")
        tick = time.perf_counter()
        if name != "base":
            del model
            gc.collect()
    if cfg.judge.mode != "off":
        _say(f"judge ({cfg.judge.mode}) on {min(cfg.judge.max_examples, len(evalset.test))} answers per model")
    judge = _judge(cfg, evalset, outputs, table, base)
    seconds["judge"] = round(time.perf_counter() - tick, 1)
    table.setdefault("production", None)
    version = None
    if production_dir is not None:
        version = _production_version() or str(production_dir)
    ordered = {name: _finite(table[name]) for name in ("candidate", "base", "production")}
    return Scored(ordered, outputs, per_example, judge, version, seconds)


def _finite(row: dict[str, Any] | None) -> dict[str, Any] | None:
    """NaN (an undefined metric) becomes None: metrics.json stays valid JSON and the gate sees 'not measured'."""
    if row is None:
        return None
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}


def _production_version() -> str | None:
    try:
        from steps._registry import production_version
    except ImportError:
        return None
    return production_version()
