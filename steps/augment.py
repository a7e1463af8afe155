"""augment: more train data by back-translation, EDA and (optionally) Self-Instruct, behind guard rails.

Reads DATA_DIR/{train,validation,test}.jsonl (and heldout.jsonl) as validate wrote them and
augments the train split only: by default the user side (user turns, the text of cls/text
records) of English and Chinese records, never labels, chosen/rejected or assistant answers,
and never code, numbers or marked entities (steps/augmentation/text.py). Candidates then pass the
guard rails of steps/augmentation/filters.py (format, duplicate, similarity to the origin, near-copy,
leak into validation/test/held-out, cap on the augmented fraction). Writes OUT_DIR atomically:
train.jsonl (originals, then accepted records tagged meta.origin/augment), the other splits
unchanged, rejected.jsonl (each dropped candidate with reason and detail), report.json and
manifest.json. ``enabled: false`` copies the splits through unchanged.

    python -m steps.augment data/validated data/augmented [--params params.yaml]
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from steps.augmentation import filters as gates
from steps.augmentation.config import AugmentConfig
from steps.augmentation.methods import backtranslate_candidates, eda_candidates, lexicons_for, masked_units
from steps.augmentation.text import span_pattern
from steps.augmentation.translate import TranslateError
from steps.core.config import ConfigError
from steps.core.io import atomic_write_bytes, atomic_write_json, atomic_write_jsonl, publish_dir, staging_dir
from steps.core.manifest import write_manifest
from steps.core.schema import is_replay
from steps.core.step import Step
from steps.data.splits import load_splits


@dataclass(frozen=True)
class AugmentResult:
    out_dir: Path
    report: dict[str, Any]
    report_path: Path


def run(cfg: AugmentConfig, data_dir: Path, out_dir: Path) -> AugmentResult:
    """Augment DATA_DIR's train split; write every split, rejected.jsonl, report and manifest to OUT_DIR."""
    started, data_dir, out_dir = time.time(), Path(data_dir), Path(out_dir)
    splits = load_splits(data_dir, f"python -m steps.validate data/prepared {data_dir}")
    train = splits["train"]
    evals = [r for name, recs in splits.items() if name != "train" for r in recs]
    cands, skipped, seconds = generate(cfg, train) if cfg.enabled else ([], Counter(), {})
    tick = time.perf_counter()
    accepted, rejected = gates.judge(cands, rules(cfg, train, evals))
    seconds["guard"] = time.perf_counter() - tick

    tmp = staging_dir(out_dir)
    for name in splits:  # unchanged splits are the input files as they are
        if name != "train" or not cfg.enabled:
            atomic_write_bytes(tmp / f"{name}.jsonl", (data_dir / f"{name}.jsonl").read_bytes())
    if cfg.enabled:
        atomic_write_jsonl(tmp / "train.jsonl", train + [c.record for c in accepted])
    atomic_write_jsonl(tmp / "rejected.jsonl", [{"reason": reason, "detail": detail, "method": c.method, "op": c.op,
                                                 "origin": (c.origin or {}).get("id"), "record": c.record}
                                                for c, reason, detail in rejected])
    report = summary(cfg, train, cands, accepted, rejected, skipped, seconds)
    atomic_write_json(tmp / "report.json", report)
    inputs = {name: data_dir / f"{name}.jsonl" for name in splits}
    outputs = {p.stem: p for p in sorted(tmp.glob("*.jsonl"))} | {"report": tmp / "report.json"}
    metrics = {k: report[k] for k in ("originals", "augmented", "augmented_fraction", "rejected", "skipped")}
    write_manifest(tmp, "augment", cfg, inputs, outputs, metrics, started)
    publish_dir(tmp, out_dir)
    return AugmentResult(out_dir, report, out_dir / "report.json")


def generate(cfg: AugmentConfig, train: list[dict[str, Any]]) -> tuple[list[Any], Counter[str], dict[str, float]]:
    """Every method's candidates in order (methods, then Self-Instruct), skip counts and seconds per method."""
    pattern = span_pattern(cfg.protect_terms, cfg.protect_patterns, cfg.protect_numbers)
    replay = [is_replay(r) for r in train]  # general data mixed in against forgetting: kept as it is
    units_of = [[] if rp else masked_units(r, cfg.fields, pattern, cfg.languages) for r, rp in zip(train, replay)]
    skipped = Counter({"no rewritable unit in augment.languages": sum(not us and not rp for us, rp in zip(units_of, replay)),
                       "replay data (ingest.datasets replay: true), kept as it is": sum(replay)})
    translator = cfg.backtranslate.translator() if "backtranslate" in cfg.methods else None
    if translator is not None and translator.name == "apertium" and not translator.pairs:
        raise ConfigError(f"augment.backtranslate.engine: apertium: no `{cfg.backtranslate.apertium}` with language "
                          "pairs on PATH; `apt-get install -y apertium apertium-eng-spa`, or choose engine hf/openai, "
                          "or drop backtranslate from augment.methods")
    cands, seconds = [], {}
    for method in cfg.methods:
        tick = time.perf_counter()
        if method == "eda":
            langs = {lang for us in units_of for *_, lang in us}
            lexicons = lexicons_for(langs, cfg.eda.wordnet_dir, cfg.eda.wordnet_senses, cfg.eda.cilin_max_group)
            cands += eda_candidates(train, units_of, cfg.eda, cfg.eda.num_aug, lexicons, cfg.seed)
        else:
            made, why = backtranslate_candidates(train, units_of, translator, dict(cfg.backtranslate.pivots))
            cands, skipped = cands + made, skipped + why
        seconds[method] = time.perf_counter() - tick
    if cfg.self_instruct.enabled:
        from steps.augmentation.selfinstruct import generate as self_instruct

        tick = time.perf_counter()
        cands += self_instruct(cfg.self_instruct, train, cfg.seed)
        seconds["self_instruct"] = time.perf_counter() - tick
    return cands, +skipped, seconds


def rules(cfg: AugmentConfig, train: list[dict[str, Any]], evals: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """The guard rails in order, each bound to this config: (reason, rule over candidates)."""
    return [("format", gates.format_rule),
            ("duplicate", partial(gates.exact_rule, train=train)),
            ("similarity", partial(gates.similarity_rule, minimum=cfg.min_similarity,
                                   encoder=partial(gates.load_encoder, cfg.encoder))),
            ("duplicate", partial(gates.near_dup_rule, train=train, fields=cfg.fields, threshold=cfg.near_dup_threshold)),
            ("leak", partial(gates.leak_rule, evals=evals, leak_threshold=cfg.leak_threshold, ngram=cfg.ngram,
                             max_overlap=cfg.max_ngram_overlap)),
            ("cap", partial(gates.cap_rule, limit=cap_limit(cfg.max_fraction, sum(not is_replay(r) for r in train)),
                            seed=cfg.seed))]


def cap_limit(max_fraction: float, originals: int) -> int:
    """Most augmented records that keep their share of the output train split at ``max_fraction`` (1: no cap)."""
    if max_fraction >= 1.0:
        return 1 << 62
    return int(max_fraction * originals / (1.0 - max_fraction) + 1e-9)


def summary(cfg, train, cands, accepted, rejected, skipped, seconds) -> dict[str, Any]:  # noqa: ANN001
    """report.json: totals, per method (candidates, accepted, rejections by reason, records/s) and skips."""
    methods = {}
    for m in dict.fromkeys(c.method for c in cands):
        secs = seconds.get(m, 0.0)
        methods[m] = {"candidates": sum(c.method == m for c in cands), "accepted": sum(c.method == m for c in accepted),
                      "rejected": dict(Counter(r for c, r, _ in rejected if c.method == m)), "seconds": round(secs, 3),
                      "records_per_s": round(len(train) / secs, 1) if secs and m != "self_instruct" else None}
    return {"enabled": cfg.enabled, "originals": len(train), "augmented": len(accepted),
            "augmented_fraction": round(len(accepted) / (len(train) + len(accepted)), 4) if train else 0.0,
            "methods": methods, "rejected": dict(Counter(r for _, r, _ in rejected)), "skipped": dict(skipped),
            "seconds": {k: round(v, 3) for k, v in seconds.items()}}


def _report(result: AugmentResult) -> int:
    r = result.report
    print(f"augment: {r['augmented']} augmented records added to {r['originals']} originals "
          f"({r['augmented_fraction']:.1%}); rejected {r['rejected'] or 'none'}; skipped {r['skipped'] or 'none'}")
    for m, s in r["methods"].items():
        print(f"  {m}: {s['accepted']} of {s['candidates']} accepted, {s['records_per_s']} records/s, rejected {s['rejected']}")
    print(f"report: {result.report_path}")
    return 0


STEP = Step(name="augment", config=AugmentConfig, result=AugmentResult, run=run, report=_report, doc=__doc__,
            paths={"data_dir": "data/validated", "out_dir": "data/augmented"},
            errors=(ConfigError, TranslateError))


def main(argv: list[str] | None = None) -> int:
    return STEP.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
