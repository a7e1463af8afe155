"""Augmentation benchmark: records/s of each method and of the guard rails, on the demo train split.

``python bench/bench_augment.py [--data data/validated] [--repeats 3] [--hf en-es=DIR,es-en=DIR]
[--openai-url http://127.0.0.1:8000/v1 --openai-model NAME]``

What is measured, all in one run on the same records (``--data``/train.jsonl):

* eda (English: WordNet; Chinese: Cilin + jieba, on the same number of Chinese records made from
  a fixed list of support questions): records/s of candidate generation, cold (first call,
  synonym tables loading) and warm (best of ``--repeats``).
* backtranslate with Apertium (``apt-get install apertium apertium-eng-spa``): records/s of the
  batched round trip, against a baseline measured in the same run: one ``apertium`` process per
  line and direction (the naive loop), on a prefix of records, extrapolated. speedup = baseline
  seconds / batched seconds.
* backtranslate with a Hugging Face model (``--hf``) or an OpenAI-compatible endpoint
  (``--openai-url``), when given.
* guard rails on the candidates: the similarity filter (packaged all-MiniLM-L6-v2, warm) and
  the duplicate + leak re-checks, in candidates/s.
* the whole step (``steps.augment.run`` with the default config) in seconds.

Figures are printed and written to ``bench/results/bench_augment.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from steps import augment  # noqa: E402
from steps.augmentation import filters as gates  # noqa: E402
from steps.augmentation.config import (
    AugmentConfig,
    BacktranslateConfig,  # noqa: E402
)
from steps.core.schema import make_record  # noqa: E402
from steps.data.splits import load_splits  # noqa: E402

ZH = ["请问如何清洗电水壶底部的水垢？", "电水壶的指示灯一直闪烁是什么原因？", "水壶烧水时发出很大的噪音，正常吗？",
      "保修期是多久？需要保留购物小票吗？", "我可以在应用里修改水壶的名字吗？", "夜间模式是什么意思？",
      "冲奶粉应该用哪个温度设置？", "壶盖打不开了，怎么办？"]
PROTECT = ("Lumo Hearth", "Lumo Home", "Lumo", "Hearth", "Tessa")


def timed(fn, repeats: int = 1) -> tuple[float, float, object]:
    """(first call seconds, best seconds over ``repeats``, last result)."""
    times, out = [], None
    for _ in range(max(1, repeats)):
        tick = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - tick)
    return times[0], min(times), out


def cfg(**kw) -> AugmentConfig:
    return AugmentConfig(**{"protect_terms": PROTECT, "max_fraction": 1.0, **kw})


def chinese(n: int) -> list[dict]:
    return [make_record("sft", dataset="zh", source="zh.jsonl", row=i, fmt="sharegpt",
                        messages=[{"role": "user", "content": ZH[i % len(ZH)] + f"（第{i}次）"},
                                  {"role": "assistant", "content": "请联系客服。"}]) for i in range(n)]


def naive_apertium(lines: list[str]) -> float:
    """Seconds for one apertium process per line and direction: the loop a first script writes."""
    tick = time.perf_counter()
    for line in lines:
        es = subprocess.run(["apertium", "-u", "eng-spa"], input=line, capture_output=True, text=True).stdout
        subprocess.run(["apertium", "-u", "spa-eng"], input=es, capture_output=True, text=True)
    return time.perf_counter() - tick


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("data/validated"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline-records", type=int, default=20)
    ap.add_argument("--hf", default=None, help="en-es=DIR,es-en=DIR or *=NLLB_DIR")
    ap.add_argument("--openai-url", default=None)
    ap.add_argument("--openai-model", default=None)
    ap.add_argument("--out", type=Path, default=Path("bench/results/bench_augment.json"))
    args = ap.parse_args()

    train = load_splits(args.data, "python -m steps.validate")["train"]
    n = len(train)
    results: dict = {"records": n, "methods": {}}

    def record(name: str, first: float, best: float, cands, **extra) -> None:
        results["methods"][name] = {"records_per_s": round(n / best, 1), "cold_records_per_s": round(n / first, 1),
                                    "seconds": round(best, 3), "candidates": len(cands), **extra}
        print(f"{name:>24}: {n / best:8.1f} records/s (cold {n / first:.1f}), {len(cands)} candidates", flush=True)

    eda = cfg(methods=("eda",))
    first, best, (cands, _, _) = timed(lambda: augment.generate(eda, train), args.repeats)
    record("eda_en", first, best, cands)
    zh = chinese(n)
    first, best, (zh_cands, _, _) = timed(lambda: augment.generate(eda, zh), args.repeats)
    record("eda_zh", first, best, zh_cands)

    all_cands = list(cands)
    if shutil.which("apertium"):
        bt = cfg(methods=("backtranslate",))
        first, best, (bt_cands, _, _) = timed(lambda: augment.generate(bt, train), args.repeats)
        k = min(args.baseline_records, n)
        lines = [line for r in train[:k] for m in r["messages"] if m["role"] == "user" for line in m["content"].split("\n")
                 if line.strip()]
        base = naive_apertium(lines) * n / k
        record("backtranslate_apertium", first, best, bt_cands, baseline_per_line_process_s=round(base, 2),
               speedup=round(base / best, 1))
        print(f"{'baseline (1 process/line)':>24}: {n / base:8.1f} records/s, speedup {base / best:.1f}x", flush=True)
        all_cands += bt_cands
    if args.hf:
        models = dict(pair.split("=", 1) for pair in args.hf.split(","))
        hf = cfg(methods=("backtranslate",), backtranslate=BacktranslateConfig(engine="hf", models=models))
        first, best, (hf_cands, _, _) = timed(lambda: augment.generate(hf, train), 1)
        record("backtranslate_hf", first, best, hf_cands)
    if args.openai_url:
        llm = cfg(methods=("backtranslate",), backtranslate=BacktranslateConfig(
            engine="openai", base_url=args.openai_url, model=args.openai_model))
        first, best, (llm_cands, _, _) = timed(lambda: augment.generate(llm, train), 1)
        record("backtranslate_openai", first, best, llm_cands)

    evals = [r for name, recs in load_splits(args.data, "python -m steps.validate").items() if name != "train" for r in recs]
    tick = time.perf_counter()
    gates.load_encoder("packaged").encode(["warm up"])
    results["encoder_load_s"] = round(time.perf_counter() - tick, 2)
    rules = dict((reason, rule) for reason, rule in augment.rules(cfg(), train, evals) if reason != "duplicate")
    m = len(all_cands)
    for name, fn in (("similarity", lambda: rules["similarity"](all_cands)),
                     ("dedup+leak", lambda: (gates.exact_rule(all_cands, train),
                                             gates.near_dup_rule(all_cands, train, ("user", "text"), 0.8),
                                             rules["leak"](all_cands)))):
        _, best, _ = timed(fn, args.repeats)
        results["methods"][f"guard_{name}"] = {"candidates_per_s": round(m / best, 1), "seconds": round(best, 3)}
        print(f"{'guard ' + name:>24}: {m / best:8.1f} candidates/s", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        tick = time.perf_counter()
        report = augment.run(cfg(max_fraction=0.5), args.data, Path(tmp) / "augmented").report
        results["step"] = {"seconds": round(time.perf_counter() - tick, 2), "augmented": report["augmented"],
                           "rejected": report["rejected"], "augmented_fraction": report["augmented_fraction"]}
    print(f"{'whole step':>24}: {results['step']['seconds']} s, {report['augmented']} augmented, "
          f"rejected {report['rejected']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
