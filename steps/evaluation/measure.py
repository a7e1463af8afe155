"""What evaluate measures on one model: the eval set, loading a trained folder, and the metric row.

The eval set comes from the test split (the model's task) and the held-out general set (what it
must not forget). A conversation's prompt is everything before its last model turn and the
reference is that turn; held-out questions without a reference are still generated (for the judge
and the safety rules) but do not count toward reference metrics.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from steps.core.schema import MODEL_ROLES
from steps.evaluation.config import EvaluateConfig
from steps.models.generation import Conversation, chat_nll, generate_chat, perplexity_of


@dataclasses.dataclass(frozen=True)
class Item:
    id: str
    prompt: list[dict[str, Any]]
    reference: str | None
    conversation: list[dict[str, Any]] | None  # the whole conversation, for perplexity


@dataclasses.dataclass(frozen=True)
class EvalSet:
    test: list[Item]
    heldout: list[Item]
    preference: list[dict[str, Any]]  # test preference records (reward-model accuracy)
    labelled: list[dict[str, Any]]  # test cls records (classifier metrics)


def _item(rec: dict[str, Any], first_turn: bool = False) -> Item | None:
    msgs = [{"role": m["role"], "content": m["content"]} for m in rec.get("messages") or []]
    if rec["kind"] == "preference" and rec.get("chosen"):
        whole = msgs + [{"role": m["role"], "content": m["content"]} for m in rec["chosen"]]
    else:
        whole = msgs
    turns = [k for k, m in enumerate(whole) if m["role"] in MODEL_ROLES]
    if not turns:
        return Item(rec["id"], whole, None, None) if whole and whole[-1]["role"] == "user" else None
    last = turns[0] if first_turn else turns[-1]
    return Item(rec["id"], whole[:last], str(whole[last]["content"]), whole[: last + 1])


def build_eval_set(data_dir: Path, max_examples: int, max_heldout: int | None = None) -> EvalSet:
    """The items to score: the first ``max_examples`` of DATA_DIR/test.jsonl and ``max_heldout`` of heldout.jsonl.

    Held-out conversations are cut at their first answer: a general question and its reference
    answer measure forgetting as well as a whole multi-turn exchange, at a fraction of the tokens.
    """
    from steps.core.io import read_jsonl

    def rows(name: str) -> list[dict[str, Any]]:
        path = Path(data_dir) / f"{name}.jsonl"
        return read_jsonl(path) if path.is_file() else []

    test, heldout = rows("test"), rows("heldout")
    gen_kinds = ("sft", "preference")
    test_items = [i for r in test if r["kind"] in gen_kinds and (i := _item(r)) and i.reference is not None]
    held_items = [i for r in heldout if r["kind"] == "sft" and (i := _item(r, first_turn=True))]
    # Referenced held-out questions first, so a cap keeps the ones forgetting is measured on.
    held_items.sort(key=lambda i: i.reference is None)
    return EvalSet(
        test=test_items[:max_examples],
        heldout=held_items[: max_examples if max_heldout is None else max_heldout],
        preference=[r for r in test if r["kind"] == "preference" and r.get("chosen") and r.get("rejected")],
        labelled=[r for r in test if r["kind"] == "cls"],
    )


def load_trained(model_dir: Path | str) -> tuple[Any, Any]:
    """(model, tokenizer) of a trained folder in fp32 for evaluation: a full model, or an adapter on its base.

    A QLoRA adapter is evaluated on the base in full precision, the way it is merged and served.
    """
    from steps.models.folders import load_model_folder
    from steps.models.loading import load_model, tokenizer_from

    tokenizer = tokenizer_from(model_dir)
    model = load_model_folder(model_dir, load_model)
    return model.eval(), tokenizer


def score_generative(
    model: Any, tokenizer: Any, evalset: EvalSet, cfg: EvaluateConfig, probes: Sequence[Conversation] = ()
) -> tuple[dict[str, Any], dict[str, list[str]], dict[str, list]]:
    """Perplexities, generated answers and per-item (NLL, tokens) of one causal LM; reference metrics are added by the caller.

    The test, held-out and probe prompts are answered in one rolling batch (a row that stops makes room for the
    next prompt), so the batch stays full until the last prompts; outputs["probes"] holds the probes' answers.
    """
    # 4 conversations a forward pass: full-vocabulary logits of 4 x 1024 tokens are already ~0.8 GB in fp32.
    ppl_kw = {"max_length": cfg.max_length, "batch_size": 4}
    items = {
        "test_perplexity": chat_nll(model, tokenizer, [i.conversation for i in evalset.test], **ppl_kw),
        "heldout_perplexity": chat_nll(model, tokenizer, [i.conversation for i in evalset.heldout], **ppl_kw),
    }
    metrics = {name: perplexity_of(values) for name, values in items.items()}
    groups = {"test": [i.prompt for i in evalset.test], "heldout": [i.prompt for i in evalset.heldout], "probes": list(probes)}
    answers = generate_chat(model, tokenizer, [c for g in groups.values() for c in g], max_new_tokens=cfg.max_new_tokens,
                            batch_size=cfg.batch_size)  # fmt: skip
    outputs, start = {}, 0
    for name, prompts in groups.items():
        outputs[name], start = answers[start : start + len(prompts)], start + len(prompts)
    return metrics, outputs, items


def worst_examples(
    evalset: EvalSet, outputs: dict[str, dict[str, list[str]]], per_example: list[dict[str, float]],
    base_per_example: list[dict[str, float]], key: str, n: int,
) -> list[dict[str, Any]]:  # fmt: skip
    """The ``n`` test items where the candidate scored lowest on ``key``, with every model's answer."""
    rows = []
    for k, item in enumerate(evalset.test):
        row = {
            "id": item.id,
            "prompt": "\n\n".join(f"{m['role']}: {m['content']}" for m in item.prompt),
            "reference": item.reference,
            "score": per_example[k].get(key) if per_example else None,
            "base_score": base_per_example[k].get(key) if base_per_example else None,
        }
        row.update({model: outs["test"][k] for model, outs in outputs.items()})
        rows.append(row)
    rows.sort(key=lambda r: (r["score"] is None, r["score"] if r["score"] is not None else 0.0))
    return rows[:n]
