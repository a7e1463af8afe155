"""The data gates of the validate step: per-record feature columns that the suites under ``expectations/`` judge.

``steps.data.splits.load_splits`` and ``records.record_frame`` give one row per record of every split; each
``*_columns`` function adds its gate's columns to the frame and notes why a record fails in
``details`` ((column, row) -> sentence) for report.json. Thresholds come from ``ValidateConfig``
(config.py); the verdicts are the suites' alone. steps/validate.py runs these in order.

One gate family a module: records (the frame, shared constants), format (schema,
roles, pairs), tokens (the tokenizer and token counts), dedup (exact/near duplicates and
leakage), pii (findings and masking), report (the offline report.html of failing records).
"""

__all__ = ["config", "dedup", "format", "pii", "records", "report", "tokens"]
