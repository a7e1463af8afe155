"""Evaluation benchmark: batched generation against transformers' batched and per-sample generate, and BERTScore pairs/s.

``python bench/bench_eval.py [--prompts 32] [--max-new-tokens 64] [--batch-size 8] [--pairs 256] [--repeats 1]``
``[--sides batched,hf_batched,batched_concat,per_sample] [--model DIR] [--device cpu|cuda] [--dtype float32|bfloat16] [--out FILE]``

Generation: the default base model (SmolLM2-135M-Instruct) answers the same prompts (the test
split's and held-out questions, under its own chat template) three ways in one process:

* batched: ``steps.models.generation.generate_ids``, what evaluation runs: a rolling batch of at most
  ``--batch-size`` rows, shortest prompts first, left-padded; a row leaves the batch and its KV cache when it
  stops and the next prompts are prefilled and join, so the batch stays full until the queue is empty.
* hf_batched: transformers' own batched ``model.generate`` on the same length-sorted, left-padded batches of
  ``--batch-size`` prompts (a batch runs until its longest answer ends).
* batched_concat: the batched side with transformers' own DynamicCache layers, which concatenate (copy) the
  whole cache every step, instead of the reserved layers ``generate_ids`` grows in place: what that is worth.
* per_sample: ``model.generate`` on one prompt at a time.

All greedy, same stop tokens and token budget; the tokens generated are compared with the batched side's
(equal unless a different batch shape rounds a near tie the other way) and new tokens / s reported for each,
with the ratios. The sides alternate (B H P P H B ...) with ``--repeats``; medians are reported.
Goals (CPU): ratio >= 4 against per_sample, >= 1.3 against hf_batched, identical outputs.

BERTScore: ``steps.evaluation.metrics.text_metrics`` on ``--pairs`` candidate/reference pairs with the
packaged all-MiniLM-L6-v2 (after one warm-up call that loads the encoder); pairs/s (``--pairs 0`` skips it).
Figures also go to bench/results/bench_eval.json (or ``--out``).
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


def _prompts(data_dir: Path, n: int) -> list[list[dict]]:
    from steps.evaluation.measure import build_eval_set

    evalset = build_eval_set(data_dir, n)
    items = evalset.test + evalset.heldout
    if not items:
        raise SystemExit(f"bench_eval: no test or held-out prompts in {data_dir}; run `make data && tunegate ingest && "
                         "tunegate validate` first, or pass --data-dir")  # fmt: skip
    return [i.prompt for i in items][:n]


def _per_sample(model, tok, prompts, max_new_tokens):
    """The baseline: transformers' own ``model.generate``, one prompt at a time, greedy, same stop tokens."""
    import torch

    from steps.models.generation import stop_ids

    stops, out = stop_ids(tok), []
    with torch.inference_mode():
        for p in prompts:
            ids = torch.tensor([p], device=model.device)
            new = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 eos_token_id=stops, pad_token_id=tok.pad_token_id, do_sample=False,
                                 top_p=None, top_k=None)[0, len(p):].tolist()  # fmt: skip
            out.append(new[: next((k for k, t in enumerate(new) if t in stops), len(new))])
    return out


def _hf_batched(model, tok, prompts, max_new_tokens, batch_size):
    """The strong baseline: transformers' own batched ``model.generate`` on the same length-sorted, left-padded
    batches of ``batch_size`` prompts, greedy, same stop tokens; a batch runs until its longest answer ends."""
    import torch

    from steps.models.generation import stop_ids

    stops, pad, device = stop_ids(tok), tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id, model.device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            width = max(len(prompts[i]) for i in chunk)
            ids = torch.tensor([[pad] * (width - len(prompts[i])) + prompts[i] for i in chunk], device=device)
            mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in chunk], device=device)
            gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, eos_token_id=stops,
                                 pad_token_id=pad, do_sample=False, top_p=None, top_k=None)[:, width:].tolist()  # fmt: skip
            for row, i in enumerate(chunk):
                out[i] = gen[row][: next((k for k, t in enumerate(gen[row]) if t in stops), len(gen[row]))]
    return out


def _batched_concat(model, tok, prompts, max_new_tokens, batch_size):
    """tunegate's loop with transformers' own DynamicCache layers (each step concatenates, copying the cache),
    instead of the reserved layers it grows in place: what the reservation is worth."""
    from steps.models import generation

    real, generation._reserve = generation._reserve, lambda cache: None
    try:
        return generation.generate_ids(model, tok, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    finally:
        generation._reserve = real


def _per_sample_on(model, tok, prompts, max_new_tokens, batch_size):
    return _per_sample(model, tok, prompts, max_new_tokens)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--pairs", type=int, default=256, help="BERTScore pairs (0: skip the metrics)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--sides", default="batched,hf_batched,per_sample", help="comma list: batched (tunegate), hf_batched, batched_concat, per_sample")
    ap.add_argument("--model", default=None, help="model folder (default: SmolLM2-135M-Instruct, steps.models.loading)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--data-dir", type=Path, default=ROOT / "data" / "validated")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "bench_eval.json")
    args = ap.parse_args(argv)

    import torch

    from steps.models.generation import generate_ids, prompt_ids
    from steps.models.loading import DEFAULT_BASE_MODEL, load_model, load_tokenizer

    name = args.model or DEFAULT_BASE_MODEL
    model = load_model(name, dtype=getattr(torch, args.dtype)).to(args.device).eval()
    tok = load_tokenizer(name)
    prompts = prompt_ids(tok, _prompts(args.data_dir, args.prompts), 1536)
    gen = {"batched": lambda *a: generate_ids(*a[:3], max_new_tokens=a[3], batch_size=a[4]), "hf_batched": _hf_batched,
           "batched_concat": _batched_concat, "per_sample": _per_sample_on}  # fmt: skip
    sides = [s for s in args.sides.split(",") if s]
    if unknown := set(sides) - set(gen):
        raise SystemExit(f"bench_eval: --sides {args.sides}: unknown {sorted(unknown)}; choose from {', '.join(gen)}")
    gen["batched"](model, tok, prompts[:2], 2, 2)  # warm-up: first-call allocations and kernel choices
    runs: dict[str, list[float]] = {s: [] for s in sides}
    outs = {}
    for r in range(args.repeats):
        for side in sides if r % 2 == 0 else sides[::-1]:
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            tick = time.perf_counter()
            ids = gen[side](model, tok, prompts, args.max_new_tokens, args.batch_size)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds = time.perf_counter() - tick
            outs[side] = ids
            runs[side].append(sum(len(r) for r in ids) / seconds)
    tps = {side: statistics.median(v) for side, v in runs.items()}
    result = {
        "model": name, "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "threads": torch.get_num_threads(), "dtype": args.dtype, "prompts": len(prompts), "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size, "repeats": args.repeats, "new_tokens": {s: sum(len(r) for r in outs[s]) for s in sides},
        "new_tokens_per_s": {k: round(v, 1) for k, v in tps.items()},
    }  # fmt: skip
    if "batched" in sides:
        result["ratio"] = {s: round(tps["batched"] / tps[s], 2) for s in sides if s != "batched"}
        result["identical_outputs"] = {s: f"{sum(a == b for a, b in zip(outs['batched'], outs[s]))}/{len(prompts)}" for s in sides if s != "batched"}
    if args.pairs and "batched" in sides:
        result["text_metrics_pairs_per_s"] = _pairs_per_s(tok, outs["batched"], args.pairs)
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def _pairs_per_s(tok, rows, pairs: int) -> float:
    from steps.evaluation.metrics import text_metrics

    texts = [tok.decode(r, skip_special_tokens=True) for r in rows]
    cands = (texts * (pairs // max(1, len(texts)) + 1))[:pairs]
    refs = list(reversed(cands))
    text_metrics(cands[:4], refs[:4])  # load the encoder and metric modules once
    tick = time.perf_counter()
    text_metrics(cands, refs)
    return round(pairs / (time.perf_counter() - tick), 1)


if __name__ == "__main__":
    main()
