"""The judge's params and the chat backends they select: an OpenAI-compatible endpoint or a local model.

A backend is a ``Chat``: a batch of conversations and the reply's JSON schema in, one reply text
per conversation out. ``openai_chat`` talks to any OpenAI-compatible endpoint (base URL, model and
key from params or the environment) and asks for the schema as structured outputs
(``response_format``); ``local_chat`` runs a local transformers model (the base model, when no
endpoint is configured) through the very same prompts and parser, decoding under the schema
(``steps.evaluation.judge.grammar``) so that its replies always parse. Whether a judge's scores
count is decided by its calibration (``steps.evaluation.judge.calibration``).
``resolve_backend`` picks one from ``JudgeConfig``. Kept apart from prompts and scoring so that
what talks to a network or a model sits in one place; used by ``steps.evaluation.judge.verdicts``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from steps.core.config import ConfigError
from steps.evaluation.judge.calibration import CalibrationConfig

Message = dict[str, str]
Schema = Mapping[str, Any]  # a reply's JSON schema; its "title" names it
Chat = Callable[[list[list[Message]], Schema | None], list[str]]  # conversations, reply schema -> one reply each

MODES = ("off", "pointwise", "pairwise", "both")
ENV_BASE_URL, ENV_MODEL = "TUNEGATE_JUDGE_BASE_URL", "TUNEGATE_JUDGE_MODEL"
LOCAL_BACKEND = "local base model (weak judge)"
NO_KEY = "EMPTY"  # sent when no key is set: never fall back to OPENAI_API_KEY, which belongs to another endpoint


class ChatBatchError(RuntimeError):
    """Some conversations of a batch failed at the backend; the others' replies are kept.

    Args:
        replies: one reply per conversation, None where it failed.
        errors: one error sentence per conversation, None where it succeeded.
    """

    def __init__(self, replies: list[str | None], errors: list[str | None]) -> None:
        self.replies, self.errors = replies, errors
        failed = [e for e in errors if e]
        super().__init__(f"{len(failed)} of {len(errors)} judge requests failed; first: {failed[0] if failed else None}")


@dataclass(frozen=True)
class JudgeConfig:
    """The ``judge:`` subsection of the evaluate step's params. The API key never lives in params."""

    mode: str = "pointwise"  # off | pointwise | pairwise (candidate vs production) | both
    base_url: str | None = None  # None: $TUNEGATE_JUDGE_BASE_URL, else the local base model
    model: str | None = None  # None: $TUNEGATE_JUDGE_MODEL
    api_key_env: str = "TUNEGATE_JUDGE_API_KEY"  # the name of the variable holding the key
    max_retries: int = 2  # re-asks of a malformed or failed reply before it counts as a failure
    max_examples: int = 20
    timeout_s: float = 60.0
    max_tokens: int = 256
    batch_size: int = 8  # conversations at once: concurrent HTTP requests, or one local generate batch
    calibration: CalibrationConfig = dataclasses.field(default_factory=CalibrationConfig)  # trust is earned first

    def __post_init__(self) -> None:
        where = "evaluate.judge"
        if self.mode not in MODES:
            raise ConfigError(f"{where}.mode: use one of {', '.join(MODES)}; got {self.mode!r}")
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"{where}.base_url: give an http(s) URL such as http://localhost:8000/v1, or null; got {self.base_url!r}"
            )
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.api_key_env or ""):
            raise ConfigError(
                f"{where}.api_key_env: name the environment variable that holds the key (e.g. TUNEGATE_JUDGE_API_KEY), "
                "never the key itself; got a value that is not a variable name"
            )
        for name, low in (("max_retries", 0), ("max_examples", 1), ("max_tokens", 16), ("batch_size", 1)):
            if getattr(self, name) < low:
                raise ConfigError(f"{where}.{name}: must be >= {low}; got {getattr(self, name)}")
        if not self.timeout_s > 0:
            raise ConfigError(f"{where}.timeout_s: must be > 0 seconds; got {self.timeout_s}")


def _describe_error(exc: BaseException) -> str:
    """A short sentence for an endpoint error: the HTTP status or the timeout, not a traceback."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return "endpoint timed out"
    if isinstance(exc, openai.APIStatusError):
        return f"endpoint answered HTTP {exc.status_code}: {str(exc)[:200]}"
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def response_format(schema: Schema) -> dict[str, Any]:
    """OpenAI structured outputs for ``schema``: the reply must be that JSON object (``strict``)."""
    return {"type": "json_schema", "json_schema": {"name": schema.get("title", "reply"), "strict": True, "schema": dict(schema)}}


def openai_chat(
    base_url: str,
    model: str,
    api_key: str | None,
    *,
    timeout_s: float,
    temperature: float = 0.0,
    max_tokens: int = 256,
    concurrency: int = 8,
    client_retries: int = 1,
) -> Chat:
    """A Chat over an OpenAI-compatible ``/chat/completions`` endpoint, one request per conversation.

    A request with a reply schema asks for it as structured outputs (``response_format``); the
    strict parser still checks what comes back, since not every server enforces it. Requests of a
    batch run ``concurrency`` at a time; replies keep the batch's order. The client itself retries
    transport errors ``client_retries`` times; a request that still fails makes the batch raise
    ``ChatBatchError`` holding every other reply.
    """
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key=api_key or NO_KEY, timeout=timeout_s, max_retries=client_retries)

    def one(conversation: list[Message], schema: Schema | None) -> str:
        extra = {} if schema is None else {"response_format": response_format(schema)}
        response = client.chat.completions.create(
            model=model, messages=conversation, temperature=temperature, max_tokens=max_tokens, **extra  # type: ignore[arg-type]
        )
        return (response.choices[0].message.content or "") if response.choices else ""

    def chat(conversations: list[list[Message]], schema: Schema | None = None) -> list[str]:
        with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(conversations)))) as pool:
            futures = [pool.submit(one, c, schema) for c in conversations]
        replies: list[str | None] = []
        errors: list[str | None] = []
        for future in futures:
            exc = future.exception()
            replies.append(None if exc else future.result())
            errors.append(_describe_error(exc) if exc else None)
        if any(errors):
            raise ChatBatchError(replies, errors)
        return [r or "" for r in replies]

    return chat


def local_chat(model: Any, tokenizer: Any, *, max_new_tokens: int = 256, batch_size: int = 8) -> Chat:
    """A Chat that runs a local transformers model greedily through its chat template.

    With a reply schema it decodes under it (``GrammarDecoder``): every reply is that JSON object,
    and the budget grows to the longest reply the schema allows. Without one it writes free text.
    """
    from steps.evaluation.judge.grammar import GrammarDecoder
    from steps.models.generation import generate_chat

    decoder: list[GrammarDecoder] = []  # built at the first schema: reading the vocabulary takes a moment

    def chat(conversations: list[list[Message]], schema: Schema | None = None) -> list[str]:
        if schema is None:
            return generate_chat(model, tokenizer, conversations, max_new_tokens=max_new_tokens, batch_size=batch_size)
        if not decoder:
            decoder.append(GrammarDecoder(model, tokenizer))
        return decoder[0](conversations, schema, max_new_tokens=max_new_tokens, batch_size=batch_size)

    return chat


def resolve_backend(
    cfg: JudgeConfig, local_model_loader: Callable[[], tuple[Any, Any]], env: Mapping[str, str] | None = None
) -> tuple[Chat, str]:
    """The judge backend from params, then the environment, else the local base model.

    Args:
        cfg: the judge params; ``base_url``/``model`` override ``$TUNEGATE_JUDGE_BASE_URL``/``_MODEL``.
        local_model_loader: returns ``(model, tokenizer)``; called only for the local fallback.
        env: the environment (``os.environ`` by default); the key is read from ``env[cfg.api_key_env]``.

    Returns:
        ``(chat, description)``: "endpoint <url> model <m>" or ``LOCAL_BACKEND``.
    """
    env = os.environ if env is None else env
    if cfg.mode == "off":
        raise ConfigError("evaluate.judge.mode is off: no backend to resolve; set mode to pointwise, pairwise or both")
    base_url = cfg.base_url or env.get(ENV_BASE_URL) or None
    model = cfg.model or env.get(ENV_MODEL) or None
    if base_url is None:
        lm, tokenizer = local_model_loader()
        return local_chat(lm, tokenizer, max_new_tokens=cfg.max_tokens, batch_size=cfg.batch_size), LOCAL_BACKEND
    if not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"${ENV_BASE_URL}: give an http(s) URL such as http://localhost:8000/v1; got {base_url!r}")
    if model is None:
        raise ConfigError(f"evaluate.judge: an endpoint is set ({base_url}) but no model; set judge.model or ${ENV_MODEL}")
    key = env.get(cfg.api_key_env)
    chat = openai_chat(base_url, model, key, timeout_s=cfg.timeout_s, max_tokens=cfg.max_tokens, concurrency=cfg.batch_size)
    return chat, f"endpoint {base_url} model {model}"
