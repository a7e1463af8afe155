"""Train-step benchmark: tunegate's packed SFT against a plain HF Trainer + PEFT baseline that pads, and TRL's SFTTrainer.

``python bench/bench_train.py [--steps 8] [--batch-size 1] [--method lora|qlora] [--repeats 1] [--baselines baseline,trl]``

Both sides train the same base model (``steps.models.loading`` default, SmolLM2-135M-Instruct) on the same
SFT records (``data/validated/train.jsonl``, kind sft) with the same tokenisation and loss target
(``steps.models.template.render_with_mask``: loss on assistant turns and their end-of-turn token), the
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
* trl: TRL's own ``SFTTrainer`` as a TRL user runs it today: conversational records, ``packing=True`` with
  ``packing_strategy="bfd"`` (padding-free), ``assistant_only_loss=True`` through the model's template with
  ``{% generation %}`` markers (they cover exactly the tokens tunegate trains on: same ids, same mask), the same
  LoRA through ``peft_config``, the same packed rows per step and steps as tunegate. What differs is tunegate's
  loss (``steps.training.loss``): logits only at trained positions, no full-vocabulary entropy/accuracy metrics.

Figures, per side: real (non-padding) tokens / wall seconds of the training loop (first step begin
to last step end, from a callback: excludes model loading, tokenising, the final save and eval),
padding efficiency (real tokens / token slots of the tensors the model was fed, from a forward
hook; tunegate's own fill of its packed rows is printed beside it), peak memory (VmHWM read at
the end of training on CPU; ``torch.cuda.max_memory_allocated`` on CUDA), first/last train loss,
and an eval loss on the validation SFT records computed the same way for both (token-weighted
cross entropy of the trained model, one record at a time), with the base model's for reference.
On CUDA, MFU = 6 x parameters x tokens/s / the device's peak dense bf16 FLOP/s.
With ``--repeats R`` the sides alternate T B R R B T ...; medians are reported. ``--model`` trains another base
model folder (bench/gpu_check.sh: the tiny model, or the default model's architecture twin).
Goals: padding efficiency >= 0.95; against Trainer + PEFT: tokens/s ratio >= 1.5 on CPU, >= 2 on a GPU, eval
losses within 5%; against SFTTrainer: ratio >= 1.3 with eval losses within 2%. Peak memory ratios and MFU printed.
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
    from steps.models.template import end_of_turn_id, render_with_mask

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
            elif isinstance(keep := kwargs.get("logits_to_keep"), torch.Tensor):  # steps.training.loss: trained positions only
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
    from steps.models import builders as B

    args = B.common_args(tunegate_config(spec), spec["tmp"])
    keep = ("max_steps", "gradient_accumulation_steps", "learning_rate", "weight_decay", "warmup_steps", "lr_scheduler_type",
            "seed", "data_seed", "bf16", "fp16", "use_cpu", "optim", "dataloader_num_workers", "disable_tqdm")  # fmt: skip
    return {k: args[k] for k in keep}


def tunegate_config(spec: dict):
    from steps.training.config import TrainConfig

    return TrainConfig(stage="sft", method=spec["method"], packing=True, tracking="none", max_steps=spec["steps"], base_model=spec["model"],
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


def load_base(spec: dict):
    """The base model as a baseline loads it: float32, or NF4 4-bit (bf16 compute on CUDA) for qlora."""
    import torch

    from steps.models.loading import load_model

    kwargs = {}
    if spec["method"] == "qlora":
        from transformers import BitsAndBytesConfig

        compute = torch.bfloat16 if torch.cuda.is_available() else torch.float32
        kwargs = {"dtype": compute, "quantization_config": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                  bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute)}  # fmt: skip
        if torch.cuda.is_available():
            kwargs["device_map"] = {"": torch.cuda.current_device()}
    return load_model(spec["model"], **kwargs)


def lora_config():
    from peft import LoraConfig

    from steps.training.config import LoraSettings

    lora = LoraSettings()
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias="none", target_modules=lora.target_modules,
                      task_type="CAUSAL_LM")  # fmt: skip


def run_baseline(spec: dict, records: list[dict], val_rows) -> dict:
    """A plain Trainer + PEFT LoRA run with the default padded collator."""
    from datasets import Dataset
    from peft import get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments, set_seed

    from steps.models.loading import load_tokenizer

    tok = load_tokenizer(spec["model"])
    set_seed(spec["seed"])
    model = load_base(spec)
    if spec["method"] == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = get_peft_model(model, lora_config())
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


# SmolLM2's ChatML turn, and the same turn with TRL's {% generation %} markers around what tunegate trains on
# (an assistant turn's content and its <|im_end|>): how a TRL user gets assistant_only_loss on a template without markers.
CHATML_TURN = "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
MARKED_TURN = ("{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}{% generation %}"
               "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}{% else %}" + CHATML_TURN + "{% endif %}")  # fmt: skip


def training_template(template: str) -> str:
    """``template`` with generation markers, for TRL's assistant-only loss (SmolLM2's ChatML form only)."""
    if CHATML_TURN not in template:
        raise SystemExit("bench_train: the trl baseline knows how to mark SmolLM2's ChatML template only; this model's differs")
    return template.replace(CHATML_TURN, MARKED_TURN)


def run_trl(spec: dict, records: list[dict], val_rows) -> dict:
    """TRL's own SFTTrainer as a TRL user runs it: conversational records, BFD packing (padding-free),
    assistant-only loss from a template with generation markers, the same LoRA through ``peft_config``."""
    from datasets import Dataset
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    from steps.models.loading import load_tokenizer
    from steps.models.template import to_chat

    tok = load_tokenizer(spec["model"])
    tok.chat_template = training_template(tok.chat_template)
    set_seed(spec["seed"])
    model = load_base(spec)
    ds = Dataset.from_list([{"messages": to_chat(r["messages"])} for r in records if r.get("kind") == "sft"])
    args = SFTConfig(output_dir=str(Path(spec["tmp"]) / "out"), per_device_train_batch_size=spec["batch_size"],
                     max_length=spec["max_length"], packing=True, packing_strategy="bfd", padding_free=True,
                     assistant_only_loss=True, activation_checkpointing=False, logging_steps=1, eval_strategy="no",
                     save_strategy="no", report_to="none", **common_args(spec))  # fmt: skip
    p = probe()
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=lora_config(), callbacks=[p])
    trainer.train()
    trainable, total = trainer.model.get_nb_trainable_parameters()
    return {"probe": p, "model": trainer.model, "own": {"trainable_params": trainable, "total_params": total}}


SIDES = {"tunegate": run_tunegate, "baseline": run_baseline, "trl": run_trl}


def child(spec: dict) -> None:
    import torch

    from steps.models.loading import load_tokenizer
    from steps.training.datasets import read_split

    data = Path(spec["data_dir"])
    records = read_split(data, "train")
    val_rows = sft_rows(read_split(data, "validation"), load_tokenizer(spec["model"]))
    t0 = time.perf_counter()
    out = SIDES[spec["side"]](spec, records, val_rows)
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
    from steps.core.io import read_json

    return read_json(spec["result"])


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
    ap.add_argument("--baselines", default="baseline,trl", help="comma list: baseline (Trainer + PEFT, padded), trl (SFTTrainer, packed)")
    ap.add_argument("--method", choices=("lora", "qlora"), default="lora")
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--model", default=None, help="base model folder (default: SmolLM2-135M-Instruct, steps.models.loading)")
    ap.add_argument("--data-dir", type=Path, default=ROOT / "data" / "validated")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "bench_train.json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return 0
    if not (args.data_dir / "train.jsonl").is_file():
        raise SystemExit(f"bench_train: {args.data_dir}/train.jsonl not found; run `.venv/bin/tunegate ingest && .venv/bin/tunegate validate`")
    from steps.models.loading import DEFAULT_BASE_MODEL

    n_seq = sum(json.loads(line).get("kind") == "sft" for line in open(args.data_dir / "train.jsonl"))
    baselines = [b for b in args.baselines.split(",") if b]
    if unknown := set(baselines) - {"baseline", "trl"}:
        raise SystemExit(f"bench_train: --baselines {args.baselines}: unknown {sorted(unknown)}; choose from baseline, trl")
    base = {"data_dir": str(args.data_dir), "steps": args.steps, "batch_size": args.batch_size, "method": args.method,
            "max_length": args.max_length, "seed": args.seed, "model": args.model or DEFAULT_BASE_MODEL}  # fmt: skip
    sides = ("tunegate", *baselines)
    order = [s for r in range(args.repeats) for s in (sides if r % 2 == 0 else sides[::-1])]
    if order[0] != "tunegate":  # the first run is tunegate's: its packing sets the matched batch
        order.insert(0, order.pop(order.index("tunegate")))
    runs: dict[str, list[dict]] = {s: [] for s in sides}
    with tempfile.TemporaryDirectory() as tmp:
        for i, side in enumerate(order):
            spec = base | {"side": side, "tmp": f"{tmp}/{i}", "result": f"{tmp}/{i}.json"}
            if side == "baseline":
                spec |= matched_baseline(runs["tunegate"][0], args)
            t0 = time.perf_counter()
            runs[side].append(spawn(spec, Path(f"{tmp}/{i}.log")))
            print(f"  run {i + 1}/{len(order)} {side:8} {time.perf_counter() - t0:6.1f} s", file=sys.stderr)
    report(args, n_seq, runs)
    return 0


def report(args, n_seq: int, runs: dict[str, list[dict]]) -> dict:
    """Print the table and the goals, write ``args.out``; the figures as written."""
    med = lambda side, key: statistics.median(r[key] for r in runs[side])  # noqa: E731
    sides = list(runs)
    first = {s: runs[s][0] for s in sides}
    t = first["tunegate"]
    per_step = {"tunegate": f"{n_seq / -(-t['packed_rows'] // args.batch_size):.1f} in {args.batch_size} rows"}
    per_step |= {s: (first[s]["batch_size"] if s == "baseline" else f"{args.batch_size} packed rows") for s in sides[1:]}
    base_eval = next((first[s]["base_eval_loss"] for s in sides if "base_eval_loss" in first[s]), None)
    rows = [("optimizer steps", {s: args.steps if s != "baseline" else first[s]["forwards"] for s in sides}),
            ("sequences per step", per_step)]
    rows += [(name, {s: first[s][key] for s in sides}) for name, key in (
        ("trained tokens seen", "trained_tokens"), ("real tokens seen", "real_tokens"), ("token slots fed", "token_slots"),
        ("padding efficiency", "padding_efficiency"))]  # fmt: skip
    rows += [("  tunegate packed-row fill", {"tunegate": t["own"]["padding_efficiency"]})]
    rows += [(name, {s: med(s, key) for s in sides}) for name, key in (
        ("loop seconds", "loop_s"), ("tokens/s (non-padding)", "tokens_per_s"), ("peak memory MB", "peak_memory_mb"))]  # fmt: skip
    rows += [(name, {s: first[s][key] for s in sides}) for name, key in (("train loss first", "loss_first"), ("train loss last", "loss_last"))]
    rows += [("eval loss (base model)", {s: base_eval for s in sides}), ("eval loss (trained)", {s: med(s, "eval_loss") for s in sides})]
    print("\n" + f"{'':28}" + "".join(f" {s:>18}" for s in sides))
    for name, vals in rows:
        print(f"{name:28}" + "".join(f" {vals.get(s, '')!s:>18}" for s in sides))
    on_gpu = t["device"] != "cpu"
    tps = {s: med(s, "tokens_per_s") for s in sides}
    mem = {s: med(s, "peak_memory_mb") for s in sides}
    ev = {s: med(s, "eval_loss") for s in sides}
    figures = {
        "settings": {"method": args.method, "steps": args.steps, "batch_size": args.batch_size, "max_length": args.max_length,
                     "repeats": args.repeats, "seed": args.seed, "model": args.model or "smollm2-135m-instruct", "sft_records": n_seq,
                     "device": t["device"], "threads": t["threads"]},
        "tokens_per_s": tps,
        "throughput_ratio": {s: round(tps["tunegate"] / tps[s], 3) for s in sides[1:]},
        "padding_efficiency": {s: first[s]["padding_efficiency"] for s in sides} | {"tunegate_packed_fill": t["own"]["padding_efficiency"]},
        "peak_memory_mb": mem | {"kind": "cuda_max_allocated" if on_gpu else "VmHWM"},
        "peak_memory_ratio": {s: round(mem["tunegate"] / mem[s], 3) for s in sides[1:]},
        "train_loss_last": {s: first[s]["loss_last"] for s in sides},
        "eval_loss": ev | {"base_model": base_eval},
        "eval_loss_rel_diff": {s: round((ev["tunegate"] - ev[s]) / ev[s], 4) for s in sides[1:]},
        "mfu": {s: mfu(first[s]) for s in sides} if on_gpu else None,
        "tunegate_own_metrics": t["own"], "runs": runs,
    }  # fmt: skip
    goals = {"padding_efficiency>=0.95": t["padding_efficiency"] >= 0.95 and (t["own"]["padding_efficiency"] or 0) >= 0.95}
    if "baseline" in sides:
        goals[f"ratio_vs_baseline>={2 if on_gpu else 1.5}"] = figures["throughput_ratio"]["baseline"] >= (2 if on_gpu else 1.5)
        goals["eval_loss_vs_baseline_within_5%"] = abs(figures["eval_loss_rel_diff"]["baseline"]) <= 0.05
    if "trl" in sides:
        goals["ratio_vs_trl>=1.3"] = figures["throughput_ratio"]["trl"] >= 1.3
        goals["eval_loss_vs_trl_within_2%"] = abs(figures["eval_loss_rel_diff"]["trl"]) <= 0.02
    figures["goals"] = goals
    print("\n" + "  ".join(f"vs {s}: tokens/s ratio {figures['throughput_ratio'][s]}, peak memory ratio {figures['peak_memory_ratio'][s]}, "
                           f"eval loss rel diff {figures['eval_loss_rel_diff'][s]:+.2%}" for s in sides[1:])
          + (f"  MFU {figures['mfu']}" if on_gpu else ""))  # fmt: skip
    print("goals: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in goals.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    print(json.dumps({k: v for k, v in figures.items() if k not in ("runs", "tunegate_own_metrics")}, default=str))
    return figures


if __name__ == "__main__":
    raise SystemExit(main())
