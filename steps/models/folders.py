"""Model folders: an adapter's config, the base it sits on, and loading a folder with or without its adapter.

A trained folder holds either a full model (``config.json``) or an unmerged PEFT adapter
(``adapter_config.json``) whose base lives elsewhere. ``adapter_base`` finds that base the one way
every step uses (train's ``init_from``, evaluate, merge, the RL reward model, serve), and
``load_model_folder`` loads a folder as a model, attaching (or merging) its adapter when it has one.
``start_folder`` turns a ``base_model``/``init_from`` spec into a folder ``from_pretrained`` loads,
merging an adapter into its base once and caching the result.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from steps.core.io import read_json
from steps.models.loading import ModelError, ensure_local_model, tokenizer_from

ADAPTER_CONFIG = "adapter_config.json"
BASE_POINTER = "base_model.json"  # written by the merge step beside an adapter it keeps unmerged


def read_adapter_config(folder: Path | str) -> dict[str, Any] | None:
    """adapter_config.json of an unmerged PEFT adapter folder, or None for a full model folder."""
    return read_json(Path(folder) / ADAPTER_CONFIG, missing_ok=True)


def adapter_base(folder: Path | str, override: str | None = None) -> str:
    """The local folder an adapter's base model loads from: the first of these that is a model here.

    ``override`` alone when given (``serve.adapter_base``); else adapter_config's
    ``base_model_name_or_path`` (as given, or relative to the adapter), the merge step's
    ``base_model.json`` (its ``base_model_path``, then its ``base_model`` spec, which the default
    alias converts into this machine's cache), then the start the folder's manifest.json records
    (the train config's ``init_from`` or ``base_model``). Each is resolved by ``start_folder``. On
    another machine the training machine's paths are gone, so the later ones matter there.

    Raises:
        ModelError: none of them is a model here; the message names each one and why.
    """
    folder = Path(folder)
    named = (read_adapter_config(folder) or {}).get("base_model_name_or_path")
    pointer, manifest = folder / BASE_POINTER, folder / "manifest.json"
    merged = read_json(pointer, missing_ok=True) or {}
    trained = (read_json(manifest, missing_ok=True) or {}).get("config") or {}
    candidates = [override] if override else [named, str(folder / named) if named else None, merged.get("base_model_path"),
                                              merged.get("base_model"), trained.get("init_from") or trained.get("base_model")]  # fmt: skip
    problems = []
    for spec in dict.fromkeys(filter(None, candidates)):
        try:
            return start_folder(spec)
        except (ModelError, OSError) as exc:  # OSError: a path we may not look into (another user's home)
            problems.append(f"{spec}: {exc}" if isinstance(exc, OSError) else str(exc))
    raise ModelError(f"{folder} is an adapter whose base model is not here ({'; '.join(problems) or 'no base_model_name_or_path'})")


def start_folder(spec: str) -> str:
    """A folder ``from_pretrained`` loads: the model itself, or an adapter merged into its base.

    A merged model is cached under ``cache_root()/merged`` by the adapter's digest, so a new
    adapter trained on it (sft -> dpo, sft -> rm) names a base folder that still exists later.
    """
    adapter = Path(spec).expanduser() / ADAPTER_CONFIG
    if not adapter.is_file():
        return ensure_local_model(spec)
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    from steps.core.io import file_digest, staging_dir
    from steps.models.loading import cache_root

    src = adapter.parent
    digest = file_digest(adapter)[:6] + file_digest(src / "adapter_model.safetensors")[:6]
    final = cache_root() / "merged" / f"{src.resolve().name}-{digest}"
    if (final / "config.json").is_file():
        return str(final)
    model = load_model_folder(src, lambda where: AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32), merge=True)
    tmp = staging_dir(final)
    try:
        model.save_pretrained(tmp)
        tokenizer_from(src).save_pretrained(tmp)  # the tokenizer the adapter trained with
        os.chmod(tmp, 0o755)
        os.replace(tmp, final)
    except OSError:  # another run merged the same adapter first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (final / "config.json").is_file():
            raise
    return str(final)


def with_adapter(model: Any, folder: Path | str, merge: bool = False) -> Any:
    """``model`` with the PEFT adapter in ``folder`` attached, or folded into its weights when ``merge``."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(model, str(folder))
    return model.merge_and_unload() if merge else model


def load_model_folder(folder: Path | str, load: Callable[[str], Any], base: str | None = None, merge: bool = False) -> Any:
    """The model in ``folder``: ``load(folder)`` for a full model; for an adapter, ``load`` of its base
    (``base``, else ``adapter_base(folder)``) with the adapter attached (or merged when ``merge``).

    Args:
        folder: a full model folder or an unmerged PEFT adapter folder.
        load: loads a model from a folder or id (``AutoModel*.from_pretrained`` with the caller's
            head, dtype and device).
        base: the base folder, when the caller has already found it.
        merge: fold the adapter into the base's weights (``merge_and_unload``).
    """
    if read_adapter_config(folder) is None:
        return load(str(folder))
    return with_adapter(load(base or adapter_base(folder)), folder, merge=merge)
