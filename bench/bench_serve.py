"""Serving benchmark: 8 concurrent clients against the same requests one at a time, on one server.

``python bench/bench_serve.py [--clients 8] [--max-tokens 64] [--repeats 1] [--model FOLDER]``

One process starts ``tunegate serve``'s app (steps/serving/app.py) on the default base model
(SmolLM2-135M-Instruct) under a real uvicorn, with ``max_concurrency`` = ``--clients``, and asks it
``--clients`` different support questions through the official ``openai`` client, greedy
(temperature 0), ``--max-tokens`` each, two ways: one request at a time (each waits for the last),
then all at once from ``--clients`` threads, where the batch scheduler (steps/serving/batching.py)
decodes them together. Aggregate tokens/s is completion tokens over wall time; the ratio is
concurrent over one-at-a-time. The replies must be identical both ways (greedy text does not depend on
the batch). The sides alternate (S C S C ...) with ``--repeats``. Goal (2 CPU cores): ratio >= 3.
Figures also go to bench/results/bench_serve.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUESTIONS = [
    "My kettle shows E3. What should I do?",
    "How do I descale the kettle?",
    "Can I use the Lumo app without an account?",
    "What is the warranty on a Lumo Hearth?",
    "Write a haiku about tea.",
    "How do I reset the thermostat to factory settings?",
    "Explain in two sentences what a heat pump does.",
    "List three ways to save energy at home.",
    "Why does my boiler make a banging noise?",
    "What is the capital of France?",
    "Translate 'good morning' into Spanish.",
    "Give me a short packing list for a weekend trip.",
]


def main() -> None:
    import openai
    import torch

    from steps.models.loading import ensure_local_model
    from steps.serving.app import create_app
    from steps.serving.config import ServeConfig
    from tests.openai_server import serving

    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--model", default=None, help="a model folder; default: the base model of params.yaml's default")
    args = ap.parse_args()
    folder = args.model or ensure_local_model("smollm2-135m-instruct")
    prompts = QUESTIONS[: args.clients]
    app = create_app(ServeConfig(model_name="bench", max_concurrency=args.clients, max_new_tokens_limit=2048), folder)
    engine_threads = torch.get_num_threads()
    figures: dict[str, list[float]] = {"sequential_tok_s": [], "concurrent_tok_s": [], "ratio": []}
    identical = True
    with serving(app) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=600)

        def ask(question: str) -> tuple[str, int]:
            reply = client.chat.completions.create(model="bench", messages=[{"role": "user", "content": question}],
                                                   max_tokens=args.max_tokens, temperature=0)  # fmt: skip
            return reply.choices[0].message.content, reply.usage.completion_tokens

        ask(prompts[0])  # warm-up: first-call allocations
        for _ in range(args.repeats):
            start = time.perf_counter()
            alone = [ask(q) for q in prompts]
            sequential = time.perf_counter() - start
            start = time.perf_counter()
            with ThreadPoolExecutor(len(prompts)) as pool:
                together = list(pool.map(ask, prompts))
            concurrent = time.perf_counter() - start
            identical &= together == alone
            tokens = sum(n for _, n in alone)
            figures["sequential_tok_s"].append(tokens / sequential)
            figures["concurrent_tok_s"].append(sum(n for _, n in together) / concurrent)
            figures["ratio"].append(figures["concurrent_tok_s"][-1] / figures["sequential_tok_s"][-1])
            print(f"{tokens} tokens: one at a time {sequential:.1f} s ({figures['sequential_tok_s'][-1]:.1f} tok/s), "
                  f"{len(prompts)} at once {concurrent:.1f} s ({figures['concurrent_tok_s'][-1]:.1f} tok/s), "
                  f"ratio {figures['ratio'][-1]:.2f}, identical replies: {together == alone}")  # fmt: skip
    result = {
        "model": str(folder), "clients": len(prompts), "max_tokens": args.max_tokens, "repeats": args.repeats,
        "torch_threads": engine_threads, "completion_tokens": tokens,
        **{k: round(statistics.median(v), 2) for k, v in figures.items()}, "identical_greedy_replies": identical,
    }  # fmt: skip
    out = ROOT / "bench" / "results" / "bench_serve.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
