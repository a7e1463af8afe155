"""The evaluate step's work: scoring every model, the metrics, safety, the judge, the gate and the report.

- config: the evaluate step's settings (``EvaluateConfig``): what is measured and the gate's thresholds.
- gate: the evaluation gate, a pure decision over the metric table with every reason.
- judge: LLM-as-judge (pointwise scores and swap-checked pairwise verdicts).
- measure: what is measured on one model: the eval set, loading a trained folder, the metric row.
- metrics: text, classification and reward metrics through Hugging Face ``evaluate``.
- probes: behaviour probes: a suite of questions with checks, each passed or failed per model.
- report: the human outputs: DVC plots rows and a self-contained HTML report.
- safety: the safety rules a generated text breaks (pure functions over strings).
- scoring: the metric table: every model scored on the same items, one model in memory at a time.
- significance: paired bootstrap intervals of the gate's gains, and the items a gain needs.
- summary: the report's first lines: what changed, in plain words, and why the gate decided.
- tokenization: how BLEU and ROUGE tokenize one item, chosen from that item's references alone.

``metric_modules/`` holds local ``evaluate`` modules (BLEU, ROUGE, BERTScore, ...) that metrics.py
loads by path, offline; it is not a package.
"""

__all__ = ["config", "gate", "judge", "measure", "metrics", "probes", "report", "safety", "scoring", "significance", "summary",
           "tokenization"]
