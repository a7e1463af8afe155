"""LLM-as-judge for the evaluation gate: the backends, the prompts and parsers, re-asking, the verdicts.

- ask: asking until the replies parse: batched re-asks, failures counted and never raised.
- client: the judge's params (``JudgeConfig``) and its backends: an OpenAI-compatible endpoint or a local model.
- parse: the prompts and the strict JSON parsing of verdicts.
- verdicts: pointwise scores and swap-checked pairwise verdicts, aggregated for the gate.
"""

__all__ = ["ask", "client", "parse", "verdicts"]
