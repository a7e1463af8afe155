"""The validate step's per-record feature columns: what the suites under ``expectations/`` judge.

``load_splits`` and ``record_frame`` give one row per record of every split; each
``*_columns`` function adds that gate's columns to the frame (format checks and
token counts, exact and near duplicates in train, leakage into eval/held-out text,
PII findings) and notes why a record fails in ``details`` ((column, row) ->
sentence) for report.json. Thresholds come from ``ValidateConfig``; the verdicts
are the suites' alone. steps/validate.py runs these in order.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from steps import _dedup, _pii
from steps._config import ConfigError
from steps._io import read_jsonl
from steps._schema import KINDS, MODEL_ROLES, ROLES, content_hash, normalize

if TYPE_CHECKING:
    from steps.validate import ValidateConfig

SPLITS = ("train", "validation", "test")  # required; heldout.jsonl is optional
EXAMPLES = 5  # failing examples per check kept in report.json (the terminal shows 3 per gate)


class InputError(ConfigError):
    """PREPARED_DIR lacks a split file; the message says which and how to make it."""


# ---------------------------------------------------------------- inputs


def load_splits(prepared_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """train, validation, test (required) and heldout (when present), in file order."""
    splits = {}
    for name in (*SPLITS, "heldout"):
        path = prepared_dir / f"{name}.jsonl"
        if path.is_file():
            splits[name] = read_jsonl(path)
        elif name != "heldout":
            raise InputError(f"{path}: missing; run `python -m steps.ingest {prepared_dir}` first")
    return splits


def record_frame(splits: dict[str, list[dict[str, Any]]]) -> pd.DataFrame:
    """One row per record: split, line in its file, and where it came from."""
    rows = []
    for name, recs in splits.items():
        for line, rec in enumerate(recs, 1):
            meta = rec.get("meta") if isinstance(rec, dict) and isinstance(rec.get("meta"), dict) else {}
            rows.append((name, line, str(meta.get("dataset")), str(meta.get("source")), meta.get("row"),
                         str(rec.get("id") if isinstance(rec, dict) else None), str(meta.get("hash"))))
    return pd.DataFrame(rows, columns=["split", "line", "dataset", "source", "row", "id", "hash"])


def load_tokenizer(cfg: ValidateConfig) -> Any:
    """``cfg.tokenizer`` when set, else the base model's (steps._model converts and caches it)."""
    if cfg.tokenizer:
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(cfg.tokenizer)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"validate.tokenizer: cannot load {cfg.tokenizer!r} ({exc}); "
                              "give a tokenizer folder or hub id, or remove the key to use base_model") from exc
    from steps._model import load_tokenizer as load_base

    return load_base(cfg.base_model)


# ---------------------------------------------------------------- format


def _turns(rec: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = rec.get(key)
    return value if isinstance(value, list) else []


def _schema_problem(rec: Any) -> str:
    if not isinstance(rec, dict):
        return f"record is a {type(rec).__name__}, not an object"
    if rec.get("kind") not in KINDS:
        return f"kind {rec.get('kind')!r} is not one of {', '.join(KINDS)}"
    for key in ("messages", "chosen", "rejected", "completion"):
        value = rec.get(key)
        if value is None and key != "messages":
            continue
        if not isinstance(value, list):
            return f"{key} must be a list of {{role, content}}, got {type(value).__name__}"
        for i, m in enumerate(value):
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                return f"{key}[{i}] must be {{role in {'/'.join(ROLES)}, content: str}}, got {str(m)[:60]!r}"
    need = {"preference": ("chosen", "rejected"), "feedback": ("completion",)}.get(rec["kind"], ())
    for key in need:
        if rec.get(key) is None:
            return f"a {rec['kind']} record needs {key}"
    if rec["kind"] in ("text", "cls") and not isinstance(rec.get("text"), str):
        return f"a {rec['kind']} record needs text (a string)"
    meta = rec.get("meta")
    if not isinstance(meta, dict) or any(k not in meta for k in ("dataset", "source", "row", "hash")):
        return "meta must hold dataset, source, row and hash"
    return ""


# Which role may follow which (None: the start). System only first; function_call -> tool.
_NEXT = {None: ("system", "user"), "system": ("user",), "user": ("assistant", "function_call"),
         "assistant": ("user",), "function_call": ("tool",), "tool": ("assistant", "function_call")}


def _role_problem(seq: list[tuple[str, str]]) -> str:
    prev = None
    for name, role in seq:
        if role not in _NEXT[prev]:
            after = f"after {prev}" if prev else "first"
            return f"{name} is {role} {after}; expected {' or '.join(_NEXT[prev])}"
        prev = role
    return ""


def format_problems(rec: dict[str, Any]) -> dict[str, str]:
    """Failed format checks of one record: column -> what is wrong (empty when it is fine)."""
    schema = _schema_problem(rec)
    if schema:
        return {"schema_ok": schema}
    out = {}
    kind, msgs = rec["kind"], rec["messages"]
    named = {k: [(f"{k}[{i}]", m) for i, m in enumerate(_turns(rec, k))] for k in ("messages", "chosen", "rejected", "completion")}
    empty = [n for turns in named.values() for n, m in turns if not m["content"].strip()]
    if empty:
        out["nonempty_ok"] = f"{empty[0]} is empty" + (f" (and {len(empty) - 1} more)" if len(empty) > 1 else "")
    elif kind in ("text", "cls") and not rec["text"].strip():
        out["nonempty_ok"] = "text is empty"
    tails = {"preference": ("chosen", "rejected"), "feedback": ("completion",)}.get(kind, (None,))
    if msgs or kind not in ("text", "cls"):
        for tail in tails:
            seq = [(n, m["role"]) for n, m in named["messages"] + (named[tail] if tail else [])]
            if problem := _role_problem(seq):
                out["roles_ok"] = problem
                break
    if kind == "sft" and not any(m["role"] in MODEL_ROLES for m in msgs):
        out["learnable_ok"] = "no assistant turn to learn from"
    if kind == "preference":
        chosen, rejected = rec["chosen"], rec["rejected"]
        if not chosen or not rejected:
            out["pair_ok"] = f"{'chosen' if not chosen else 'rejected'} is empty"
        elif [(m["role"], normalize(m["content"])) for m in chosen] == [(m["role"], normalize(m["content"])) for m in rejected]:
            out["pair_ok"] = "chosen and rejected are the same after normalisation"
    if kind == "feedback" and not isinstance(rec.get("label"), bool):
        out["label_ok"] = f"label must be true or false, got {rec.get('label')!r}"
    if kind == "cls" and rec.get("label") is None:
        out["label_ok"] = "a cls record needs a label"
    return out


def format_columns(df: pd.DataFrame, records: list[Any], details: dict[tuple[str, int], str]) -> None:
    """Add one boolean column per format check (True: fine) and note each failure's detail."""
    columns = ("schema_ok", "nonempty_ok", "roles_ok", "learnable_ok", "pair_ok", "label_ok")
    ok = {c: np.ones(len(df), dtype=bool) for c in columns}
    heldout = (df["split"] == "heldout").to_numpy()
    for i, rec in enumerate(records):
        for col, detail in format_problems(rec).items():
            if col == "learnable_ok" and heldout[i]:
                continue  # the held-out set may hold bare prompts: it is never trained on
            ok[col][i] = False
            details[(col, i)] = detail
    for col in columns:
        df[col] = ok[col]


def count_tokens(records: list[Any], well_formed: np.ndarray, tokenizer: Any, cfg: ValidateConfig) -> np.ndarray:
    """Tokens per record: chat template for message records, plain text for text/cls; NaN when malformed.

    Exact for every record that could break a bound. The chat template's own
    tokens are counted once per distinct role sequence (rendered with empty
    contents) and added to the contents' tokens, which equals tokenising the
    rendered conversation when the template puts a special token or newline at
    each turn boundary (ChatML, Llama, Mistral, ...); ``tools`` schemas are not
    counted. Unless ``cfg.exact_tokens``, a record whose bounds settle it is not
    tokenised: a token covers at least one byte (plus one prefix token per turn)
    and each whitespace-separated word is at least one token, so such a record
    keeps its byte bound, which the check judges the same way.
    """
    contents: dict[str, int] = {}
    seqs: list[list[tuple[tuple[str, ...], list[int]]]] = []  # per record: (roles, content ids) per variant
    for rec, ok in zip(records, well_formed.tolist()):
        if not ok:
            seqs.append([])
        elif rec["kind"] in ("text", "cls") and not rec["messages"]:
            seqs.append([((), [contents.setdefault(rec["text"], len(contents))])])
        else:
            tails = {"preference": ("chosen", "rejected"), "feedback": ("completion",)}.get(rec["kind"], (None,))
            turns = [rec["messages"] + (rec.get(tail) or [] if tail else []) for tail in tails]
            seqs.append([(tuple(m["role"] for m in ts), [contents.setdefault(m["content"], len(contents)) for m in ts])
                         for ts in turns])
    texts = list(contents)
    upper = np.fromiter((len(t.encode("utf-8")) + 1 for t in texts), np.int64, len(texts))
    lower = np.fromiter((len(t.split(None, cfg.min_tokens)) for t in texts), np.int64, len(texts))
    overhead: dict[tuple[str, ...], int] = {}
    bound = np.full(len(seqs), np.nan)
    unsure = []
    for i, variants in enumerate(seqs):
        if variants:
            extra = [_overhead(tokenizer, roles, overhead) for roles, _ in variants]
            hi = max(e + int(upper[ids].sum()) for e, (_, ids) in zip(extra, variants))
            lo = min(e + int(lower[ids].sum()) for e, (_, ids) in zip(extra, variants))
            bound[i] = hi
            if cfg.exact_tokens or hi > cfg.max_tokens or lo < cfg.min_tokens:
                unsure.append(i)
    need = sorted({c for i in unsure for _, ids in seqs[i] for c in ids})
    exact = np.zeros(len(texts), dtype=np.int64)
    exact[need] = _lengths(tokenizer, [texts[c] for c in need])
    for i in unsure:
        bound[i] = max(overhead[roles] + int(exact[ids].sum()) for roles, ids in seqs[i])
    return bound


def _lengths(tokenizer: Any, texts: list[str]) -> np.ndarray:
    """Token count of each text, without special tokens, in one batch call."""
    if not texts:
        return np.zeros(0, dtype=np.int64)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        encode = getattr(backend, "encode_batch_fast", None) or backend.encode_batch
        return np.fromiter((len(e) for e in encode(texts, add_special_tokens=False)), np.int64, len(texts))
    return np.array([len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]], dtype=np.int64)


def _overhead(tokenizer: Any, roles: tuple[str, ...], cache: dict[tuple[str, ...], int]) -> int:
    """Tokens the chat template adds around turns with these roles (0 for plain text)."""
    if roles not in cache:
        if not roles:
            cache[roles] = 0
        else:
            conv = [{"role": r, "content": ""} for r in roles]
            try:
                rendered = tokenizer.apply_chat_template(conv, tokenize=False)
            except Exception:  # no template, or it rejects these roles: count "role:\n" per turn
                rendered = "".join(f"{r}:\n" for r in roles)
            cache[roles] = int(_lengths(tokenizer, [rendered])[0])
    return cache[roles]


# ---------------------------------------------------------------- dedup and leakage


def content_text(rec: Any) -> str:
    """A record's text without system turns: a shared system prompt is neither a duplicate nor a leak."""
    if not isinstance(rec, dict):
        return ""
    parts = [m["content"] for key in ("messages", "chosen", "rejected", "completion") for m in _turns(rec, key)
             if isinstance(m, dict) and m.get("role") != "system" and isinstance(m.get("content"), str)]
    if isinstance(rec.get("text"), str):
        parts.append(rec["text"])
    return "\n".join(parts)


def _where(df: pd.DataFrame, i: int) -> str:
    r = df.loc[i]
    return f"{r.split}.jsonl:{r.line} (dataset {r.dataset}, row {r.row}, id {r.id})"


def dedup_columns(df: pd.DataFrame, train: pd.Index, sigs: np.ndarray, details: dict, cfg: ValidateConfig) -> None:
    """exact_dup / near_dup: 1 for each train record after the first of its group."""
    group = _dedup.exact_groups(df.loc[train, "hash"].tolist())  # position of the first record with that hash
    exact = group != np.arange(len(train))
    df["exact_dup"] = 0
    df.loc[train[exact], "exact_dup"] = 1
    for k in np.flatnonzero(exact)[: EXAMPLES * 4]:
        details[("exact_dup", train[k])] = f"same content (meta.hash) as {_where(df, train[group[k]])}"
    reps = train[~exact]  # near-duplicates among distinct contents only
    pairs = _dedup.candidate_pairs(sigs[reps], cfg.near_dup_threshold) if len(reps) > 1 else np.empty((0, 2), int)
    label = _dedup.union_groups(len(reps), pairs)
    near = label != np.arange(len(reps))
    df["near_dup"] = 0
    df.loc[reps[near], "near_dup"] = 1
    for k in np.flatnonzero(near)[:EXAMPLES * 4]:
        sim = float(_dedup.similarity(sigs[reps[k]], sigs[reps[label[k]]]))
        details[("near_dup", reps[k])] = f"near-copy (Jaccard ~{sim:.2f}) of {_where(df, reps[label[k]])}"


def _unique_rows(sigs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct signature rows and each row's position among them (a 64-bit row digest as the key)."""
    key = np.full(len(sigs), 0xCBF29CE484222325, dtype=np.uint64)
    for j in range(sigs.shape[1]):  # FNV-1a over the slots: 128 vector ops, not a sort of 512-byte rows
        key = (key ^ sigs[:, j].astype(np.uint64)) * np.uint64(0x100000001B3)
    inverse, uniques = pd.factorize(key)
    first = np.zeros(len(uniques), dtype=np.int64)
    first[inverse[::-1]] = np.arange(len(sigs))[::-1]
    return sigs[first], inverse


def near_leaks(train_sigs: np.ndarray, eval_sigs: np.ndarray, threshold: float) -> dict[int, tuple[int, float]]:
    """Train row -> (eval row, estimated Jaccard) of its closest eval near-duplicate at ``threshold``."""
    # Identical signatures collapse first, so a bucket of copies stays one row for the LSH.
    tu, tinv = _unique_rows(train_sigs)
    eu, einv = _unique_rows(eval_sigs)
    pairs = _dedup.cross_pairs(tu, eu, threshold)
    if not len(pairs):
        return {}
    sim = _dedup.similarity(tu[pairs[:, 0]], eu[pairs[:, 1]])
    best = pd.DataFrame({"t": pairs[:, 0], "e": pairs[:, 1], "s": sim}).sort_values("s").groupby("t").last()
    first_eval = pd.Series(np.arange(len(eval_sigs))).groupby(einv).first()  # a representative eval row
    found = pd.Series(np.arange(len(train_sigs)))[pd.Series(tinv).isin(best.index).to_numpy()]
    return {int(k): (int(first_eval[best.e[tinv[k]]]), float(best.s[tinv[k]])) for k in found}


def leakage_columns(df: pd.DataFrame, train: pd.Index, evals: pd.Index, texts: list[str], sigs: np.ndarray,
                    details: dict, cfg: ValidateConfig) -> None:
    """leaked: 1 for a train record that near-duplicates or shares many n-grams with eval/held-out text."""
    df["leak_jaccard"], df["ngram_overlap"], df["leaked"] = 0.0, 0.0, 0
    if len(train) == 0 or len(evals) == 0:
        return
    partner = near_leaks(sigs[train], sigs[evals], cfg.leak_threshold)
    near = np.zeros(len(train), dtype=bool)
    near[list(partner)] = True
    df.loc[train[near], "leak_jaccard"] = [partner[k][1] for k in np.flatnonzero(near)]
    # Word n-grams: the fraction of a train record's n-grams found anywhere in eval/held-out text.
    t_hash, t_off = _dedup.shingle_hashes([texts[i] for i in train], cfg.ngram)
    e_hash, e_off = _dedup.shingle_hashes([texts[i] for i in evals], cfg.ngram)
    shared = pd.Series(t_hash).isin(e_hash).to_numpy()  # a hash table: 10x np.isin's sort at 100k records
    overlap = np.add.reduceat(shared.astype(np.int64), t_off[:-1]) / np.diff(t_off)
    df.loc[train, "ngram_overlap"] = overlap
    many = overlap > cfg.max_ngram_overlap
    leaked = (near | many) & np.array([bool(texts[i].strip()) for i in train])  # empty text fails format instead
    df.loc[train[leaked], "leaked"] = 1
    owner = np.repeat(np.arange(len(evals)), np.diff(e_off))  # eval row of each eval n-gram
    for k in np.flatnonzero(leaked)[: EXAMPLES * 4]:
        why = []
        if near[k]:
            j, sim = partner[k]
            why.append(f"near-duplicate (Jaccard ~{sim:.2f}) of {_where(df, evals[j])}")
        if many[k]:
            source = np.bincount(owner[pd.Series(e_hash).isin(t_hash[t_off[k] : t_off[k + 1]]).to_numpy()]).argmax()
            why.append(f"{overlap[k]:.0%} of its word {cfg.ngram}-grams appear in eval text, "
                       f"most in {_where(df, evals[source])}")
        details[("leaked", train[k])] = "; ".join(why)


# ---------------------------------------------------------------- PII


def _fields(rec: dict[str, Any]):
    """(field name, container, key) of every string a record carries."""
    for key in ("messages", "chosen", "rejected", "completion"):
        for i, m in enumerate(_turns(rec, key)):
            if isinstance(m, dict) and isinstance(m.get("content"), str):
                yield f"{key}[{i}].content", m, "content"
    if isinstance(rec.get("text"), str):
        yield "text", rec, "text"


def pii_columns(df: pd.DataFrame, records: list[Any], mask: bool) -> tuple[list[dict[str, Any]], set[str]]:
    """pii_findings per record; returns every finding (type, location, masked snippet, never the value).

    With ``mask``, findings are replaced by placeholders in the records themselves
    (and meta.hash recomputed), so the written splits carry masked text; the
    second value names the splits that changed.
    """
    where, texts = [], []
    for i, rec in enumerate(records):
        if isinstance(rec, dict):
            for fname, holder, key in _fields(rec):
                where.append((i, fname, holder, key))
                texts.append(holder[key])
    counts = np.zeros(len(df), dtype=np.int64)
    findings: list[dict[str, Any]] = []
    changed = set()
    for t, found in sorted(_pii.scan_many(texts).items()):
        i, fname, holder, key = where[t]
        rec, r = records[i], df.loc[i]
        counts[i] += len(found)
        findings += [{"type": f.type, "file": f"{r.split}.jsonl", "line": int(r.line), "dataset": r.dataset,
                      "source": r.source, "row": r.row, "id": r.id, "field": fname, "start": f.start, "end": f.end,
                      "snippet": _pii.snippet(holder[key], f, found)} for f in found]
        if mask:
            holder[key] = _pii.mask(holder[key], found)
            changed.add(i)
    for i in changed:
        if isinstance(records[i].get("meta"), dict) and records[i].get("kind") in KINDS:
            records[i]["meta"]["hash"] = content_hash(records[i])
    df["pii_findings"] = counts
    return findings, set(df.split.iloc[sorted(changed)])
