"""Validated canonical records as Hugging Face datasets, one builder per kind of training stage.

SFT and continued pre-training get pre-tokenized ``input_ids`` and ``labels`` (-100 = no loss),
which TRL's SFTTrainer packs (``packing=True``, padding-free) as they are. Preference, KTO and
online-RL stages get TRL's conversational columns (``prompt``, ``chosen``, ``rejected``,
``completion``, ``label``) and TRL renders them with the same chat template. Every message goes
through ``steps.models.template.to_chat``, so function_call turns are assistant turns everywhere.

Too-long SFT records are truncated from the end to ``max_length`` when at least one trained
token survives (the early turns of a long conversation are still good data); a record whose
first trained token lies beyond ``max_length`` is dropped. Both are counted in the stats.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steps.core.io import read_jsonl
from steps.core.schema import MODEL_ROLES
from steps.data.splits import SPLITS
from steps.models.template import end_of_turn_id, render_with_mask, to_chat

if TYPE_CHECKING:  # datasets costs a second to import: loaded where a dataset is built
    from datasets import Dataset

IGNORE = -100  # label of a token that is not learned from (the collators and loss skip it)
_NEEDS = {
    "sft": "sft records (conversations with an assistant turn)",
    "pt": "text records (plain text for continued pre-training)",
    "cls": "cls records (text with a label)",
    "preference": "preference records (prompt/chosen/rejected)",
    "kto": "feedback records (prompt/completion/label) or preference records",
    "prompt": "sft or preference records to take prompts from",
}


class DataError(ValueError):
    """Data that cannot feed a stage; the message names the stage, the split and the fix."""


def read_split(data_dir: Path, split: str) -> list[dict[str, Any]]:
    """The canonical records of one split (``train``, ``validation`` or ``test``) from ``data_dir``.

    Raises:
        DataError: the split name is unknown or its file is missing.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}'; expected one of {', '.join(SPLITS)}")
    path = Path(data_dir) / f"{split}.jsonl"
    if not path.is_file():
        raise DataError(f"{path} not found; run `tunegate validate` first (it writes {Path(data_dir)}/{split}.jsonl)")
    return read_jsonl(path)


def require(rows: list[Any], stage: str, needs: str, split: str) -> None:
    """Raise a DataError naming the stage and the fix when ``rows`` is empty."""
    if not rows:
        raise DataError(
            f"stage {stage} needs {_NEEDS[needs]}; the {split} split has none; "
            f"add such a dataset to ingest.datasets in params.yaml, or set train.stage to one that fits the data"
        )


def _of(records: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [r for r in records if r.get("kind") in kinds]


def _with_tools(rows: list[dict[str, Any]], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add TRL's optional ``tools`` column (JSON text) only when some record has a tool schema."""
    if any(r.get("tools") for r in records):
        for row, rec in zip(rows, records):
            row["tools"] = rec.get("tools")
    return rows


def sft_dataset(
    records: list[dict[str, Any]],
    tokenizer: Any,
    max_length: int,
    chat_template: str | None = None,
    assistant_only: bool = True,
    use_preference_chosen: bool = False,
    *,
    stage: str = "sft",
    split: str = "train",
) -> tuple[Dataset, dict[str, int]]:
    """Tokenized conversations for SFT: ``input_ids`` and ``labels`` (-100 outside the model's turns).

    Args:
        records: canonical records; ``sft`` ones are used (and ``preference`` prompt+chosen if asked).
        tokenizer: the tokenizer whose chat template renders (unless ``chat_template`` is given).
        max_length: longest sequence kept; longer ones are truncated or dropped (module docstring).
        chat_template: ``train.chat_template`` from params, if set.
        assistant_only: learn from the model's turns (with their end-of-turn token) only; else from every token.
        use_preference_chosen: also train on preference records' prompt followed by the chosen turn(s).
        stage, split: named in the error when no record is usable.

    Returns:
        The dataset and counts: records, truncated, dropped_too_long, tokens, trained_tokens.

    Raises:
        DataError: no usable record. TemplateError: the template is not prefix-stable.
    """
    convs = [(r["messages"], r.get("tools")) for r in _of(records, "sft")]
    if use_preference_chosen:
        convs += [(r["messages"] + r["chosen"], r.get("tools")) for r in _of(records, "preference") if r.get("chosen")]
    require(convs, stage, "sft", split)
    eot = end_of_turn_id(tokenizer, chat_template)
    rows, stats = [], {"records": len(convs), "truncated": 0, "dropped_too_long": 0, "tokens": 0, "trained_tokens": 0}
    for messages, tools in convs:
        ids, mask = render_with_mask(tokenizer, messages, tools, chat_template, eot)
        if len(ids) > max_length:
            ids, mask = ids[:max_length], mask[:max_length]
            if not any(mask):
                stats["dropped_too_long"] += 1
                continue
            stats["truncated"] += 1
        if assistant_only and not any(mask):
            continue  # no model turn at all: nothing to learn from
        labels = [t if m or not assistant_only else IGNORE for t, m in zip(ids, mask)]
        rows.append({"input_ids": ids, "labels": labels})
        stats["tokens"] += len(ids)
        stats["trained_tokens"] += sum(lab != IGNORE for lab in labels)
    require(rows, stage, "sft", split)
    from datasets import Dataset
    return Dataset.from_list(rows), stats


def pt_dataset(
    records: list[dict[str, Any]], tokenizer: Any, max_length: int, *, stage: str = "pt", split: str = "train"
) -> Dataset:
    """Plain text for continued pre-training: each text plus eos, cut into ``max_length`` windows.

    Long texts are split, not truncated, so no text is lost; ``labels`` equal ``input_ids``.
    """
    texts = [r["text"] for r in _of(records, "text") if r.get("text")]
    require(texts, stage, "pt", split)
    rows = []
    for text in texts:
        ids = tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
        for i in range(0, len(ids), max_length):
            window = ids[i : i + max_length]
            if len(window) > 1:  # a lone token predicts nothing
                rows.append({"input_ids": window, "labels": list(window)})
    from datasets import Dataset
    return Dataset.from_list(rows)


def cls_dataset(
    records: list[dict[str, Any]], tokenizer: Any, max_length: int, *, stage: str = "cls", split: str = "train"
) -> tuple[Dataset, list[str]]:
    """Texts for sequence classification: ``input_ids``, ``attention_mask``, ``labels`` (index into the names).

    Returns:
        The dataset and the sorted label names (as text); ``labels`` index into them.
    """
    recs = [r for r in _of(records, "cls") if r.get("text") and r.get("label") is not None]
    require(recs, stage, "cls", split)
    names = sorted({str(r["label"]) for r in recs})
    enc = tokenizer([r["text"] for r in recs], truncation=True, max_length=max_length)
    labels = [names.index(str(r["label"])) for r in recs]
    from datasets import Dataset
    return Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}), names


def preference_dataset(records: list[dict[str, Any]], *, stage: str = "dpo", split: str = "train") -> Dataset:
    """Preference pairs in TRL's conversational format, for DPO, ORPO and reward modelling.

    Columns: ``prompt`` (messages), ``chosen`` and ``rejected`` (the assistant turns), and
    ``tools`` (JSON text) when some record has a tool schema.
    """
    recs = [r for r in _of(records, "preference") if r.get("chosen") and r.get("rejected")]
    require(recs, stage, "preference", split)
    rows = [
        {"prompt": to_chat(r["messages"]), "chosen": to_chat(r["chosen"]), "rejected": to_chat(r["rejected"])}
        for r in recs
    ]
    from datasets import Dataset
    return Dataset.from_list(_with_tools(rows, recs))


def kto_dataset(records: list[dict[str, Any]], *, stage: str = "kto", split: str = "train") -> Dataset:
    """Unpaired feedback in TRL's format for KTO: ``prompt``, ``completion``, ``label`` (desirable?).

    Uses ``feedback`` records; when there are none, each preference pair gives two rows,
    chosen (True) and rejected (False).
    """
    recs = [r for r in _of(records, "feedback") if r.get("completion") and r.get("label") is not None]
    pairs = [(r, r["completion"], bool(r["label"])) for r in recs]
    if not pairs:
        for r in _of(records, "preference"):
            pairs += [(r, r[key], key == "chosen") for key in ("chosen", "rejected") if r.get(key)]
    require(pairs, stage, "kto", split)
    rows = [{"prompt": to_chat(r["messages"]), "completion": to_chat(c), "label": lab} for r, c, lab in pairs]
    from datasets import Dataset
    return Dataset.from_list(_with_tools(rows, [r for r, _, _ in pairs]))


def prompt_dataset(records: list[dict[str, Any]], *, stage: str = "grpo", split: str = "train") -> Dataset:
    """Prompts for online RL (GRPO, RLOO): column ``prompt``, a conversation awaiting an assistant turn.

    An sft record gives its turns before the last model turn; a preference or feedback record
    gives its prompt. Repeated prompts are kept once.
    """
    prompts, recs, seen = [], [], set()
    for r in _of(records, "sft", "preference", "feedback"):
        msgs = r["messages"]
        if r["kind"] == "sft":
            last = max((k for k, m in enumerate(msgs) if m["role"] in MODEL_ROLES), default=0)
            msgs = msgs[:last]
        key = json.dumps([msgs, r.get("tools")], sort_keys=True)
        if msgs and key not in seen:
            seen.add(key)
            prompts.append({"prompt": to_chat(msgs)})
            recs.append(r)
    require(prompts, stage, "prompt", split)
    from datasets import Dataset
    return Dataset.from_list(_with_tools(prompts, recs))
