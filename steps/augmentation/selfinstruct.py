"""Self-Instruct (Wang et al., 2023): new instruction-output pairs from seed tasks, via an OpenAI-compatible endpoint.

Each request shows ``seeds_per_prompt`` single-turn train conversations (sampled with the
step's seed) and asks for ``tasks_per_prompt`` new tasks as a JSON list of
``{"instruction", "input", "output"}``. A task is kept when it is well formed (instruction of
``min_words``..``max_words`` words, non-empty output, nothing a text model cannot do: images,
files, links) and novel: its instruction's ROUGE-L F1 against every seed instruction and every
task kept so far stays below ``max_rouge_l`` (0.7 in the paper). Kept tasks become sft records
of dataset ``self_instruct`` tagged ``meta.augment = self_instruct``, ``meta.generated = true``
and ``meta.seeds`` (the seed ids); the step's guard rails (duplicate, leak, cap) then judge them.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Sequence
from typing import Any

from steps.augmentation.config import SelfInstructConfig
from steps.augmentation.methods import Candidate
from steps.augmentation.translate import TranslateError
from steps.core.schema import content_hash, make_record
from steps.data.minhash import words

PROMPT = ("You write tasks for training an assistant. Here are {n} example tasks:\n\n{examples}\n\n"
          "Write {k} new tasks in the same domain and style, each different from the examples and from each other. "
          'Answer with a JSON list only: [{{"instruction": "...", "input": "", "output": "..."}}, ...]')
_UNDOABLE = re.compile(r"\b(image|picture|photo|graph|diagram|video|audio|file|attachment|url|link)s?\b", re.I)


def rouge_l(a: Sequence[str], b: Sequence[str]) -> float:
    """ROUGE-L F1 of two token lists: longest common subsequence over their lengths."""
    if not a or not b:
        return 0.0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    return 0.0 if lcs == 0 else 2 * lcs / (len(a) + len(b))


def parse_tasks(reply: str) -> list[Any]:
    """The JSON list in a reply (code fences and text around it allowed); [] when there is none."""
    start, end = reply.find("["), reply.rfind("]")
    if start < 0 or end <= start:
        return []
    try:
        tasks = json.loads(reply[start : end + 1])
    except json.JSONDecodeError:
        return []
    return tasks if isinstance(tasks, list) else []


def task_problem(task: Any, min_words: int, max_words: int) -> str:
    """Why a generated task is malformed ("" when it is fine)."""
    if not isinstance(task, dict) or not isinstance(task.get("instruction"), str) or not isinstance(task.get("output"), str):
        return "not an object with string instruction and output"
    n = len(words(task["instruction"]))
    if not min_words <= n <= max_words:
        return f"instruction has {n} words; expected {min_words} to {max_words}"
    if not task["output"].strip():
        return "empty output"
    if not isinstance(task.get("input", ""), str):
        return "input is not a string"
    if _UNDOABLE.search(task["instruction"]):
        return "asks for an image, file or link a text model cannot handle"
    return ""


def seed_pool(train: Sequence[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(id, instruction, output) of single-turn sft records (a system turn aside): the seed tasks."""
    out = []
    for r in train:
        turns = [m for m in r.get("messages") or () if m["role"] != "system"] if r.get("kind") == "sft" else []
        if [m["role"] for m in turns] == ["user", "assistant"]:
            out.append((r["id"], turns[0]["content"], turns[1]["content"]))
    return out


def generate(cfg: SelfInstructConfig, train: Sequence[dict[str, Any]], seed: int) -> list[Candidate]:
    """Ask the endpoint ``cfg.num_prompts`` times; return every task as a candidate (malformed ones flagged)."""
    from openai import OpenAI, OpenAIError

    seeds = seed_pool(train)
    if not seeds:
        return []
    client = OpenAI(base_url=cfg.base_url, api_key=os.environ.get(cfg.api_key_env) or "EMPTY", timeout=cfg.timeout_s,
                    max_retries=2)
    rng = random.Random(f"{seed}:self_instruct")
    known = [words(instruction) for _, instruction, _ in seeds]
    out: list[Candidate] = []
    for p in range(cfg.num_prompts):
        shown = rng.sample(seeds, min(cfg.seeds_per_prompt, len(seeds)))
        examples = "\n\n".join(f"Task {i + 1}:\nInstruction: {instruction}\nOutput: {output}"
                               for i, (_, instruction, output) in enumerate(shown))
        try:
            reply = client.chat.completions.create(
                model=cfg.model, temperature=cfg.temperature, seed=seed + p,
                messages=[{"role": "user", "content": PROMPT.format(n=len(shown), examples=examples, k=cfg.tasks_per_prompt)}])
        except OpenAIError as exc:
            raise TranslateError(f"augment.self_instruct: endpoint {cfg.base_url} model {cfg.model}: {exc}; check that "
                                 "the server is up and base_url/model are right") from exc
        for task in parse_tasks(reply.choices[0].message.content or "")[: cfg.tasks_per_prompt]:
            out.append(_candidate(task, len(out), cfg, [sid for sid, _, _ in shown], known))
    return out


def _candidate(task: Any, row: int, cfg: SelfInstructConfig, seed_ids: list[str], known: list[list[str]]) -> Candidate:
    """A generated task as a candidate; ``problem`` says why it is malformed or not novel."""
    problem = task_problem(task, cfg.min_words, cfg.max_words)
    ok = not problem
    task = task if ok else {"instruction": str(task.get("instruction", "")) if isinstance(task, dict) else "",
                            "output": str(task.get("output", "")) if isinstance(task, dict) else str(task)}
    user = task["instruction"].strip() + (f"\n\n{task['input'].strip()}" if (task.get("input") or "").strip() else "")
    rec = make_record("sft", dataset="self_instruct", source=f"{cfg.base_url}#{cfg.model}", row=row, fmt="self_instruct",
                      messages=[{"role": "user", "content": user}, {"role": "assistant", "content": task["output"].strip()}])
    rec["meta"].update(augment="self_instruct", augment_op=cfg.model, generated=True, seeds=seed_ids, origin=None)
    rec["meta"]["hash"] = content_hash(rec)
    cand = Candidate(rec, None, "self_instruct", cfg.model, [("messages", 0)], problem)
    if ok:
        mine = words(task["instruction"])
        best = max((rouge_l(mine, k) for k in known), default=0.0)
        if best >= cfg.max_rouge_l:
            cand.duplicate = f"not novel: ROUGE-L {best:.2f} >= max_rouge_l {cfg.max_rouge_l} with a seed or earlier task"
        else:
            known.append(mine)
    return cand
