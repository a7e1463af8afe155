"""What a model folder must be to be served, read from the folder alone: no model is loaded here.

The base an adapter sits on (found by steps.models.folders), the tokens that end a chat reply
(after checking the chat template renders training and serving prompts the same), the torch dtype
and the context length. ``ServeError`` lives here, the lowest serving module, so every serving module raises the
one class; steps/serving/backend.py and steps/serve.py import it from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steps.models.folders import adapter_base
from steps.models.loading import ModelError

_PROBE = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Bye"},
    {"role": "assistant", "content": "Goodbye."},
]


class ServeError(ValueError):
    """A model folder or serve setting that cannot be served; the message names it and the fix."""


def base_of(model_dir: Path, override: str | None = None) -> str:
    """The local folder of an adapter's base model (steps.models.folders.adapter_base), as a ServeError when gone.

    In a container the training machine's paths are gone: ``override`` (``serve.adapter_base``) or
    the merge step's ``base_model.json`` names the base here.
    """
    try:
        return adapter_base(model_dir, override)
    except ModelError as exc:
        raise ServeError(f"{exc}; mount the base model and set serve.adapter_base (--adapter-base) to its folder, "
                         f"or serve a merged model (merge.keep_adapter: false)") from exc


def chat_stop_ids(model_dir: Path, tokenizer: Any, eos: int | list[int] | None) -> list[int]:
    """The tokens that end a reply (end-of-turn first, then any eos), after checking the folder is a chat model.

    Raises:
        ServeError: a classifier, or no chat template to build prompts with.
        TemplateError: the template renders a conversation differently for training and serving.
    """
    from steps.models.template import TemplateError, check_template_parity, end_of_turn_id

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
