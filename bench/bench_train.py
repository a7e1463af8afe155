"""Train-step benchmark: tunegate's packed SFT against a plain HF Trainer + PEFT baseline that pads.

``python bench/bench_train.py [--steps 8] [--batch-size 1] [--method lora|qlora] [--repeats 1]``

Both sides train the same base model (``steps._model`` default, SmolLM2-135M-Instruct) on the same
SFT records (``data/validated/train.jsonl``, kind sft) with the same tokenisation and loss target
(``steps._template.render_with_mask``: loss on assistant turns and their end-of-turn token), the
same LoRA settings (``steps.train.LoraSettings``), optimizer, schedule, learning rate and seed, on
the same machine, in one run; each side runs in a fresh subprocess so peak memory does not mix.

* tunegate: ``steps.train.run`` (stage sft, padding-free BFD packing into ``--max-length`` rows),
  ``--batch-size`` packed rows per optimizer step for ``--steps`` steps.
* baseline: ``transformers.Trainer`` on ``get_peft_model`` with ``DataCollatorForSeq2Seq``
  (pads each batch to its longest sequence, attention_mask, labels padded with -100). Its batch
  size in sequences is the mean number of sequences in one tunegate step (records / tunegate steps
  per epoch), so both sides take the same optimizer steps over the same records: same epochs, same
  sequences and trained tokens seen, and the same learning-rate schedule. ``--baseline-batch-size``
  overrides it (the baseline then runs the steps that cover the same epochs).

Figures, per side: real (non-padding) tokens / wall seconds of the training loop (first step begin
to last step end, from a callback: excludes model loading, tokenising, the final save and eval),
padding efficiency (real tokens / token slots of the tensors the model was fed, from a forward
hook; tunegate's own fill of its packed rows is printed beside it), peak memory (VmHWM read at
the end of training on CPU; ``torch.cuda.max_memory_allocated`` on CUDA), first/last train loss,
and an eval loss on the validation SFT records computed the same way for both (token-weighted
cross entropy of the trained model, one record at a time), with the base model's for reference.
On CUDA, MFU = 6 x parameters x tokens/s / the device's peak dense bf16 FLOP/s.
With ``--repeats R`` the sides alternate T B B T ...; medians are reported.
Goals (CPU): padding efficiency >= 0.95, tokens/s ratio >= 1.5, eval losses within 5%.
GPU: ratio >= 2, peak memory ratio <= 0.6 for qlora, MFU printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}  # dense, no sparsity
IGNORE = -100


# ----------------------------------------------------------------------------- child side


def sft_rows(records: list[dict], tokenizer) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) of each sft record: the render and mask tunegate trains on."""
    from steps._template import end_of_turn_id, render_with_mask

    eot, rows = end_of_turn_id(tokenizer), []
    for r in records:
        if r.get("kind") == "sft":
            ids, mask = render_with_mask(tokenizer, r["messages"], r.get("tools"), None, eot)
            if any(mask):
                rows.append((ids, [t if m else IGNORE for t, m in zip(ids, mask)]))
    return rows


def eval_loss(model, rows) -> float:
    """Token-weighted cross entropy on the trained tokens of ``rows``, one record per forward (no padding)."""
    import torch
    import torch.nn.functional as F

    was, dev = model.training, next(model.parameters()).device
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for ids, labels in rows:
            logits = model(input_ids=torch.tensor([ids], device=dev)).logits[0, :-1].float()
            target = torch.tensor(labels[1:], device=dev)
            total += F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="sum").item()
            count += int((target != IGNORE).sum())
    model.train(was)
    return total / count


def peak_memory_mb() -> float:
    """This process's peak: CUDA allocated on a GPU, else the RSS high-water mark (VmHWM)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def probe():
    """A TrainerCallback that times the training loop, counts what the model is fed and keeps the model."""
    import torch
    from transformers import TrainerCallback

    class Probe(TrainerCallback):
        def __init__(self):
            self.slots = self.real = self.trained = self.forwards = 0
            self.t0 = self.t_end = None
            self.model, self.losses, self.peak_mb = None, [], None

        def _count(self, _module, args, kwargs):
            if not _module.training:
                return
            ids, mask, labels = kwargs.get("input_ids", args[0] if args else None), kwargs.get("attention_mask"), kwargs.get("labels")
            self.forwards += 1
            self.slots += ids.numel()
            self.real += int(mask.sum()) if mask is not None else ids.numel()
            if labels is not None:
                self.trained += int((labels != IGNORE).sum())
            elif isinstance(keep := kwargs.get("logits_to_keep"), torch.Tensor):  # steps._sft_loss: trained positions only
                self.trained += keep.numel()

        def on_train_begin(self, args, state, control, model=None, **kw):
            self.model, self.hook = model, model.register_forward_pre_hook(self._count, with_kwargs=True)
            self.rows = len(kw["train_dataloader"].dataset) if kw.get("train_dataloader") is not None else None
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.t_end = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

        def on_train_end(self, args, state, control, **kw):
            self.hook.remove()
            self.peak_mb = peak_memory_mb()

    return Probe()


def common_args(spec: dict) -> dict:
    """Settings both sides share, taken from tunegate's own builder defaults for the same TrainConfig."""
    from steps import _builders as B

    args = B.common_args(tunegate_config(spec), spec["tmp"])
    keep = ("max_steps", "gradient_accumulation_steps", "learning_rate", "weight_decay", "warmup_steps", "lr_scheduler_type",
            "seed", "data_seed", "bf16", "fp16", "use_cpu", "optim", "dataloader_num_workers", "disable_tqdm")  # fmt: skip
    return {k: args[k] for k in keep}


def tunegate_config(spec: dict):
    from steps.train import TrainConfig

    return TrainConfig(stage="sft", method=spec["method"], packing=True, tracking="none", max_steps=spec["steps"],
                       batch_size=spec["batch_size"], grad_accum=1, max_length=spec["max_length"], learning_rate=2e-4,
                       seed=spec["seed"], logging_steps=1, eval_steps=10**6, save_steps=10**6, save_total_limit=2)  # fmt: skip


def run_tunegate(spec: dict, records: list[dict], val_rows) -> dict:
    """steps.train.run on a data folder holding the train records and an empty validation split (no in-loop eval)."""
    from steps import train

    data = Path(spec["tmp"]) / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (data / "validation.jsonl").write_text("")
    p = probe()
    result = train.run(tunegate_config(spec), data, Path(spec["tmp"]) / "model", callbacks=(p,))
    m = result.metrics
    return {"probe": p, "model": p.model, "own": {k: m.get(k) for k in ("tokens_per_s", "padding_efficiency", "peak_memory_mb",
            "train_runtime_s", "tokens_seen", "steps", "trainable_params", "total_params")} | {"data": m["data"].get("train")}}  # fmt: skip


def run_baseline(spec: dict, records: list[dict], val_rows) -> dict:
    """A plain Trainer + PEFT LoRA run with the default padded collator."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments, set_seed

    from steps._model import DEFAULT_BASE_MODEL, load_model, load_tokenizer
    from steps.train import LoraSettings

    tok = load_tokenizer(DEFAULT_BASE_MODEL)
    set_seed(spec["seed"])
    kwargs = {}
    if spec["method"] == "qlora":
        from transformers import BitsAndBytesConfig

        compute = torch.bfloat16 if torch.cuda.is_available() else torch.float32
        kwargs = {"dtype": compute, "quantization_config": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                  bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute)}  # fmt: skip
        if torch.cuda.is_available():
            kwargs["device_map"] = {"": torch.cuda.current_device()}
    model = load_model(DEFAULT_BASE_MODEL, **kwargs)
    if spec["method"] == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    lora = LoraSettings()
    model = get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias="none",
                                             target_modules=lora.target_modules, task_type="CAUSAL_LM"))  # fmt: skip
    base_eval = eval_loss(model, val_rows)  # LoRA B starts at zero: this is the base model's loss
    rows = sft_rows(records, tok)
    ds = Dataset.from_list([{"input_ids": i, "labels": lab} for i, lab in rows])
    args = TrainingArguments(output_dir=str(Path(spec["tmp"]) / "out"), per_device_train_batch_size=spec["baseline_batch_size"],
                             logging_steps=1, eval_strategy="no", save_strategy="no", report_to="none",
                             **common_args(spec) | {"max_steps": spec["baseline_steps"]})  # fmt: skip
    p = probe()
    trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=DataCollatorForSeq2Seq(tok, padding="longest"), callbacks=[p])
    trainer.train()
    trainable, total = model.get_nb_trainable_parameters()
    return {"probe": p, "model": model, "base_eval_loss": base_eval, "own": {"trainable_params": trainable, "total_params": total}}


def child(spec: dict) -> None:
    import torch

    from steps._data import read_split
    from steps._model import DEFAULT_BASE_MODEL, load_tokenizer

    data = Path(spec["data_dir"])
    records = read_split(data, "train")
    val_rows = sft_rows(read_split(data, "validation"), load_tokenizer(DEFAULT_BASE_MODEL))
    t0 = time.perf_counter()
    out = (run_tunegate if spec["side"] == "tunegate" else run_baseline)(spec, records, val_rows)
    p = out.pop("probe")
    model = out.pop("model")
    loop_s = p.t_end - p.t0
    figures = {
        "side": spec["side"], "loop_s": round(loop_s, 3), "tokens_per_s": round(p.real / loop_s, 1),
        "real_tokens": p.real, "token_slots": p.slots, "trained_tokens": p.trained, "forwards": p.forwards, "packed_rows": p.rows,
        "padding_efficiency": round(p.real / p.slots, 4), "peak_memory_mb": round(p.peak_mb, 1),
        "loss_first": p.losses[0] if p.losses else None, "loss_last": p.losses[-1] if p.losses else None,
        "eval_loss": round(eval_loss(model, val_rows), 5), "child_wall_s": round(time.perf_counter() - t0, 1),
        "batch_size": spec.get("baseline_batch_size", spec["batch_size"]),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "threads": torch.get_num_threads(),
    } | out  # fmt: skip
    Path(spec["result"]).write_text(json.dumps(figures, default=str))


# ----------------------------------------------------------------------------- parent side


def spawn(spec: dict, log: Path) -> dict:
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled"}
    with open(log, "w") as fh:
        rc = subprocess.call([sys.executable, __file__, "--child", json.dumps(spec)], stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    if rc:
        sys.stderr.write(log.read_text()[-4000:])
        raise SystemExit(f"bench_train: the {spec['side']} side failed (exit {rc}); log above")
    return json.loads(Path(spec["result"]).read_text())


def matched_baseline(t: dict, args) -> dict:
    """Baseline batch (sequences) and steps covering the same records as tunegate's run, epoch for epoch.

    tunegate packs n records into R rows, so one epoch is S = ceil(R / batch) steps; the matched
    baseline batch is ceil(n / S) sequences, and it runs for as many epochs as tunegate did.
    """
    n, per_epoch = t["own"]["data"]["records"], -(-t["packed_rows"] // args.batch_size)
    bsz = args.baseline_batch_size or -(-n // per_epoch)
    return {"baseline_batch_size": bsz, "baseline_steps": max(1, round(args.steps / per_epoch * -(-n // bsz)))}


def mfu(side: dict) -> float | None:
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in side["device"]), None)
    params = side.get("own", {}).get("total_params")
    return round(6 * params * side["tokens_per_s"] / peak, 4) if peak and params else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=8, help="tunegate optimizer steps (36 = one epoch of the demo data at batch 1)")
    ap.add_argument("--batch-size", type=int, default=1, help="tunegate packed rows per step (~6 demo sequences per 512-token row)")
    ap.add_argument("--baseline-batch-size", type=int, default=None, help="sequences per baseline step (default: matched)")
    ap.add_argument("--method", choices=("lora", "qlora"), default="lora")
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--data-dir", type=Path, default=ROOT / "data" / "validated")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return 0
    if not (args.data_dir / "train.jsonl").is_file():
        raise SystemExit(f"bench_train: {args.data_dir}/train.jsonl not found; run `.venv/bin/tunegate ingest && .venv/bin/tunegate validate`")
    n_seq = sum(json.loads(line).get("kind") == "sft" for line in open(args.data_dir / "train.jsonl"))
    base = {"data_dir": str(args.data_dir), "steps": args.steps, "batch_size": args.batch_size, "method": args.method,
            "max_length": args.max_length, "seed": args.seed}  # fmt: skip
    order = [s for r in range(args.repeats) for s in (("tunegate", "baseline") if r % 2 == 0 else ("baseline", "tunegate"))]
    runs: dict[str, list[dict]] = {"tunegate": [], "baseline": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i, side in enumerate(order):
            spec = base | {"side": side, "tmp": f"{tmp}/{i}", "result": f"{tmp}/{i}.json"}
            if side == "baseline":  # the first run is tunegate's: its packing sets the matched batch
                spec |= matched_baseline(runs["tunegate"][0], args)
            t0 = time.perf_counter()
            runs[side].append(spawn(spec, Path(f"{tmp}/{i}.log")))
            print(f"  run {i + 1}/{len(order)} {side:8} {time.perf_counter() - t0:6.1f} s", file=sys.stderr)
    report(args, n_seq, runs)
    return 0


def report(args, n_seq: int, runs: dict[str, list[dict]]) -> None:
    med = lambda side, key: statistics.median(r[key] for r in runs[side])  # noqa: E731
    t, b = runs["tunegate"][0], runs["baseline"][0]
    tps_t, tps_b = med("tunegate", "tokens_per_s"), med("baseline", "tokens_per_s")
    mem_t, mem_b = med("tunegate", "peak_memory_mb"), med("baseline", "peak_memory_mb")
    ev_t, ev_b = med("tunegate", "eval_loss"), med("baseline", "eval_loss")
    rows = [
        ("optimizer steps", args.steps, b["forwards"]),
        ("sequences per step", f"{n_seq / -(-t['packed_rows'] // args.batch_size):.1f} in {args.batch_size} rows", b["batch_size"]),
        ("trained tokens seen", t["trained_tokens"], b["trained_tokens"]),
        ("real tokens seen", t["real_tokens"], b["real_tokens"]),
        ("token slots fed", t["token_slots"], b["token_slots"]),
        ("padding efficiency", t["padding_efficiency"], b["padding_efficiency"]),
        ("  tunegate packed-row fill", t["own"]["padding_efficiency"], ""),
        ("loop seconds", med("tunegate", "loop_s"), med("baseline", "loop_s")),
        ("tokens/s (non-padding)", tps_t, tps_b),
        ("peak memory MB", mem_t, mem_b),
        ("train loss first", t["loss_first"], b["loss_first"]),
        ("train loss last", t["loss_last"], b["loss_last"]),
        ("eval loss (base model)", b["base_eval_loss"], b["base_eval_loss"]),
        ("eval loss (trained)", ev_t, ev_b),
    ]  # fmt: skip
    print(f"\n{'':28} {'tunegate':>26} {'baseline':>12}")
    for name, x, y in rows:
        print(f"{name:28} {x!s:>26} {y!s:>12}")
    figures = {
        "settings": {"method": args.method, "steps": args.steps, "batch_size": args.batch_size, "max_length": args.max_length,
                     "repeats": args.repeats, "seed": args.seed, "sft_records": n_seq, "device": t["device"], "threads": t["threads"]},
        "tokens_per_s": {"tunegate": tps_t, "baseline": tps_b}, "throughput_ratio": round(tps_t / tps_b, 3),
        "padding_efficiency": {"tunegate": t["padding_efficiency"], "tunegate_packed_fill": t["own"]["padding_efficiency"],
                               "baseline": b["padding_efficiency"]},
        "peak_memory_mb": {"tunegate": mem_t, "baseline": mem_b, "kind": "cuda_max_allocated" if t["device"] != "cpu" else "VmHWM"},
        "peak_memory_ratio": round(mem_t / mem_b, 3),
        "train_loss_last": {"tunegate": t["loss_last"], "baseline": b["loss_last"]},
        "eval_loss": {"tunegate": ev_t, "baseline": ev_b, "base_model": b["base_eval_loss"]},
        "eval_loss_rel_diff": round((ev_t - ev_b) / ev_b, 4),
        "mfu": {"tunegate": mfu(t), "baseline": mfu(b)} if t["device"] != "cpu" else None,
        "tunegate_own_metrics": t["own"], "runs": runs,
    }  # fmt: skip
    on_gpu = t["device"] != "cpu"
    goals = {"padding_efficiency>=0.95": t["padding_efficiency"] >= 0.95 and (t["own"]["padding_efficiency"] or 0) >= 0.95,
             f"throughput_ratio>={2 if on_gpu else 1.5}": figures["throughput_ratio"] >= (2 if on_gpu else 1.5),
             "eval_loss_within_5%": abs(figures["eval_loss_rel_diff"]) <= 0.05}  # fmt: skip
    if on_gpu and args.method == "qlora":
        goals["peak_memory_ratio<=0.6"] = figures["peak_memory_ratio"] <= 0.6
    figures["goals"] = goals
    print(f"\nthroughput ratio {figures['throughput_ratio']}  peak memory ratio {figures['peak_memory_ratio']}  "
          f"eval loss rel diff {figures['eval_loss_rel_diff']:+.2%}" + (f"  MFU {figures['mfu']}" if on_gpu else ""))
    print("goals: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in goals.items()))
    out = Path(__file__).parent / "results" / "bench_train.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    print(json.dumps({k: v for k, v in figures.items() if k not in ("runs", "tunegate_own_metrics")}, default=str))


if __name__ == "__main__":
    raise SystemExit(main())
