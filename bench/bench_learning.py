"""Does the model learn what the demo teaches, and how fast? Probe pass rate against training minutes.

``python bench/bench_learning.py [--recipe KEY=VALUE ...]... [--every 10] [--out bench/results/learning.json]``

Builds the demo's data once in a scratch project (demo-data, ingest, validate, augment with
params.yaml), asks the base model every probe of demo/probes.yaml (greedy, as the evaluation
gate does), then trains each recipe (params.yaml's ``train:`` with the recipe's overrides) with
``steps.train.run`` and, every ``--every`` optimizer steps and at the end, pauses the clock and
asks the model being trained the same probes. Each point of a curve is (training seconds so far,
probes passed); the probing time is not counted. The figures go to ``--out`` and to stdout.

A recipe is one or more ``--recipe`` flags of comma-separated overrides, e.g.
``--recipe grad_accum=1,learning_rate=1e-3,epochs=2`` (a dotted key sets one field of a section:
``lora.r=32``). Run it on an idle machine: two torch jobs
on 2 cores run ~10x slower than one.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _value(text: str) -> Any:
    import yaml

    value = yaml.safe_load(text)
    try:  # YAML 1.1 reads 1e-3 as a string
        return float(value) if isinstance(value, str) else value
    except ValueError:
        return value


def recipe_of(spec: str) -> dict[str, Any]:
    """``a=1,b=x`` -> {"a": 1, "b": "x"} (values parsed as YAML); ``k=@FILE`` reads the value from FILE
    (a chat template holds commas)."""
    pairs = (part.split("=", 1) for part in spec.split(",") if part)
    return {k.strip(): Path(v[1:]).read_text(encoding="utf-8") if v.startswith("@") else _value(v) for k, v in pairs}


def nested(config: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``config`` with ``overrides`` applied; a dotted key (``lora.r=32``) sets one field of a nested section."""
    out = copy.deepcopy(config)
    for key, value in overrides.items():
        *path, last = key.split(".")
        section = out
        for part in path:
            section = section[part]
        section[last] = value
    return out


def prepare(project: Path) -> Path:
    """The demo's augmented data in ``project`` (the pipeline's own steps on params.yaml); its folder.

    Kept when ``project`` already holds it (``--work``), so a second run of recipes starts at once.
    """
    from steps import augment, demo_data, ingest, validate
    from steps.core.config import read_params

    os.chdir(project)
    if (project / "data" / "augmented" / "manifest.json").is_file():
        return project / "data" / "augmented"
    params = read_params(ROOT / "params.yaml")
    demo_data.run(project / "data" / "raw")
    steps = [(ingest, (), "data/prepared"), (validate, ("data/prepared",), "data/validated"),
             (augment, ("data/validated",), "data/augmented")]  # fmt: skip
    for module, inputs, out in steps:
        result = module.STEP.run(module.STEP.load_config(params), *map(Path, inputs), Path(out))
        if getattr(result, "passed", True) is False:
            raise SystemExit(f"{module.STEP.name} failed on the demo data: {result}")
    return project / "data" / "augmented"


class ProbeClock(TrainerCallback):
    """A TrainerCallback that asks the probes every ``every`` steps and at the end, off the clock."""

    def __init__(self, probes: list, tokenizer: Any, every: int, max_new_tokens: int, heldout: list | None = None,
                 max_length: int = 1024) -> None:  # fmt: skip
        self.probes, self.tokenizer, self.every, self.max_new_tokens = probes, tokenizer, every, max_new_tokens
        self.heldout, self.max_length = heldout or [], max_length  # conversations whose perplexity measures forgetting
        self.last_heldout: float | None = None
        self.points: list[dict[str, Any]] = []
        self.paused = 0.0
        self.start: float | None = None

    def ask(self, model: Any) -> list:
        from steps.evaluation.probes import outcome
        from steps.models.generation import generate_chat

        was_training = model.training
        model.eval()
        answers = generate_chat(model, self.tokenizer, [list(p.messages) for p in self.probes],
                                max_new_tokens=self.max_new_tokens, batch_size=32)  # fmt: skip
        self.last_heldout = self.perplexity(model) if self.heldout else None
        if was_training:
            model.train()
        return [outcome(p, a) for p, a in zip(self.probes, answers)]

    def perplexity(self, model: Any) -> float:
        """Held-out perplexity as evaluate computes it (its max_length, 4 conversations a pass)."""
        from steps.models.generation import chat_perplexity

        return round(chat_perplexity(model, self.tokenizer, self.heldout, max_length=self.max_length, batch_size=4), 3)

    def record(self, step: int, model: Any) -> None:
        tick = time.perf_counter()
        seconds = tick - self.start - self.paused
        outcomes = self.ask(model)
        self.points.append({"step": step, "train_seconds": round(seconds, 1), "passed": sum(bool(o.passed) for o in outcomes),
                            "failed": [o.id for o in outcomes if not o.passed],
                            "heldout_perplexity": self.last_heldout, "answers": {o.id: o.answer for o in outcomes}})  # fmt: skip
        self.paused += time.perf_counter() - tick
        print(f"  step {step}: {self.points[-1]['passed']}/{len(outcomes)} probes, held-out perplexity {self.last_heldout}"
              f" after {seconds / 60:.1f} min", flush=True)

    def on_train_begin(self, args, state, control, **kw):  # noqa: ANN001, ANN201
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, model=None, **kw):  # noqa: ANN001, ANN201
        if state.global_step % self.every == 0:
            self.record(state.global_step, model)

    def on_train_end(self, args, state, control, model=None, **kw):  # noqa: ANN001, ANN201
        if not self.points or self.points[-1]["step"] != state.global_step:
            self.record(state.global_step, model)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", action="append", default=[], help="comma-separated train: overrides (repeatable)")
    ap.add_argument("--every", type=int, default=10, help="optimizer steps between probe points")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "learning.json")
    ap.add_argument("--work", type=Path, default=None, help="a scratch folder to keep (default: a temporary one)")
    args = ap.parse_args(argv)
    args.out = args.out.resolve()  # prepare() moves into the scratch project
    os.environ.setdefault("WANDB_MODE", "offline")

    from steps import train
    from steps.core.config import from_dict, read_params
    from steps.evaluation.measure import build_eval_set
    from steps.evaluation.probes import load_probes
    from steps.models.loading import load_model, load_tokenizer

    params = read_params(ROOT / "params.yaml")
    probes = load_probes(ROOT / "demo" / "probes.yaml")
    ev = params.get("evaluate", {})
    max_new = ev.get("max_new_tokens", 64)
    recipes = [recipe_of(r) for r in args.recipe] or [{}]
    out: dict[str, Any] = {"probes": len(probes), "recipes": []}
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.work or Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        data = prepare(tmp.resolve())
        base_cfg = train.STEP.load_config(params)
        tok = load_tokenizer(base_cfg.base_model)
        heldout = [i.conversation for i in build_eval_set(data, ev.get("max_examples", 24), ev.get("max_heldout", 12)).heldout]
        clock = ProbeClock(probes, tok, args.every, max_new, heldout, ev.get("max_length", 1024))
        base = clock.ask(load_model(base_cfg.base_model))
        out["base"] = {"passed": sum(bool(o.passed) for o in base), "failed": [o.id for o in base if not o.passed],
                       "heldout_perplexity": clock.last_heldout}  # fmt: skip
        print(f"base model: {out['base']['passed']}/{len(probes)} probes, held-out perplexity {clock.last_heldout}", flush=True)
        for k, overrides in enumerate(recipes):
            cfg = from_dict(type(base_cfg), nested({**dataclasses.asdict(base_cfg), "tracking": "none"}, overrides), "recipe")
            rtok = copy.deepcopy(tok)  # asked with the template the model is trained (and published) with
            rtok.chat_template = cfg.chat_template or tok.chat_template
            callback = ProbeClock(probes, rtok, args.every, max_new, heldout, ev.get("max_length", 1024))
            print(f"recipe {k}: {overrides or 'params.yaml'}", flush=True)
            tick = time.perf_counter()
            result = train.run(cfg, data, Path(tmp) / f"models/recipe{k}", callbacks=(callback,))
            out["recipes"].append({"overrides": overrides, "points": callback.points, "wall_seconds": round(time.perf_counter() - tick, 1),
                                   "steps": result.metrics.get("steps"), "train_loss": result.metrics.get("train_loss")})  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print("\nrecipe | minutes | probes passed (base %d/%d) | held-out perplexity (base %s)"
          % (out["base"]["passed"], len(probes), out["base"]["heldout_perplexity"]))
    for r in out["recipes"]:
        last = r["points"][-1]
        curve = " ".join(f"{p['train_seconds'] / 60:.1f}m:{p['passed']}" for p in r["points"])
        print(f"{r['overrides'] or 'params.yaml'} | {last['train_seconds'] / 60:.1f} | {last['passed']}/{len(probes)}"
              f" | {last['heldout_perplexity']}  [{curve}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
