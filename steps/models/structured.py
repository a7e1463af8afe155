"""Structured generation with xgrammar: a model's tokens constrained to a JSON schema.

``JsonGrammars`` reads a tokenizer's vocabulary once (``xgrammar.TokenizerInfo``) and compiles JSON
schemas into grammars (cached by xgrammar), always compact: no optional whitespace (a small model
under a grammar that allows it can write spaces or newlines until its budget runs out) and
``json.dumps``'s default separators. The reply ends at one of the stop tokens, which a grammar
allows only once the object is complete. The evaluation judge (steps/evaluation/judge/grammar.py)
and the server (steps/serving/) both decode through it.

xgrammar enforces most of JSON Schema but accepts some keywords without enforcing them;
``unenforced_keyword`` finds those, so a caller can refuse a schema rather than produce output that
looks valid and is not.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

SEPARATORS = (", ", ": ")  # the only spacing the grammars allow, as json.dumps writes it by default

# Keywords xgrammar 0.2 compiles but does not enforce (checked: it accepts [1, 1] under uniqueItems, 3 under
# allOf [integer, minimum 5], "s" under not string); oneOf is decoded as anyOf (one match is not checked).
UNENFORCED = frozenset({
    "not", "if", "then", "else", "allOf", "oneOf", "uniqueItems", "contains", "minContains", "maxContains",
    "dependentRequired", "dependentSchemas", "dependencies", "unevaluatedItems", "contentEncoding", "contentMediaType",
    "contentSchema",
})  # fmt: skip
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions")  # name -> schema
_SCHEMA_ONE = ("items", "additionalProperties", "propertyNames", "unevaluatedProperties", "additionalItems")
_SCHEMA_LIST = ("anyOf", "prefixItems", "items")


def unenforced_keyword(schema: Any, path: str = "") -> str | None:
    """The path of the first keyword in ``schema`` that xgrammar would not enforce (``UNENFORCED``), or None.

    Paths read like ``properties.tags.uniqueItems``; the names inside ``properties`` are not keywords.
    """
    todo: list[tuple[str, Any]] = [(path, schema)]
    while todo:
        where, node = todo.pop()
        if not isinstance(node, Mapping):
            continue
        for key in node:
            if key in UNENFORCED:
                return f"{where}.{key}".lstrip(".")
        for key in _SCHEMA_MAPS:
            if isinstance(node.get(key), Mapping):
                todo.extend((f"{where}.{key}.{name}".lstrip("."), sub) for name, sub in node[key].items())
        for key in _SCHEMA_ONE:
            if isinstance(node.get(key), Mapping):
                todo.append((f"{where}.{key}".lstrip("."), node[key]))
        for key in _SCHEMA_LIST:
            if isinstance(node.get(key), list):
                todo.extend((f"{where}.{key}[{i}]".lstrip("."), sub) for i, sub in enumerate(node[key]))
    return None


class JsonGrammars:
    """A tokenizer's vocabulary, read once, and the JSON-schema grammars compiled against it (thread-safe).

    Args:
        tokenizer: a Hugging Face tokenizer.
        vocab_size: the model's logits width (``model.config.vocab_size``), which may exceed the tokenizer's.
        stop_ids: the tokens that end a reply; the grammar allows them only after a complete value.
    """

    def __init__(self, tokenizer: Any, vocab_size: int, stop_ids: Sequence[int]) -> None:
        import xgrammar as xgr

        self.stop_ids = list(stop_ids)
        self.info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=self.stop_ids)
        self._compiler = xgr.GrammarCompiler(self.info, max_threads=1)  # caches each schema it compiled

    def compile(self, schema: Mapping[str, Any] | bool) -> Any:
        """The compiled grammar of ``schema`` (an ``xgrammar.CompiledGrammar``).

        Raises:
            RuntimeError: xgrammar cannot compile it (an unknown type, a broken ``$ref`` or pattern, contradicting bounds).
        """
        return self._compiler.compile_json_schema(json.dumps(schema), any_whitespace=False, separators=SEPARATORS)
