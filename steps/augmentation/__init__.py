"""More train data for the augment step: EDA, back-translation, lexicons, filters, Self-Instruct.

- config: the ``eda:``, ``backtranslate:`` and ``self_instruct:`` sub-sections of ``augment:`` (``AugmentConfig``).
- eda: EDA (Wei and Zou, 2019): synonym replacement, random insertion, swap and deletion.
- filters: the guard rails every candidate passes (format, duplicate, similarity, near-copy, leak, cap).
- lexicon: synonym sources for EDA: English WordNet and the Chinese Cilin.
- methods: candidates from EDA and back-translation, tagged with their origin record and method.
- selfinstruct: Self-Instruct (Wang et al., 2023) through an OpenAI-compatible endpoint.
- text: which strings of a record may change, their language, and the spans protected from change.
- translate: back-translation engines: Apertium, Hugging Face seq2seq models, OpenAI-compatible endpoints.
"""

__all__ = ["config", "eda", "filters", "lexicon", "methods", "selfinstruct", "text", "translate"]
