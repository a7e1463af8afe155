"""Data-gate benchmark: synthetic records with planted duplicates and leaks through ingest + validate.

``python bench/bench_data.py [--records 100000] [--seed 0]``

What is measured, all in one run on the same seeded data:

* tunegate: seconds and records/s of ``steps.ingest.run`` and ``steps.validate.run`` (goal:
  100k records through all gates in 60 s or less on 2 cores).
* near-duplicate precision and recall of ``steps.data.dedup.duplicate_groups`` (the grouping ingest
  uses) against the planted truth. Truth groups join planted copies whose exact word-3-gram
  Jaccard (``exact_jaccard`` over ``shingle_hashes``) is >= 0.8; copies under 0.8 are kept as
  hard negatives. Scored on pairs "same group or not", with planted exact duplicates left out
  (they are scored separately as exact recall: same content hash as their source).
* leak recall: planted copies of held-out records that validate's leakage gate reports.
* baseline: naive per-record datasketch (``MinHash(128)``, ``update`` per 3-gram with sha1,
  ``MinHashLSH(0.8)`` insert then query). speedup = baseline seconds / duplicate_groups seconds.
  When the baseline would take over ~3 minutes it runs on a prefix and is extrapolated linearly.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from datasketch import MinHash, MinHashLSH

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from steps import ingest  # noqa: E402
from steps.core.io import read_json, read_jsonl  # noqa: E402
from steps.core.schema import record_text
from steps.data.config import DatasetSpec, IngestConfig
from steps.data.dedup import duplicate_groups, union_groups
from steps.data.load import load_dataset
from steps.data.lsh import exact_jaccard
from steps.data.minhash import minhash_signatures, shingle_hashes, words
from steps.data.splits import SPLITS, load_splits
from steps.gates.config import ValidateConfig
from steps.gates.dedup import content_text, leakage_columns
from steps.gates.records import record_frame

THRESHOLD = 0.8
BASELINE_BUDGET_S = 180.0
SHARES = {"exact": 0.03, "near": 0.05, "far": 0.02, "leak": 0.005}  # of --records; far: planted under 0.8


class Synth:
    """Seeded alpaca records from a Zipf-weighted vocabulary, so unrelated records share few 3-grams."""

    def __init__(self, seed: int, vocab: int = 4000):
        self.rng = np.random.default_rng(seed)
        letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
        self.vocab = sorted({"".join(self.rng.choice(letters, k)) for k in self.rng.integers(2, 10, vocab * 2)})[:vocab]
        p = 1.0 / np.arange(1, len(self.vocab) + 1) ** 1.05
        self.p = p / p.sum()
        self.pool: list[str] = []

    def _words(self, k: int) -> list[str]:
        if len(self.pool) < k:
            self.pool = [self.vocab[i] for i in self.rng.choice(len(self.vocab), 1 << 18, p=self.p)]
        out, self.pool = self.pool[-k:], self.pool[:-k]
        return out

    def record(self) -> dict:
        ins, out = self._words(int(self.rng.integers(5, 15))), self._words(int(self.rng.integers(15, 50)))
        return {"instruction": " ".join(ins).capitalize() + "?", "input": "", "output": " ".join(out) + "."}

    def edit(self, rec: dict, edits: int) -> dict:
        """Replace, insert or delete ``edits`` words of the output."""
        ws = rec["output"].split()
        for _ in range(edits):
            at, op = int(self.rng.integers(0, len(ws))), self.rng.integers(0, 3)
            if op == 0:
                ws[at] = self._words(1)[0]
            elif op == 1:
                ws.insert(at, self._words(1)[0])
            elif len(ws) > 3:
                del ws[at]
        return {**rec, "output": " ".join(ws)}

    def variant(self, rec: dict) -> dict:
        """Same content hash: byte copy, case change or whitespace change."""
        kind = self.rng.integers(0, 3)
        if kind == 1:
            return {**rec, "instruction": rec["instruction"].upper()}
        return {**rec, "output": "  " + rec["output"].replace(" ", "  \n", 3) + " "} if kind == 2 else dict(rec)


def text(rec: dict) -> str:
    return f"{rec['instruction']}\n{rec['output']}"  # steps.core.schema.record_text of an alpaca record


def jaccard(a: dict, b: dict) -> float:
    return float(exact_jaccard(shingle_hashes([text(a), text(b)]), np.array([[0, 1]]))[0])


def generate(n: int, seed: int) -> tuple[list[dict], list[dict], dict]:
    """Train rows, held-out rows and the planted truth (per row: family, role; leaked rows)."""
    g = Synth(seed)
    want = {k: int(n * s) for k, s in SHARES.items()}
    heldout = [g.record() for _ in range(max(100, 2 * want["leak"]))]
    rows = [g.record() for _ in range(n - sum(want.values()))]
    fam, role, src_of = list(range(len(rows))), ["base"] * len(rows), [-1] * len(rows)
    got = Counter()
    while got["near"] < want["near"]:  # 1-2 edits; what lands under 0.8 becomes a hard negative
        src = int(g.rng.integers(0, len(rows)))
        copy = g.edit(rows[src], int(g.rng.integers(1, 3)))
        kind = "near" if jaccard(rows[src], copy) >= THRESHOLD else "far"
        if got[kind] < want[kind]:
            rows.append(copy), fam.append(fam[src]), role.append(kind), src_of.append(src)
            got[kind] += 1
    for _ in range(want["exact"]):
        src = int(g.rng.integers(0, len(rows)))
        rows.append(g.variant(rows[src])), fam.append(fam[src]), role.append("exact"), src_of.append(src)
    for h in g.rng.choice(len(heldout), want["leak"], replace=False).tolist():
        leak = g.edit(heldout[h], 1) if h % 2 else g.variant(heldout[h])
        leak = leak if jaccard(heldout[h], leak) >= THRESHOLD else g.variant(heldout[h])  # a true leak
        rows.append(leak), fam.append(-1), role.append("leak"), src_of.append(-1)
    order = g.rng.permutation(len(rows))
    where = np.argsort(order)  # old index -> new index
    src = [int(where[src_of[i]]) if src_of[i] >= 0 else -1 for i in order]
    return [rows[i] for i in order], heldout, {"family": [fam[i] for i in order], "role": [role[i] for i in order], "source": src}


def truth_groups(texts: list[str], family: list[int]) -> np.ndarray:
    """Connected components of planted pairs whose exact 3-gram Jaccard is >= THRESHOLD."""
    members: dict[int, list[int]] = {}
    for i, f in enumerate(family):
        if f >= 0:
            members.setdefault(f, []).append(i)
    pairs = np.array([(a, b) for m in members.values() for k, a in enumerate(m) for b in m[k + 1 :]]).reshape(-1, 2)
    sim = exact_jaccard(shingle_hashes(texts), pairs) if len(pairs) else np.empty(0)
    return union_groups(len(texts), pairs[sim >= THRESHOLD])


def pair_scores(pred: np.ndarray, truth: np.ndarray, keep: np.ndarray) -> tuple[float, float]:
    """Precision and recall of 'same group' over all pairs of the kept records."""
    c2 = lambda c: sum(v * (v - 1) // 2 for v in c.values())  # noqa: E731
    p, t = pred[keep].tolist(), truth[keep].tolist()
    tp, npred, ntrue = c2(Counter(zip(p, t))), c2(Counter(p)), c2(Counter(t))
    return (tp / npred if npred else 1.0), (tp / ntrue if ntrue else 1.0)


def baseline(texts: list[str]) -> tuple[float, np.ndarray]:
    """The naive loop: seconds, and group labels from the pairs MinHashLSH returns."""
    t0 = time.perf_counter()
    lsh, sketches = MinHashLSH(threshold=THRESHOLD, num_perm=128), []
    for i, t in enumerate(texts):
        m, ws = MinHash(num_perm=128), words(t)
        for k in range(max(len(ws) - 2, 1)):
            m.update(" ".join(ws[k : k + 3]).encode())
        lsh.insert(i, m)
        sketches.append(m)
    pairs = {(min(i, j), max(i, j)) for i, m in enumerate(sketches) for j in lsh.query(m) if j != i}
    seconds = time.perf_counter() - t0
    return seconds, union_groups(len(texts), np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2))


def run_validate(prepared: Path, out: Path) -> tuple[float, dict]:
    """validate.run with its default config: seconds and verdicts; status 'pending' until it imports."""
    try:
        from steps import validate
    except ImportError as exc:
        return 0.0, {"status": f"pending ({exc})"}
    t0 = time.perf_counter()
    result = validate.run(ValidateConfig(), prepared, out)
    seconds = time.perf_counter() - t0
    report = read_json(result.report_path)
    return seconds, {"status": "ran", "passed": result.passed, "gates": {k: g["passed"] for k, g in result.gates.items()},
                     "gate_s": report.get("seconds"), "flagged": leak_flags(validate, prepared)}  # fmt: skip


def leak_flags(validate, prepared: Path) -> set[int]:
    """Rows (meta.row) of train records the leakage gate flags; the report keeps only examples, so this
    reruns validate's own leakage_columns (steps/gates/dedup.py) on the same splits (untimed)."""
    splits = load_splits(prepared, "python -m steps.ingest")
    df = record_frame(splits)
    texts = [content_text(r) for recs in splits.values() for r in recs]
    train, evals = df.index[df.split == "train"], df.index[df.split != "train"]
    leakage_columns(df, train, evals, texts, minhash_signatures(texts), {}, ValidateConfig())
    return set(df.loc[train][df.loc[train, "leaked"] == 1]["row"].astype(int).tolist())


FUZZ_KEYS = ["instruction", "input", "output", "history", "system", "tools", "conversations", "messages", "from", "value",
             "role", "content", "prompt", "chosen", "rejected", "completion", "label", "text", "score"]  # fmt: skip
FUZZ_SHAPES = [("instruction", "output"), ("conversations",), ("messages",), ("prompt", "chosen", "rejected"),
               ("prompt", "completion", "label"), ("messages", "label"), ("text",)]  # fmt: skip


def random_value(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value: scalars, format keys as strings, chat-message-like dicts, lists and dicts of them."""
    kind = rng.randrange(9 if depth < 3 else 5)
    if kind == 0:
        return rng.choice([None, True, False, 0, -1, 2**64, 1.5, float("1e308")])
    if kind in (1, 2):
        return "".join(rng.choice("ab <|>\u00e9\u4e2d\ud83d\ude00\x00\t") for _ in range(rng.randrange(12)))
    if kind == 3:
        return rng.choice(FUZZ_KEYS + ["human", "gpt", "user", "assistant", "system", "tool"])
    if kind == 4:
        return rng.randrange(-5, 5)
    if kind == 5:
        return {rng.choice(["from", "value", "role", "content"]): random_value(rng, depth + 1) for _ in range(rng.randrange(1, 4))}
    if kind == 6:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(FUZZ_KEYS): random_value(rng, depth + 1) for _ in range(rng.randrange(5))}


def random_record(rng: random.Random) -> Any:
    """Mostly rows shaped like a format (its keys, random values) so conversion runs deep; some anything at all."""
    if rng.random() < 0.7:
        keys = list(rng.choice(FUZZ_SHAPES)) + rng.sample(["input", "history", "system", "tools"], rng.randrange(3))
        return {k: random_value(rng) for k in keys}
    return random_value(rng)


def fuzz(n: int, seed: int) -> dict[str, Any]:
    """Read ``n`` random records (files of 200 lines) in every declared format and auto-detection: a crash
    is any exception but a whole-file refusal (FileError, exit 2); accounting is rows = good + quarantined + dropped."""
    from steps.data.errors import FileError
    from steps.data.formats import FORMATS

    rng, tried, crashes, unaccounted, refused = random.Random(seed), 0, 0, 0, 0
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.jsonl"
        for _ in range(max(n // 200, 1)):
            lines = [json.dumps(random_record(rng)).encode() for _ in range(200)]
            path.write_bytes(b"\n".join(lines) + b"\n")
            for fmt in ("auto", *FORMATS):
                try:
                    loaded = load_dataset(DatasetSpec(path=path.name, format=fmt), path.parent, max_record_chars=2_000)
                except FileError:
                    refused += 1
                    continue
                except Exception:  # noqa: BLE001 - counting crashes is the point
                    crashes += 1
                    continue
                tried += loaded.rows
                unaccounted += loaded.rows != len(loaded.good) + len(loaded.bad) + sum(loaded.dropped.values())
    return {"fuzz_records_tried": tried, "fuzz_crashes": crashes, "fuzz_unaccounted_files": unaccounted,
            "fuzz_files_refused_whole": refused, "fuzz_s": round(time.perf_counter() - t0, 1)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fuzz", type=int, default=50_000, help="random records read in every format (0: skip)")
    args = ap.parse_args(argv)
    rows, heldout, planted = generate(args.records, args.seed)
    role, n = planted["role"], len(rows)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, data in (("train.jsonl", rows), ("heldout.jsonl", heldout)):
            (root / name).write_text("".join(json.dumps(r) + "\n" for r in data))
        cfg = IngestConfig(datasets=(DatasetSpec("train.jsonl", "alpaca", "synth"),),
                           heldout=(DatasetSpec("heldout.jsonl", "alpaca"),), leak_threshold=THRESHOLD)  # fmt: skip
        t0 = time.perf_counter()
        ingest.run(cfg, root / "prepared", root)
        t_ingest = time.perf_counter() - t0
        t_val, val = run_validate(root / "prepared", root / "validated")
        split_of = {r["meta"]["row"] - 1: s for s in SPLITS for r in read_jsonl(root / "prepared" / f"{s}.jsonl")}
        good = load_dataset(cfg.datasets[0], root).good
    texts, hashes = [record_text(r) for r in good], [r["meta"]["hash"] for r in good]
    t0 = time.perf_counter()
    pred = duplicate_groups(texts, hashes, THRESHOLD)
    t_dedup = time.perf_counter() - t0
    truth = truth_groups(texts, [f if r != "exact" else -1 for f, r in zip(planted["family"], role)])
    keep = np.array([r != "exact" for r in role])
    precision, recall = pair_scores(pred, truth, keep)
    exact = [(i, planted["source"][i]) for i, r in enumerate(role) if r == "exact"]
    exact_recall = sum(hashes[i] == hashes[j] for i, j in exact) / max(len(exact), 1)
    spans: dict[int, set[str]] = {}
    for i in range(n):  # a truth group in two splits is a near-copy leaking from train to test
        if i in split_of:  # not an exact copy ingest dropped (it keeps the first copy of each content)
            spans.setdefault(int(truth[i]), set()).add(split_of[i])
    split_leaks = sum(len(s) > 1 for s in spans.values())
    leaks_in_train = {i + 1 for i, r in enumerate(role) if r == "leak" and split_of.get(i) == "train"}
    flagged = val.get("flagged")

    pilot = min(n, 1000)
    t_pilot, _ = baseline(texts[:pilot])
    k = n if t_pilot * n / pilot <= BASELINE_BUDGET_S else max(pilot, int(n * BASELINE_BUDGET_S * 0.8 / (t_pilot * n / pilot)))
    t_base_k, base_pred = baseline(texts[:k])
    t_base = t_base_k * n / k
    b_precision, b_recall = pair_scores(base_pred, truth[:k], keep[:k])
    figures = {
        "records": n, "heldout": len(heldout), "planted": dict(Counter(role)),
        "ingest_s": round(t_ingest, 2), "validate_s": round(t_val, 2), "total_s": round(t_ingest + t_val, 2),
        "ingest_rps": round(n / t_ingest), "validate_rps": round(n / t_val) if t_val else None,
        "total_rps": round(n / (t_ingest + t_val)), "validate": val.get("status"), "validate_passed": val.get("passed"),
        "exact_dup_recall": round(exact_recall, 4), "near_dup_precision": round(precision, 4), "near_dup_recall": round(recall, 4),
        "truth_groups_split_across_splits": split_leaks, "leaks_in_train": len(leaks_in_train),
        "leak_recall": round(len(flagged & leaks_in_train) / max(len(leaks_in_train), 1), 4) if flagged is not None else None,
        "flagged_not_planted_leaks": dict(Counter(role[r - 1] for r in flagged - leaks_in_train)) if flagged is not None else None,
        "validate_gates": val.get("gates"), "validate_gate_s": val.get("gate_s"),
        "dedup_s": round(t_dedup, 3), "baseline_s": round(t_base, 2), "baseline_records": k,
        "baseline_extrapolated": k < n, "speedup_vs_baseline": round(t_base / t_dedup, 1),
        "baseline_precision": round(b_precision, 4), "baseline_recall": round(b_recall, 4),
        **(fuzz(args.fuzz, args.seed) if args.fuzz else {}),
    }  # fmt: skip
    for key, value in figures.items():
        print(f"{key:34} {value}")
    out = Path(__file__).parent / "results" / "bench_data.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    print(json.dumps(figures, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
