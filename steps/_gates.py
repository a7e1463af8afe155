"""The validate step's per-record feature columns: what the suites under ``expectations/`` judge.

``load_splits`` and ``record_frame`` give one row per record of every split; each
``*_columns`` function adds that gate's columns to the frame (format checks and
token counts, exact and near duplicates in train, leakage into eval/held-out text,
PII findings) and notes why a record fails in ``details`` ((column, row) ->
sentence) for report.json. Thresholds come from ``ValidateConfig``; the verdicts
are the suites' alone. steps/validate.py runs these in order.

Where things live, one gate family a module so each reads in one sitting: the split
files, the record frame and the shared constants in ``steps/_gates_records.py``; the
format checks in ``_gates_format.py``; the tokenizer and token counts in
``_gates_tokens.py``; exact/near duplicates and leakage in ``_gates_dedup.py``; PII in
``_gates_pii.py``. This module re-exports them all, so ``from steps._gates import X``
works as before.
"""

from __future__ import annotations

from steps._gates_dedup import content_text, dedup_columns, leakage_columns, near_leaks
from steps._gates_format import format_columns, format_problems
from steps._gates_pii import pii_columns
from steps._gates_records import EXAMPLES, SPLITS, InputError, load_splits, record_frame
from steps._gates_tokens import count_tokens, load_tokenizer

__all__ = [
    "EXAMPLES", "SPLITS", "InputError", "content_text", "count_tokens", "dedup_columns", "format_columns",
    "format_problems", "leakage_columns", "load_splits", "load_tokenizer", "near_leaks", "pii_columns", "record_frame",
]  # fmt: skip
