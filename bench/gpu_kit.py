"""Helpers of bench/gpu_check.sh: the kit it carries, the model and data it runs on, the summary it writes.

``python bench/gpu_kit.py pack KIT``       (here, by ``make gpu-kit``) copy the demo's validated splits and the default
                                          model's config and tokenizer (no weights: 540 MB would not travel) into KIT
``python bench/gpu_kit.py model KIT OUT``  a model folder at OUT: the real default model when it resolves here, else
                                          its architecture twin (KIT/model's config and tokenizer, seeded random weights)
``python bench/gpu_kit.py tiny OUT``       the dry run's model (tests/tiny.py's 2-layer Llama) and data (OUT/model, OUT/data)
``python bench/gpu_kit.py summary DIR``    gather DIR's part results into DIR/gpu_check.json and DIR/summary.txt

The twin has the default model's shapes, so tokens/s, peak memory and MFU are what the real weights give; losses
compare the sides with each other (same seeded start), not with the real model's, and generation from random
weights rarely stops early (each row runs its full token budget).
"""

from __future__ import annotations

import gzip
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SPLITS = ("train", "validation", "test", "heldout")
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
               "special_tokens_map.json")  # fmt: skip


def pack(kit: Path, data: Path = ROOT / "data" / "validated") -> None:
    from steps.models.loading import DEFAULT_BASE_MODEL, ensure_local_model

    if not all((data / f"{s}.jsonl").is_file() for s in SPLITS):
        raise SystemExit(f"gpu_kit: {data} lacks the splits {SPLITS}; run `make data && tunegate ingest && tunegate validate`")
    (kit / "data").mkdir(parents=True, exist_ok=True)
    for s in SPLITS:
        shutil.copy(data / f"{s}.jsonl", kit / "data" / f"{s}.jsonl")
    source = Path(ensure_local_model(DEFAULT_BASE_MODEL))
    (kit / "model").mkdir(exist_ok=True)
    for name in MODEL_FILES:  # gzipped: 3.5 MB of tokenizer.json is 0.8 MB, and the kit's every MB counts
        if (source / name).is_file():
            (kit / "model" / f"{name}.gz").write_bytes(gzip.compress((source / name).read_bytes(), mtime=0))


def model(kit: Path, out: Path) -> str:
    """The real default model if it resolves here (its GGUF package installed), else its architecture twin."""
    from steps.models.loading import DEFAULT_BASE_MODEL, ensure_local_model

    try:
        real = ensure_local_model(DEFAULT_BASE_MODEL)
        print(f"model: {DEFAULT_BASE_MODEL} (real weights) at {real}", file=sys.stderr)
        return real
    except Exception as exc:  # noqa: BLE001 - any failure to resolve means: build the twin
        print(f"model: {DEFAULT_BASE_MODEL} does not resolve here ({str(exc).splitlines()[0]}); building its architecture twin",
              file=sys.stderr)
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src = kit / "model"
    if not (src / "config.json.gz").is_file():
        raise SystemExit(f"gpu_kit: {src}/config.json.gz not found; run `make gpu-kit` here first and carry the kit")
    out.mkdir(parents=True, exist_ok=True)
    for packed in src.glob("*.gz"):
        (out / packed.stem).write_bytes(gzip.decompress(packed.read_bytes()))
    torch.manual_seed(0)
    twin = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(out), dtype=torch.float32)
    twin.save_pretrained(out)
    if (src / "generation_config.json.gz").is_file():  # the model's own (stop tokens), not the one save_pretrained derived
        (out / "generation_config.json").write_bytes(gzip.decompress((src / "generation_config.json.gz").read_bytes()))
    AutoTokenizer.from_pretrained(out)  # loads: the folder is complete
    print(f"model: architecture twin of {DEFAULT_BASE_MODEL} ({sum(p.numel() for p in twin.parameters()) / 1e6:.1f}M parameters) at {out}",
          file=sys.stderr)
    return str(out)


def tiny(out: Path) -> None:
    """The dry run's 2-layer model and a small canonical data set (sft conversations in every split)."""
    from tests.tiny import save_tiny_model

    save_tiny_model(out / "model")
    (out / "data").mkdir(parents=True, exist_ok=True)
    facts = [("capital of France", "Paris"), ("colour of the sky", "blue"), ("sum of 2 and 3", "5"), ("first letter", "A"),
             ("opposite of good", "bad"), ("fox's speed", "quick"), ("dog's mood", "lazy"), ("answer to hello", "Hi there")]  # fmt: skip
    for s, n in zip(SPLITS, (48, 8, 8, 8)):
        rows = []
        for i in range(n):
            q, a = facts[i % len(facts)]
            messages = [{"role": "user", "content": f"What is the {q}? ({s} {i})"},
                        {"role": "assistant", "content": f"The {q} is {a}. " * (1 + i % 3)}]  # fmt: skip
            rows.append({"id": f"{s}-{i}", "kind": "sft", "messages": messages, "meta": {"dataset": "tiny", "row": i}})
        (out / "data" / f"{s}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def env(out: Path) -> None:
    """The machine and the package versions the run used, as env.json."""
    import importlib.metadata as md
    import platform
    import subprocess

    import torch

    cuda = torch.cuda.is_available()
    names = ("torch", "transformers", "peft", "accelerate", "trl", "datasets", "bitsandbytes", "vllm", "tokenizers", "huggingface-hub")
    versions = {}
    for n in names:
        try:
            versions[n] = md.version(n)
        except md.PackageNotFoundError:
            versions[n] = None
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"], capture_output=True,
                         text=True) if shutil.which("nvidia-smi") else None  # fmt: skip
    info = {"device": torch.cuda.get_device_name() if cuda else "cpu", "cuda": torch.version.cuda, "python": platform.python_version(),
            "cpus": torch.get_num_threads(), "nvidia_smi": smi.stdout.strip() if smi else None, "versions": versions}  # fmt: skip
    out.write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info))


def summary(folder: Path) -> dict:
    """One JSON of every part (its status, exit code, seconds and figures) and a short text of the headline numbers."""
    parts = {}
    for status in sorted(folder.glob("*.status")):
        name = status.stem
        rc, seconds = status.read_text().split()
        result = folder / f"{name}.json"
        parts[name] = {"rc": int(rc), "seconds": float(seconds), "status": {"0": "ok", "124": "timed out"}.get(rc, f"failed (exit {rc})"),
                       "figures": json.loads(result.read_text()) if result.is_file() else None}  # fmt: skip
    env = folder / "env.json"
    out = {"env": json.loads(env.read_text()) if env.is_file() else None, "parts": parts}
    lora, qlora = ((parts.get(k) or {}).get("figures") or {} for k in ("train_lora", "train_qlora"))
    if "peak_memory_mb" in lora and "peak_memory_mb" in qlora:  # issue 16's goal: QLoRA at most 0.6x of LoRA's peak
        ratio = qlora["peak_memory_mb"]["tunegate"] / lora["peak_memory_mb"]["tunegate"]
        out["qlora_vs_lora_peak_memory"] = {"ratio": round(ratio, 3), "goal<=0.6": ratio <= 0.6}
    (folder / "gpu_check.json").write_text(json.dumps(out, indent=2, default=str) + "\n")
    lines = [f"gpu_check: {out['env'].get('device') if out['env'] else 'unknown device'}"]
    for name, p in parts.items():
        lines.append(f"{name:14} {p['status']:18} {p['seconds']:7.1f} s  {headline(name, p['figures'])}")
    if "qlora_vs_lora_peak_memory" in out:
        lines.append(f"qlora/lora peak memory (tunegate): {out['qlora_vs_lora_peak_memory']}")
    text = "\n".join(lines) + "\n"
    (folder / "summary.txt").write_text(text)
    print(text, end="")
    return out


def headline(name: str, f: dict | None) -> str:
    if not f:
        return ""
    if name.startswith("train"):
        mfu = f.get("mfu") or {}
        return (f"tokens/s {f['tokens_per_s']}  ratio {f['throughput_ratio']}  peak MB {f['peak_memory_mb']}  "
                f"eval loss diff {f['eval_loss_rel_diff']}  MFU {mfu}  goals {f['goals']}")  # fmt: skip
    if name == "eval":
        return f"new tokens/s {f['new_tokens_per_s']}  ratio {f.get('ratio')}  identical {f.get('identical_outputs')}"
    return json.dumps(f, default=str)[:300]


def main(argv: list[str]) -> int:
    verb, *rest = argv
    if verb == "pack":
        pack(Path(rest[0]))
    elif verb == "model":
        print(model(Path(rest[0]), Path(rest[1])))  # the folder to use, alone on stdout
    elif verb == "env":
        env(Path(rest[0]))
    elif verb == "tiny":
        tiny(Path(rest[0]))
    elif verb == "summary":
        summary(Path(rest[0]))
    else:
        raise SystemExit(f"gpu_kit: unknown verb {verb}; use pack, model, tiny or summary")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
