"""How BLEU and ROUGE tokenize one item: chosen from that item's references alone.

Each item is scored as the reference library scores it alone: an English item gets sacrebleu's
13a and rouge-score's own tokenizer whatever the other items hold, so adding a Chinese item to a
set never changes an English item's score. The choice reads only the references, so every model
is scored the same way on the same item.

- BLEU: sacrebleu's "zh" when a reference holds Han characters (sacrebleu's documented choice for
  Chinese), else its default "13a".
- ROUGE: rouge-score's default tokenizer (lower-cased a-z and 0-9 runs, Porter-stemmed) when the
  references hold no letter outside ASCII; else ``unicode_tokens``, since rouge-score's tokenizer
  drops every other letter (Chinese, Cyrillic or "café" would score 0 or lose letters).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

BLEU_DEFAULT = "13a"  # sacrebleu's default tokenizer
ROUGE_DEFAULT = "default"  # rouge-score's DefaultTokenizer
ROUGE_UNICODE = "tunegate-unicode"  # unicode_tokens

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]")
_WORD = re.compile(r"[^\W_]+")  # letters and digits of any script; "_" splits words, as in rouge-score
_CJK = re.compile(r"([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002ffff])")


def item_tokenization(references: str | Sequence[str]) -> tuple[str, str]:
    """(sacrebleu ``tokenize``, ROUGE tokenizer name) for one item, from its references alone.

    The ROUGE name is ROUGE_DEFAULT or ROUGE_UNICODE; ``rouge_tokenizer`` turns it into what the
    rouge module takes.
    """
    text = references if isinstance(references, str) else "".join(references)
    bleu = "zh" if _HAN.search(text) else BLEU_DEFAULT
    rouge = ROUGE_UNICODE if any(c.isalpha() and not c.isascii() for c in text) else ROUGE_DEFAULT
    return bleu, rouge


def rouge_tokenizer(name: str) -> Any:
    """The rouge module's ``tokenizer`` argument for a ROUGE tokenizer name: None keeps rouge-score's own."""
    return {ROUGE_DEFAULT: None, ROUGE_UNICODE: unicode_tokens}[name]


def unicode_tokens(text: str) -> list[str]:
    """Lower-cased words in any script; Chinese, Japanese and Korean characters one token each.

    On ASCII text it gives rouge-score's default tokens with its stemmer: runs of letters and
    digits ("_" and every other symbol split words), words over 3 letters Porter-stemmed.
    Character tokens are the usual unit for ROUGE on Chinese (no word segmenter needed, the same
    on every machine).
    """
    stem = _stemmer()
    tokens: list[str] = []
    for word in _WORD.findall(unicodedata.normalize("NFKC", text).lower()):
        for piece in _CJK.split(word):  # the capture group keeps each CJK character as a piece
            if piece:
                tokens.append(stem(piece) if piece.isascii() and len(piece) > 3 else piece)
    return tokens


@functools.lru_cache(maxsize=1)
def _stemmer() -> Any:
    from nltk.stem import porter  # rouge-score's own dependency and stemmer

    return porter.PorterStemmer().stem
