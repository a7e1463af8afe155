"""Translators for back-translation: Apertium from Debian, a Hugging Face seq2seq model from a folder."""

from __future__ import annotations

import shutil

import pytest

from steps import augment
from steps.augmentation.config import AugmentConfig, BacktranslateConfig
from steps.augmentation.text import protect, restore, span_pattern
from steps.augmentation.translate import Apertium, HuggingFace, back_translate
from steps.core.io import atomic_write_jsonl, read_jsonl
from steps.core.schema import make_record
from tests.tiny import tiny_tokenizer

needs_apertium = pytest.mark.skipif(shutil.which("apertium") is None,
                                    reason="needs Apertium: apt-get install -y apertium apertium-eng-spa")


@pytest.fixture(scope="module")
def tiny_seq2seq(tmp_path_factory):
    """An untrained 1-layer BART with the tiny byte-level BPE, saved to a folder: a real model that drifts."""
    import torch
    from transformers import BartConfig, BartForConditionalGeneration

    path = tmp_path_factory.mktemp("bart")
    tok = tiny_tokenizer(path)
    torch.manual_seed(0)
    cfg = BartConfig(vocab_size=len(tok), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                     decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128,
                     pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                     decoder_start_token_id=tok.bos_token_id, forced_eos_token_id=tok.eos_token_id)
    BartForConditionalGeneration(cfg).save_pretrained(path)
    return str(path)


@needs_apertium
def test_apertium_keeps_order_count_markup_and_span_tokens():
    texts = ["Does the kettle have a water level window?", "R&D <b> costs ZXQ0 euros", "Hello world"]
    es = Apertium().translate(texts, "en", "es")
    assert len(es) == 3 and es[0].startswith("Hace") and "<b>" in es[1] and "ZXQ0" in es[1]
    assert Apertium().supports("en", "es") and not Apertium().supports("en", "zh")
    assert Apertium(binary="no-such-apertium").pairs == set()


@needs_apertium
def test_back_translation_goes_line_by_line_and_keeps_code_lines_and_indentation():
    text = "Why does my loop fail?\n```py\nfor i in range(3):\n    boil(i)\n```\n  Please explain the error."
    masked, spans = protect(text, span_pattern())
    [out] = back_translate(Apertium(), [(masked, "en")], {"en": "es"})
    restored = restore(out, spans)
    assert restored is not None and "```py\nfor i in range(3):\n    boil(i)\n```" in restored
    assert restored.split("\n")[-1].startswith("  ") and restored != text  # the indented line keeps its indent
    assert back_translate(Apertium(), [(masked, "zh")], {"en": "es"}) == [None]  # no pivot for zh


def test_hf_seq2seq_model_from_a_folder_translates_in_batches(tiny_seq2seq):
    hf = HuggingFace({"en-es": tiny_seq2seq, "es-en": tiny_seq2seq}, batch_size=2, max_new_tokens=8)
    texts = ["Hello! How can I help you today?", "The quick brown fox.", "Thanks, that is all."]
    first = hf.translate(texts, "en", "es")
    assert len(first) == 3 and all(isinstance(t, str) for t in first)
    assert hf.translate(texts, "en", "es") == first  # greedy decoding: the same every time
    assert hf.supports("en", "es") and not hf.supports("en", "zh")
    many = HuggingFace({"*": tiny_seq2seq}, lang_codes={"en": "<|im_start|>", "zh": "<|im_start|>"}, max_new_tokens=4)
    assert many.supports("en", "zh") and len(many.translate(texts[:1], "en", "zh")) == 1


def test_drifted_back_translations_from_an_untrained_model_are_all_rejected(tiny_seq2seq, tmp_path):
    data = tmp_path / "validated"
    questions = ["How do I clean the kettle?", "What is the capital of France?", "Can you help me today?"]
    train = [make_record("sft", dataset="faq", source="faq.csv", row=i, fmt="alpaca",
                         messages=[{"role": "user", "content": q}, {"role": "assistant", "content": "Yes."}])
             for i, q in enumerate(questions)]
    atomic_write_jsonl(data / "train.jsonl", train)
    atomic_write_jsonl(data / "validation.jsonl", [])
    atomic_write_jsonl(data / "test.jsonl", [])
    cfg = AugmentConfig(methods=("backtranslate",), min_similarity=0.7, max_fraction=1.0,
                                backtranslate=BacktranslateConfig(
                                    engine="hf", models={"en-es": tiny_seq2seq, "es-en": tiny_seq2seq},
                                    max_new_tokens=12))
    result = augment.run(cfg, data, tmp_path / "augmented")
    assert result.report["augmented"] == 0 and result.report["methods"]["backtranslate"]["candidates"] == 3
    reasons = {row["reason"] for row in read_jsonl(tmp_path / "augmented" / "rejected.jsonl")}
    assert "similarity" in reasons and reasons <= {"similarity", "format", "duplicate"}  # gibberish, or the same twice
