"""What a model folder must be to be served, read from the folder alone: no model is loaded here.

An adapter's config and the base it sits on, the tokens that end a chat reply (after checking the
chat template renders training and serving prompts the same), the torch dtype and the context
length. ``ServeError`` lives here, the lowest serving module, so every serving module raises the
one class; steps/_serving.py and steps/serve.py re-export it and the helpers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from steps._model import ModelError, ensure_local_model

_PROBE = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Bye"},
    {"role": "assistant", "content": "Goodbye."},
]


class ServeError(ValueError):
    """A model folder or serve setting that cannot be served; the message names it and the fix."""


def read_adapter_config(model_dir: Path) -> dict[str, Any] | None:
    """adapter_config.json of an unmerged PEFT adapter folder, or None for a full model folder."""
    path = Path(model_dir) / "adapter_config.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def base_of(model_dir: Path, adapter: dict[str, Any], override: str | None = None) -> str:
    """The local folder of an adapter's base model: the first of these that is here.

    ``override`` (``serve.adapter_base``); adapter_config's ``base_model_name_or_path`` (as given,
    or relative to the adapter); the merge step's ``base_model.json`` (its ``base_model_path``,
    then its ``base_model`` spec, which the default alias converts into this machine's cache).
    In a container the training machine's paths are gone, so the later ones matter there.

    Raises:
        ServeError: none of them is a model folder here; the message names them and the fix.
    """
    pointer = Path(model_dir) / "base_model.json"
    merged = json.loads(pointer.read_text(encoding="utf-8")) if pointer.is_file() else {}
    named = adapter.get("base_model_name_or_path")
    candidates = [override] if override else [named, str(Path(model_dir) / named) if named else None,
                                              merged.get("base_model_path"), merged.get("base_model")]  # fmt: skip
    problems = []
    for spec in dict.fromkeys(filter(None, candidates)):
        try:
            return ensure_local_model(spec)
        except (ModelError, OSError) as exc:  # OSError: a path we may not look into (another user's home)
            problems.append(f"{spec}: {exc}" if isinstance(exc, OSError) else str(exc))
    raise ServeError(
        f"{model_dir} is an adapter whose base model is not here ({'; '.join(problems) or 'no base_model_name_or_path'}); "
        f"mount the base model and set serve.adapter_base (--adapter-base) to its folder, or serve a merged model "
        f"(merge.keep_adapter: false)"
    )


def chat_stop_ids(model_dir: Path, tokenizer: Any, eos: int | list[int] | None) -> list[int]:
    """The tokens that end a reply (end-of-turn first, then any eos), after checking the folder is a chat model.

    Raises:
        ServeError: a classifier, or no chat template to build prompts with.
        TemplateError: the template renders a conversation differently for training and serving.
    """
    from steps._template import TemplateError, check_template_parity, end_of_turn_id

    if (Path(model_dir) / "labels.json").is_file():
        raise ServeError(f"{model_dir}: a classifier (labels.json) cannot answer chat completions; serve a chat model")
    if not tokenizer.chat_template:
        raise ServeError(
            f"{model_dir}: the tokenizer has no chat template (chat_template.jinja), so chat messages cannot be turned "
            f"into a prompt; serve a model trained with a chat stage, or save its template into the folder"
        )
    try:  # the prompt we build is the one the model was trained on
        check_template_parity(tokenizer, _PROBE)
    except TemplateError:
        raise
    except Exception:  # a template that refuses system messages (raise_exception): probe without one
        check_template_parity(tokenizer, _PROBE[1:])
    extra = [eos] if isinstance(eos, int) else list(eos or [])
    ids = [end_of_turn_id(tokenizer), *extra, tokenizer.eos_token_id]
    return list(dict.fromkeys(int(i) for i in ids if i is not None))


def torch_dtype(name: str) -> Any:
    """``serve.dtype`` as a torch dtype; auto: bfloat16 (or float16) on a GPU, float32 on CPU."""
    import torch

    if name == "auto":
        if not torch.cuda.is_available():
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return getattr(torch, name)


def context_length(config: Any, tokenizer: Any) -> int:
    """Tokens the model attends over: max_position_embeddings, or the tokenizer's limit if smaller."""
    limits = [getattr(config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    usable = [int(n) for n in limits if isinstance(n, int) and 0 < n < 10**7]  # tokenizers say 1e30 for "unknown"
    return min(usable) if usable else 2048
