"""The metric table of evaluate: every model scored on the same items, one model in memory at a time.

The base model is loaded first and kept, since it is also the offline judge; the candidate and the
production model are scored and freed in turn. Reference metrics go through Hugging Face
``evaluate`` (steps.evaluation.metrics); the judge through any OpenAI-compatible endpoint or the local base.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import sys
import time
from pathlib import Path
from typing import Any

from steps.evaluation import measure as E
from steps.evaluation.config import EvaluateConfig
from steps.evaluation.judge.client import resolve_backend
from steps.evaluation.measure import EvalSet
from steps.evaluation.probes import Outcome, Probe, load_probes, outcome, pass_rate


@dataclasses.dataclass(frozen=True)
class Scored:
    table: dict[str, dict[str, Any] | None]  # candidate, base, production (None when there is none)
    outputs: dict[str, dict[str, list[str]]]  # model -> {"test": [...], "heldout": [...]}
    per_example: dict[str, list[dict[str, float]]]  # model -> per test item scores
    judge_backend: str
    production_version: str | None
    seconds: dict[str, float]
    items: dict[str, dict[str, list[Any]]]  # model -> metric -> per-item values, in item order (the bootstrap's input)
    probes: dict[str, list[Outcome]]  # model -> one outcome per probe, in the suite's order
    # metric -> the settings that produced it (sacrebleu's signature, the ROUGE settings, bert-score's hash); decided
    # on the references and the encoder, so the same for every model
    signatures: dict[str, str] = dataclasses.field(default_factory=dict)


def _say(message: str) -> None:
    """Progress on stderr: evaluation takes minutes on CPU, and a silent step looks hung."""
    print(f"evaluate: {message}", file=sys.stderr, flush=True)


def _question(item: E.Item) -> str:
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in item.prompt)


def _reference_metrics(cfg: EvaluateConfig, evalset: EvalSet, outs: dict[str, list[str]]
                       ) -> tuple[dict[str, float], list[dict[str, float]], dict[str, list[float]], dict[str, str]]:  # fmt: skip
    """Corpus metrics, per test item scores, the per-item values of every metric (held-out ones included), signatures."""
    from steps.evaluation.metrics import text_metrics

    refs = [i.reference for i in evalset.test]
    scores = text_metrics(outs["test"], refs, encoder=cfg.encoder, source=cfg.metric_source, batch_size=64)
    row, signatures = dict(scores.corpus), dict(scores.signatures)
    items = {key: [p[key] for p in scores.per_example] for key in (scores.per_example[0] if scores.per_example else {})}
    held = [(o, i.reference) for o, i in zip(outs["heldout"], evalset.heldout) if i.reference is not None]
    if held:
        general = text_metrics([o for o, _ in held], [r for _, r in held], encoder=cfg.encoder, source=cfg.metric_source,
                               batch_size=64)
        for key in ("bertscore_f1", "rougeL"):
            row[f"heldout_{key}"] = general.corpus[key]
            items[f"heldout_{key}"] = [p[key] for p in general.per_example]
            signatures[f"heldout_{key}"] = general.signatures[key]
    return row, scores.per_example, items, signatures


def _probe_outcomes(cfg: EvaluateConfig, probes: list[Probe], answers: list[str]) -> list[Outcome]:
    """Each probe's answer (greedy, asked with the test prompts) checked; similar_to through the metric encoder."""
    if not probes:
        return []
    from steps.evaluation.metrics import load_metric
    from steps.models.encoders import encoder_path

    sims: dict[int, float] = {}
    similar = [k for k, p in enumerate(probes) if "similar_to" in p.expect]
    if similar:
        scores = load_metric("embedding_similarity").compute(
            predictions=[answers[k] for k in similar], references=[probes[k].expect["similar_to"]["reference"] for k in similar],
            model_path=encoder_path(cfg.encoder), batch_size=64)["scores"]  # fmt: skip
        sims = dict(zip(similar, map(float, scores)))
    return [outcome(p, a, sims.get(k)) for k, (p, a) in enumerate(zip(probes, answers))]


def _safety(cfg: EvaluateConfig, outs: dict[str, list[str]]) -> int:
    from steps.evaluation.safety import rules_from_settings, safety_hits

    rules = rules_from_settings(cfg.safety.defaults, cfg.safety.blocklist, cfg.safety.patterns)
    return sum(1 for hits in safety_hits(outs["test"] + outs["heldout"], rules) if hits)


def _judge_items(evalset: EvalSet, outs: dict[str, list[str]], n: int) -> list[dict[str, Any]]:
    return [{"id": i.id, "question": _question(i), "reference": i.reference, "answer": a}
            for i, a in list(zip(evalset.test, outs["test"]))[:n]]  # fmt: skip


def judge_models(cfg: EvaluateConfig, evalset: EvalSet, outputs: dict, table: dict, base: tuple[Any, Any]) -> str:
    """Calibrate the judge, then, only if it earned trust, judge the models; every row says which.

    Each model's row gets ``judge_trusted``, ``judge_calibration`` (the share of known-good/known-bad
    pairs it got right) and ``judge_calibration_pairs``; the judge's scores are added only when trusted.
    Returns the backend's description and the calibration's verdict.
    """
    from steps.evaluation.judge import verdicts as J
    from steps.evaluation.judge.calibration import build_pairs

    if cfg.judge.mode == "off":
        return "off"
    chat, description = resolve_backend(cfg.judge, lambda: base)
    modes = [m for m in ("pointwise", "pairwise") if cfg.judge.mode in (m, "both")]
    modes = [m for m in modes if m == "pointwise" or "production" in outputs]  # pairwise judges candidate vs production
    if not modes:
        return description
    refs = [{"id": i.id, "question": _question(i), "reference": i.reference} for i in evalset.test]
    pairs = build_pairs(refs, cfg.judge.calibration.pairs, cfg.seed)
    _say(f"judge calibration: {len(pairs)} known-good/known-bad answer pairs ({', '.join(modes)})")
    calibration = J.judge_calibration(chat, pairs, cfg.judge, modes, description)
    _say(f"judge {calibration.summary()} ({calibration.seconds:.0f} s)")
    for row in (r for r in table.values() if r is not None):
        row.update(calibration.metrics())
    verdict = f"{description}; {calibration.summary()}"
    if not calibration.trusted:
        return verdict
    if "pointwise" in modes:
        for name, outs in outputs.items():
            res = J.judge_pointwise(chat, _judge_items(evalset, outs, cfg.judge.max_examples), cfg.judge, description)
            table[name].update(res.metrics())
    if "pairwise" in modes:
        cand = _judge_items(evalset, outputs["candidate"], cfg.judge.max_examples)
        items = [dict(c, answer_a=c["answer"], answer_b=p) for c, p in zip(cand, outputs["production"]["test"])]
        table["candidate"].update(J.judge_pairwise(chat, items, cfg.judge, description).metrics())
    return verdict


def score_all(cfg: EvaluateConfig, evalset: EvalSet, model_dir: Path, production_dir: Path | None) -> Scored:
    """Score base, candidate and production (if any) on ``evalset``; run the judge; return the table."""
    from steps.models.loading import load_model, load_tokenizer
    from steps.models.template import check_template_parity

    seconds: dict[str, float] = {}
    tick = time.perf_counter()
    base = (load_model(cfg.base_model).eval(), load_tokenizer(cfg.base_model))
    table: dict[str, dict[str, Any] | None] = {}
    outputs: dict[str, dict[str, list[str]]] = {}
    per_example: dict[str, list[dict[str, float]]] = {}
    items: dict[str, dict[str, list[Any]]] = {}
    probe_outcomes: dict[str, list[Outcome]] = {}
    signatures: dict[str, str] = {}
    probes = load_probes(cfg.probes) if cfg.probes else []
    loaders = {"base": lambda: base, "candidate": lambda: E.load_trained(model_dir)}
    if production_dir is not None:
        loaders["production"] = lambda: E.load_trained(production_dir)
    _say(f"{len(evalset.test)} test items, {len(evalset.heldout)} held-out questions; models: {', '.join(loaders)}")
    for name, load in loaders.items():
        model, tok = load()
        _say(f"{name}: perplexity, then {len(evalset.test) + len(evalset.heldout) + len(probes)} answers of up to {cfg.max_new_tokens} tokens")
        if name != "base":  # the model is served with the template it was trained with: prove it first
            for item in evalset.test[:8]:
                check_template_parity(tok, item.conversation)
        row, outs, items[name] = E.score_generative(model, tok, evalset, cfg, [list(p.messages) for p in probes])
        probe_answers = outs.pop("probes")
        refs, per_example[name], ref_items, signatures = _reference_metrics(cfg, evalset, outs)
        items[name].update(ref_items)
        table[name] = {**row, **refs, "safety_hits": _safety(cfg, outs)}
        if probes:
            probe_outcomes[name] = _probe_outcomes(cfg, probes, probe_answers)
            table[name]["probe_pass_rate"] = pass_rate(probe_outcomes[name])
            items[name]["probe_pass_rate"] = [None if o.passed is None else float(o.passed) for o in probe_outcomes[name]]
        outputs[name] = outs
        seconds[name] = round(time.perf_counter() - tick, 1)
        _say(f"{name}: done in {seconds[name]:.0f} s (test perplexity {row['test_perplexity']}, rougeL {refs.get('rougeL', 0):.3f})")
        tick = time.perf_counter()
        if name != "base":
            del model
            gc.collect()
    if cfg.judge.mode != "off":
        _say(f"judge ({cfg.judge.mode}) on {min(cfg.judge.max_examples, len(evalset.test))} answers per model")
    judge = judge_models(cfg, evalset, outputs, table, base)
    seconds["judge"] = round(time.perf_counter() - tick, 1)
    table.setdefault("production", None)
    version = None
    if production_dir is not None:
        version = _production_version() or str(production_dir)
    ordered = {name: _finite(table[name]) for name in ("candidate", "base", "production")}
    return Scored(ordered, outputs, per_example, judge_backend=judge, production_version=version, seconds=seconds,
                  items=items, probes=probe_outcomes, signatures=signatures)


def _finite(row: dict[str, Any] | None) -> dict[str, Any] | None:
    """NaN (an undefined metric) becomes None: metrics.json stays valid JSON and the gate sees 'not measured'."""
    if row is None:
        return None
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}


def _production_version() -> str | None:
    try:
        from steps.registry.versions import production_version
    except ImportError:
        return None
    return production_version()
