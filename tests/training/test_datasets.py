"""Each stage's dataset builder, on a handful of canonical records and the tiny tokenizer."""

from __future__ import annotations

import pytest
import torch

from steps.core.io import atomic_write_jsonl
from steps.core.schema import make_record
from steps.training.datasets import (
    IGNORE,
    DataError,
    cls_dataset,
    kto_dataset,
    preference_dataset,
    prompt_dataset,
    pt_dataset,
    read_split,
    sft_dataset,
)
from tests.tiny import tiny_causal_lm, tiny_seq_cls, tiny_tokenizer


def msg(role, content):
    return {"role": role, "content": content}


def rec(kind, row, **fields):
    return make_record(kind, dataset="t", source="t.jsonl", row=row, fmt="test", **fields)


ASK = [msg("user", "What is the capital of France?")]
SFT = [
    rec("sft", 0, messages=ASK + [msg("assistant", "Paris.")]),
    rec("sft", 1, messages=[msg("system", "Be brief."), *ASK, msg("assistant", "Paris."),
                            msg("user", "Thanks!"), msg("assistant", "You are welcome.")]),
]
PREF = [
    rec("preference", 2, messages=ASK, chosen=[msg("assistant", "Paris.")], rejected=[msg("assistant", "Lyon.")]),
    rec("preference", 3, messages=[msg("user", "2 + 2?")], chosen=[msg("assistant", "4")],
        rejected=[msg("assistant", "5")], tools='[{"name": "add"}]'),
]
FEEDBACK = [
    rec("feedback", 4, messages=ASK, completion=[msg("assistant", "Paris.")], label=True),
    rec("feedback", 5, messages=ASK, completion=[msg("assistant", "Berlin.")], label=False),
]
TEXT = [rec("text", 6, text="The quick brown fox jumps over the lazy dog."), rec("text", 7, text="Hello!")]
CLS = [rec("cls", 8, text="great", label="positive"), rec("cls", 9, text="terrible", label="negative"),
       rec("cls", 10, text="good", label="positive")]
ALL = SFT + PREF + FEEDBACK + TEXT + CLS


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def trained_text(tok, row):
    return tok.decode([lab for lab in row["labels"] if lab != IGNORE])


def test_read_split_reads_validated_records_and_names_the_fix_when_missing(tmp_path):
    atomic_write_jsonl(tmp_path / "train.jsonl", ALL)
    assert read_split(tmp_path, "train") == ALL
    with pytest.raises(DataError, match=r"validation\.jsonl not found; run `tunegate validate` first"):
        read_split(tmp_path, "validation")
    with pytest.raises(DataError, match="unknown split"):
        read_split(tmp_path, "dev")


def test_sft_labels_only_the_assistant_turns_and_their_end_of_turn(tok):
    ds, stats = sft_dataset(ALL, tok, max_length=256)
    assert ds.column_names == ["input_ids", "labels"] and len(ds) == 2
    assert stats == {"records": 2, "truncated": 0, "dropped_too_long": 0,
                     "tokens": sum(map(len, ds["input_ids"])),
                     "trained_tokens": sum(lab != IGNORE for row in ds["labels"] for lab in row)}
    assert trained_text(tok, ds[0]) == "Paris.<|im_end|>"
    assert trained_text(tok, ds[1]) == "Paris.<|im_end|>You are welcome.<|im_end|>"
    for row in ds:
        assert len(row["input_ids"]) == len(row["labels"])
        assert all(lab in (IGNORE, t) for t, lab in zip(row["input_ids"], row["labels"]))
        assert row["labels"][0] == IGNORE and tok.eos_token_id in row["labels"]


def test_sft_all_tokens_and_preference_chosen(tok):
    ds, _ = sft_dataset(SFT, tok, max_length=256, assistant_only=False)
    assert all(row["labels"] == row["input_ids"] for row in ds)
    ds, stats = sft_dataset(ALL, tok, max_length=256, use_preference_chosen=True)
    assert stats["records"] == len(ds) == 4
    assert trained_text(tok, ds[3]) == "4<|im_end|>"


def test_sft_truncates_keeping_a_trained_token_and_drops_the_rest(tok):
    full, _ = sft_dataset(SFT, tok, max_length=256)
    firsts = [next(i for i, lab in enumerate(row["labels"]) if lab != IGNORE) for row in full]
    assert firsts[1] < firsts[0]  # record 0 gets the long default system prompt
    ds, stats = sft_dataset(SFT, tok, max_length=firsts[1] + 1)
    assert stats["truncated"] == 1 and stats["dropped_too_long"] == 1 and len(ds) == 1
    assert ds[0]["input_ids"] == full[1]["input_ids"][: firsts[1] + 1] and trained_text(tok, ds[0]) == "Paris"  # one BPE token
    with pytest.raises(DataError, match="stage sft needs sft records"):
        sft_dataset(SFT, tok, max_length=3)


def test_sft_rows_feed_trls_padding_free_collator_and_a_tiny_model(tok):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    ds, _ = sft_dataset(SFT, tok, max_length=256)
    batch = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=True)(list(ds))
    assert batch["labels"][0].tolist() == sum(ds["labels"], [])  # our labels, flattened, kept as they are
    assert batch["position_ids"][0].tolist() == sum((list(range(len(ids))) for ids in ds["input_ids"]), [])
    model = tiny_causal_lm(tok)
    loss = model(**{k: batch[k] for k in ("input_ids", "position_ids", "labels")}).loss
    assert torch.isfinite(loss)


def test_pt_dataset_appends_eos_and_splits_long_texts(tok):
    ds = pt_dataset(ALL, tok, max_length=8)
    assert all(row["labels"] == row["input_ids"] and len(row["input_ids"]) <= 8 for row in ds)
    assert tok.decode(sum(ds["input_ids"], [])) == "The quick brown fox jumps over the lazy dog.<|im_end|>Hello!<|im_end|>"


def test_cls_dataset_indexes_sorted_label_names(tok):
    ds, names = cls_dataset(ALL, tok, max_length=16)
    assert names == ["negative", "positive"] and ds["labels"] == [1, 0, 1]
    assert set(ds.column_names) == {"input_ids", "attention_mask", "labels"}
    model = tiny_seq_cls(tok, num_labels=len(names))
    assert model(input_ids=torch.tensor([ds[0]["input_ids"]])).logits.shape == (1, 2)


def test_preference_dataset_is_trls_conversational_format():
    from trl.data_utils import is_conversational

    ds = preference_dataset(ALL)
    assert set(ds.column_names) == {"prompt", "chosen", "rejected", "tools"}
    assert is_conversational(ds[0]) and ds[0]["prompt"] == ASK
    assert ds[0]["chosen"] == [msg("assistant", "Paris.")] and ds[0]["rejected"] == [msg("assistant", "Lyon.")]
    assert ds[1]["tools"] == '[{"name": "add"}]' and ds[0]["tools"] is None


def test_kto_dataset_from_feedback_or_derived_from_pairs():
    ds = kto_dataset(ALL)
    assert ds.column_names == ["prompt", "completion", "label"] and ds["label"] == [True, False]
    derived = kto_dataset(SFT + PREF)
    assert derived["label"] == [True, False, True, False]
    assert derived[1]["completion"] == [msg("assistant", "Lyon.")]


def test_prompt_dataset_takes_turns_before_the_last_answer_once_each():
    ds = prompt_dataset(SFT + PREF)
    prompts = ds["prompt"]
    assert prompts[0] == ASK  # sft record 0; preference record 2 has the same prompt and is kept once
    assert prompts[1][-1] == msg("user", "Thanks!") and prompts[1][-2] == msg("assistant", "Paris.")
    assert prompts[2] == [msg("user", "2 + 2?")] and len(ds) == 3


def test_function_call_turns_become_assistant_messages():
    call = rec("preference", 11, messages=ASK, chosen=[msg("function_call", '{"name": "f"}')],
               rejected=[msg("assistant", "No.")])
    assert preference_dataset([call])[0]["chosen"] == [msg("assistant", '{"name": "f"}')]


def test_a_stage_without_usable_records_names_the_stage_split_and_fix(tok):
    with pytest.raises(DataError) as info:
        preference_dataset(SFT + TEXT, stage="dpo")
    assert str(info.value).startswith("stage dpo needs preference records (prompt/chosen/rejected); the train split has none")
    assert "ingest.datasets" in str(info.value)
    with pytest.raises(DataError, match="stage kto needs feedback records .* the validation split has none"):
        kto_dataset(SFT, split="validation")
    for build in (lambda: pt_dataset(SFT, tok, 8), lambda: cls_dataset(SFT, tok, 8), lambda: prompt_dataset(TEXT)):
        with pytest.raises(DataError, match="needs"):
            build()
