"""Translators for back-translation: Apertium, Hugging Face seq2seq models, OpenAI-compatible endpoints.

Each translator turns a list of one-line texts from ``src`` to ``tgt`` (ISO 639-1 codes: en,
es, zh, ...) and keeps the order. ``back_translate`` runs the round trip source -> pivot ->
source on masked units (steps/augmentation/text.py), one line at a time so every engine keeps the
layout, and only on lines with prose (a line that is only a code-block token stays as it is).

* ``apertium``: rule-based, offline, from Debian (``apertium`` + ``apertium-eng-spa``); one
  process per direction and batch, lines wrapped in ``<p>`` so each stays one unit.
* ``hf``: any seq2seq model by id or folder, offline from the local cache. ``models`` maps
  ``src-tgt`` to a model (MarianMT: one per direction), or ``*`` to one many-to-many model
  (NLLB), which is given ``lang_codes`` (``en: eng_Latn``) as source and forced target tokens.
* ``openai``: chat completions of any OpenAI-compatible server, temperature 0 by default.
"""

from __future__ import annotations

import functools
import html
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from steps.augmentation.text import has_words
from steps.core.config import ConfigError

ENGINES = ("apertium", "hf", "openai")
APERTIUM_CODES = {"en": "eng", "es": "spa", "ca": "cat", "fr": "fra", "pt": "por", "it": "ita", "gl": "glg",
                  "eo": "epo", "oc": "oci", "ro": "ron", "eu": "eus", "cy": "cym", "nb": "nob", "nn": "nno"}
NLLB_CODES = {"en": "eng_Latn", "es": "spa_Latn", "zh": "zho_Hans", "fr": "fra_Latn", "de": "deu_Latn",
              "ja": "jpn_Jpan", "pt": "por_Latn", "it": "ita_Latn", "ru": "rus_Cyrl", "ko": "kor_Hang"}
LANGUAGE_NAMES = {"en": "English", "es": "Spanish", "zh": "Simplified Chinese", "fr": "French", "de": "German",
                  "ja": "Japanese", "pt": "Portuguese", "it": "Italian", "ru": "Russian", "ko": "Korean"}


class TranslateError(RuntimeError):
    """A translator failed or answered with the wrong number of texts."""


class Translator(Protocol):
    name: str

    def supports(self, src: str, tgt: str) -> bool: ...

    def translate(self, texts: Sequence[str], src: str, tgt: str) -> list[str]: ...


class Apertium:
    """Debian's Apertium: ``apertium -u -f html eng-spa``; unknown words pass through unmarked."""

    name = "apertium"

    def __init__(self, binary: str = "apertium", batch: int = 500, timeout_s: float = 600):
        self.binary, self.batch, self.timeout_s = binary, batch, timeout_s

    @functools.cached_property
    def pairs(self) -> set[str]:
        """Installed directions (``apertium -l``); empty when the binary is missing."""
        if not shutil.which(self.binary):
            return set()
        out = subprocess.run([self.binary, "-l"], capture_output=True, text=True, timeout=60).stdout
        return set(out.split())

    def supports(self, src: str, tgt: str) -> bool:
        return f"{APERTIUM_CODES.get(src, src)}-{APERTIUM_CODES.get(tgt, tgt)}" in self.pairs

    def translate(self, texts: Sequence[str], src: str, tgt: str) -> list[str]:
        pair = f"{APERTIUM_CODES.get(src, src)}-{APERTIUM_CODES.get(tgt, tgt)}"
        out: list[str] = []
        for start in range(0, len(texts), self.batch):
            chunk = texts[start : start + self.batch]
            doc = "\n".join(f"<p>{html.escape(t, quote=False)}</p>" for t in chunk) + "\n"
            proc = subprocess.run([self.binary, "-u", "-f", "html", pair], input=doc, capture_output=True,
                                  text=True, timeout=self.timeout_s)
            got = re.findall(r"<p>(.*?)</p>", proc.stdout, re.S)
            if proc.returncode or len(got) != len(chunk):
                raise TranslateError(f"apertium {pair} exited {proc.returncode} with {len(got)} of {len(chunk)} "
                                     f"texts: {proc.stderr.strip()[:300]}")
            out += [html.unescape(g).strip() for g in got]
        return out


class HuggingFace:
    """Seq2seq translation models from the local Hugging Face cache or a folder; greedy or beam search."""

    name = "hf"

    def __init__(self, models: dict[str, str], lang_codes: dict[str, str] | None = None, batch_size: int = 16,
                 max_new_tokens: int = 256, num_beams: int = 1, device: str = "cpu"):
        self.models, self.batch_size, self.device = models, batch_size, device
        self.max_new_tokens, self.num_beams = max_new_tokens, num_beams
        self.codes = {**NLLB_CODES, **(lang_codes or {})}
        self._loaded: dict[str, tuple[Any, Any]] = {}

    def supports(self, src: str, tgt: str) -> bool:
        return f"{src}-{tgt}" in self.models or ("*" in self.models and src in self.codes and tgt in self.codes)

    def _load(self, spec: str) -> tuple[Any, Any]:
        """Tokenizer and model of ``spec``, loaded once."""
        from transformers import AutoModelForSeq2SeqLM

        from steps.models.loading import tokenizer_from

        if spec in self._loaded:
            return self._loaded[spec]
        try:
            tok = tokenizer_from(spec)
            model = AutoModelForSeq2SeqLM.from_pretrained(spec).to(self.device).eval()
        except (OSError, ValueError) as exc:
            raise ConfigError(f"augment.backtranslate.models: cannot load {spec!r} offline ({exc}); give a model "
                              "folder, or a hub id already in the local cache (nothing is downloaded)") from exc
        self._loaded[spec] = tok, model
        return tok, model

    def translate(self, texts: Sequence[str], src: str, tgt: str) -> list[str]:
        import torch

        many = f"{src}-{tgt}" not in self.models
        tok, model = self._load(self.models["*" if many else f"{src}-{tgt}"])
        extra: dict[str, Any] = {}
        if many:
            tok.src_lang = self.codes[src]
            extra["forced_bos_token_id"] = tok.convert_tokens_to_ids(self.codes[tgt])
        out: list[str] = []
        for start in range(0, len(texts), self.batch_size):
            batch = tok(list(texts[start : start + self.batch_size]), return_tensors="pt", padding=True,
                        truncation=True).to(self.device)
            with torch.no_grad():
                ids = model.generate(**batch, max_new_tokens=self.max_new_tokens, num_beams=self.num_beams,
                                     do_sample=False, **extra)
            out += [t.strip() for t in tok.batch_decode(ids, skip_special_tokens=True)]
        return out


class OpenAIChat:
    """Any OpenAI-compatible chat endpoint (vLLM, llama.cpp, Ollama, OpenAI) asked for a plain translation."""

    name = "openai"
    PROMPT = ("Translate the user's text from {src} to {tgt}. Copy every token of the form ZXQ0, ZXQ1, ... "
              "unchanged. Reply with the translation only.")

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", temperature: float = 0.0,
                 timeout_s: float = 60, concurrency: int = 4, seed: int | None = None):
        from openai import OpenAI

        if not base_url or not model:
            raise ConfigError("augment.backtranslate: engine openai needs base_url (e.g. http://127.0.0.1:8000/v1) "
                              "and model")
        self.client = OpenAI(base_url=base_url, api_key=os.environ.get(api_key_env) or "EMPTY",
                             timeout=timeout_s, max_retries=2)
        self.model, self.temperature, self.concurrency, self.seed = model, temperature, concurrency, seed

    def supports(self, src: str, tgt: str) -> bool:
        return src in LANGUAGE_NAMES and tgt in LANGUAGE_NAMES

    def _one(self, text: str, src: str, tgt: str) -> str:
        from openai import OpenAIError

        system = self.PROMPT.format(src=LANGUAGE_NAMES[src], tgt=LANGUAGE_NAMES[tgt])
        try:
            reply = self.client.chat.completions.create(
                model=self.model, temperature=self.temperature, seed=self.seed,
                messages=[{"role": "system", "content": system}, {"role": "user", "content": text}])
        except OpenAIError as exc:
            raise TranslateError(f"openai endpoint {self.client.base_url} model {self.model}: {exc}; check that the "
                                 "server is up and augment.backtranslate.base_url/model are right") from exc
        return (reply.choices[0].message.content or "").strip()

    def translate(self, texts: Sequence[str], src: str, tgt: str) -> list[str]:
        with ThreadPoolExecutor(max(1, self.concurrency)) as pool:  # map keeps the order
            return list(pool.map(lambda t: self._one(t, src, tgt), texts))


def back_translate(translator: Translator, units: Sequence[tuple[str, str]], pivots: dict[str, str]) -> list[str | None]:
    """Round-trip each (masked text, language) unit through its language's pivot, line by line.

    Returns the new text per unit, or None where the language has no pivot or the translator
    lacks a direction. Lines without prose are kept as they are; equal lines are translated once.
    """
    out: list[str | None] = [None] * len(units)
    by_lang: dict[str, list[int]] = {}
    for i, (_, lang) in enumerate(units):
        pivot = pivots.get(lang)
        if pivot and translator.supports(lang, pivot) and translator.supports(pivot, lang):
            by_lang.setdefault(lang, []).append(i)
    for lang, members in by_lang.items():
        lines = sorted({line.strip() for i in members for line in units[i][0].split("\n") if has_words(line)})
        there = translator.translate(lines, lang, pivots[lang])
        back = dict(zip(lines, translator.translate(there, pivots[lang], lang)))
        for i in members:
            out[i] = "\n".join(_keep_indent(line, back[line.strip()]) if has_words(line) else line
                               for line in units[i][0].split("\n"))
    return out


def _keep_indent(line: str, new: str) -> str:
    """``new`` with ``line``'s indentation, and runs of spaces inside it closed up (rule-based output leaves some)."""
    return line[: len(line) - len(line.lstrip())] + re.sub(r"(?<=\S) {2,}(?=\S)", " ", new)


def build_translator(engine: str, **kw: Any) -> Translator:
    """The translator named by ``engine`` with its keyword settings."""
    if engine == "apertium":
        return Apertium(**kw)
    if engine == "hf":
        return HuggingFace(**kw)
    if engine == "openai":
        return OpenAIChat(**kw)
    raise ConfigError(f"augment.backtranslate.engine: {engine!r} is not one of {', '.join(ENGINES)}")
