"""Evaluation benchmark: batched generation against per-sample generate, and BERTScore pairs/s.

``python bench/bench_eval.py [--prompts 32] [--max-new-tokens 64] [--batch-size 8] [--pairs 256]``

Generation: the default base model (SmolLM2-135M-Instruct) answers the same prompts (the test
split's and held-out questions, under its own chat template) two ways in one process:
``steps._generate.generate_ids`` (length-sorted, left-padded batches; a row leaves the batch and
its KV cache when it stops) and a plain loop calling transformers' ``model.generate`` on one prompt
at a time. Both greedy, same stop tokens and token budget; the
tokens generated are compared (equal unless a batched fp32 kernel breaks a near tie) and new
tokens / s reported for each, with the ratio. The sides alternate (B S B S ...) with ``--repeats``.
Goal (CPU): ratio >= 4.

BERTScore: ``steps._metrics.text_metrics`` on ``--pairs`` candidate/reference pairs with the
packaged all-MiniLM-L6-v2 (after one warm-up call that loads the encoder); pairs/s.
Figures also go to bench/results/bench_eval.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _prompts(n: int) -> list[list[dict]]:
    from steps._evaluation import build_eval_set

    evalset = build_eval_set(ROOT / "data" / "validated", n)
    items = evalset.test + evalset.heldout
    return [i.prompt for i in items][:n]


def _per_sample(model, tok, prompts, max_new_tokens):
    """The baseline: transformers' own ``model.generate``, one prompt at a time, greedy, same stop tokens."""
    import torch

    from steps._generate import _stop_ids

    stops, out = _stop_ids(tok), []
    with torch.inference_mode():
        for p in prompts:
            ids = torch.tensor([p])
            new = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 eos_token_id=stops, pad_token_id=tok.pad_token_id, do_sample=False,
                                 top_p=None, top_k=None)[0, len(p):].tolist()  # fmt: skip
            out.append(new[: next((k for k, t in enumerate(new) if t in stops), len(new))])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--pairs", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()

    from steps._generate import generate_ids, prompt_ids
    from steps._model import DEFAULT_BASE_MODEL, load_model, load_tokenizer

    model, tok = load_model(DEFAULT_BASE_MODEL).eval(), load_tokenizer(DEFAULT_BASE_MODEL)
    prompts = prompt_ids(tok, _prompts(args.prompts), 1536)
    runs = {"batched": [], "per_sample": []}
    outs = {}
    for _ in range(args.repeats):
        for side in ("batched", "per_sample"):
            tick = time.perf_counter()
            if side == "batched":
                ids = generate_ids(model, tok, prompts, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
            else:
                ids = _per_sample(model, tok, prompts, args.max_new_tokens)
            seconds = time.perf_counter() - tick
            outs[side] = ids
            runs[side].append(sum(len(r) for r in ids) / seconds)
    tps = {side: statistics.median(v) for side, v in runs.items()}
    same = sum(a == b for a, b in zip(outs["batched"], outs["per_sample"]))

    from steps._metrics import text_metrics

    texts = [tok.decode(r, skip_special_tokens=True) for r in outs["batched"]]
    cands = (texts * (args.pairs // max(1, len(texts)) + 1))[: args.pairs]
    refs = list(reversed(cands))
    text_metrics(cands[:4], refs[:4])  # load the encoder and metric modules once
    tick = time.perf_counter()
    text_metrics(cands, refs)
    pairs_s = args.pairs / (time.perf_counter() - tick)

    result = {
        "prompts": len(prompts),
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "new_tokens_per_s": {k: round(v, 1) for k, v in tps.items()},
        "ratio": round(tps["batched"] / tps["per_sample"], 2),
        "identical_outputs": f"{same}/{len(prompts)}",
        "text_metrics_pairs_per_s": round(pairs_s, 1),
    }
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_eval.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
