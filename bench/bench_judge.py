"""Measure a judge's calibration: how often it prefers the reference over a corrupted answer.

Builds the calibration pairs evaluate builds (``steps.evaluation.judge.calibration.build_pairs``)
from the test split and asks the judge every pair in each mode (``judge_calibration`` with
``stop_early=False``: evaluate itself stops once the bar is out of reach), printing the agreement
and the seconds per mode. With no endpoint set the judge is the local base model, decoding under
the reply schema; set TUNEGATE_JUDGE_BASE_URL / _MODEL to measure an endpoint.

    .venv/bin/python bench/bench_judge.py [--data data/validated] [--pairs 20] [--seed 42]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from steps.core.config import load_section
from steps.evaluation.config import EvaluateConfig
from steps.evaluation.judge.calibration import build_pairs
from steps.evaluation.judge.client import resolve_backend
from steps.evaluation.judge.verdicts import judge_calibration
from steps.evaluation.measure import build_eval_set


def _base(spec: str):
    from steps.models.loading import load_model, load_tokenizer

    return load_model(spec).eval(), load_tokenizer(spec)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("data/validated"), help="the folder holding test.jsonl")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--modes", default="pointwise,pairwise")
    args = ap.parse_args()

    cfg = load_section(EvaluateConfig, "evaluate", args.params)
    judge = dataclasses.replace(cfg.judge, calibration=dataclasses.replace(cfg.judge.calibration, pairs=args.pairs))
    evalset = build_eval_set(args.data, cfg.max_examples, 0)
    refs = [{"id": i.id, "question": "\n\n".join(f"{m['role']}: {m['content']}" for m in i.prompt), "reference": i.reference}
            for i in evalset.test]  # fmt: skip  # the question as evaluate shows it to the judge
    pairs = build_pairs(refs, args.pairs, args.seed)
    tick = time.perf_counter()
    chat, backend = resolve_backend(judge, lambda: _base(cfg.base_model))
    kinds = sorted({p.corruption for p in pairs})
    results = {"backend": backend, "test_items": len(refs), "pairs": len(pairs), "seed": args.seed,
               "corruptions": {k: sum(p.corruption == k for p in pairs) for k in kinds},
               "load_seconds": round(time.perf_counter() - tick, 1)}  # fmt: skip
    for mode in args.modes.split(","):
        result = judge_calibration(chat, pairs, judge, [mode], backend, stop_early=False)
        results[mode] = {"agreement": result.agreement, "pairs": result.asked[mode], "seconds": result.seconds,
                         "trusted": result.trusted}  # fmt: skip
        print(mode, json.dumps(results[mode]), file=sys.stderr, flush=True)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
