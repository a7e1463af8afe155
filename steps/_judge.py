"""LLM-as-judge for the evaluation gate: pointwise scores and swap-checked pairwise verdicts.

A backend is a ``Chat``: a batch of conversations in, one reply text per conversation out.
``openai_chat`` talks to any OpenAI-compatible endpoint (base URL, model and key from params
or the environment); ``local_chat`` runs a local transformers model (the base model, when no
endpoint is configured) through the very same prompts and parser, so the path is real offline.
A judge that small is weak: its scores are reported, and the gate decides whether to use them.

The judge must never crash a run. A reply that is not the strict JSON asked for is re-asked
(the bad reply and what was wrong with it are shown to the judge) up to ``max_retries`` times,
retries batched; an endpoint error (HTTP status, timeout) is re-sent the same way; what still
fails is counted in ``failures`` with its last error, and the run goes on.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from steps._config import ConfigError

log = logging.getLogger(__name__)

Message = dict[str, str]
Chat = Callable[[list[list[Message]]], list[str]]

MODES = ("off", "pointwise", "pairwise", "both")
CRITERIA = ("accuracy", "completeness", "fluency", "helpfulness")
WINNERS = ("A", "B", "tie")
ENV_BASE_URL, ENV_MODEL = "TUNEGATE_JUDGE_BASE_URL", "TUNEGATE_JUDGE_MODEL"
LOCAL_BACKEND = "local base model (weak judge)"
NO_KEY = "EMPTY"  # sent when no key is set: never fall back to OPENAI_API_KEY, which belongs to another endpoint

_JSON_ONLY = "Reply with exactly one JSON object and nothing else: no prose, no markdown."
POINTWISE_SYSTEM = (
    "You are a strict grader. Score the answer to the question on four criteria, each an integer from "
    "1 (very poor) to 5 (excellent): accuracy (correct, and consistent with the reference answer when one is "
    "given), completeness (covers what the question asks), fluency (clear, well-formed language), helpfulness "
    f"(useful to the person who asked). {_JSON_ONLY} Use exactly these keys: "
    '{"accuracy": 1-5, "completeness": 1-5, "fluency": 1-5, "helpfulness": 1-5, "reason": "one sentence"}'
)
PAIRWISE_SYSTEM = (
    "You compare two answers to the same question and decide which is better overall: correct, complete, "
    "clear and helpful. Neither the order of the answers nor their length is a reason to prefer one. "
    f'{_JSON_ONLY} Use exactly these keys: {{"winner": "A" or "B" or "tie", "reason": "one sentence"}}'
)
_FENCE = re.compile(r"\A```[A-Za-z]*[ \t]*\n(.*?)\n?```\Z", re.DOTALL)


class JudgeParseError(ValueError):
    """A judge reply that is not the JSON object asked for; the message says what is wrong."""


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


# ---------------------------------------------------------------- backends


def _describe_error(exc: BaseException) -> str:
    """A short sentence for an endpoint error: the HTTP status or the timeout, not a traceback."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return "endpoint timed out"
    if isinstance(exc, openai.APIStatusError):
        return f"endpoint answered HTTP {exc.status_code}: {str(exc)[:200]}"
    return f"{type(exc).__name__}: {str(exc)[:200]}"


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

    Requests of a batch run ``concurrency`` at a time; replies keep the batch's order. The client
    itself retries transport errors ``client_retries`` times; a request that still fails makes the
    batch raise ``ChatBatchError`` holding every other reply.
    """
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key=api_key or NO_KEY, timeout=timeout_s, max_retries=client_retries)

    def one(conversation: list[Message]) -> str:
        response = client.chat.completions.create(
            model=model, messages=conversation, temperature=temperature, max_tokens=max_tokens  # type: ignore[arg-type]
        )
        return (response.choices[0].message.content or "") if response.choices else ""

    def chat(conversations: list[list[Message]]) -> list[str]:
        with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(conversations)))) as pool:
            futures = [pool.submit(one, c) for c in conversations]
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
    """A Chat that runs a local transformers model greedily through its chat template."""
    from steps._generate import generate_chat

    def chat(conversations: list[list[Message]]) -> list[str]:
        return generate_chat(model, tokenizer, conversations, max_new_tokens=max_new_tokens, batch_size=batch_size)

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


# ---------------------------------------------------------------- prompts and parsing


def _context(item: Mapping[str, Any]) -> str:
    ref = item.get("reference")
    return f"Question:\n{item['question']}\n\n" + (f"Reference answer:\n{ref}\n\n" if ref else "")


def pointwise_prompt(item: Mapping[str, Any]) -> list[Message]:
    """System + user messages asking for the four scores of ``item['answer']`` as strict JSON."""
    user = f"{_context(item)}Answer to grade:\n{item['answer']}\n\nReply with the JSON object only."
    return [{"role": "system", "content": POINTWISE_SYSTEM}, {"role": "user", "content": user}]


def pairwise_prompt(item: Mapping[str, Any], first: str, second: str) -> list[Message]:
    """System + user messages asking which of two answers (shown as A then B) is better, as strict JSON."""
    user = f"{_context(item)}Answer A:\n{first}\n\nAnswer B:\n{second}\n\nReply with the JSON object only."
    return [{"role": "system", "content": PAIRWISE_SYSTEM}, {"role": "user", "content": user}]


def _json_object(text: str | None, keys: Sequence[str]) -> dict[str, Any]:
    """One JSON object with exactly ``keys``, alone or inside one ```json fence."""
    stripped = (text or "").strip()
    if not stripped:
        raise JudgeParseError("the reply is empty")
    fenced = _FENCE.match(stripped)
    body = fenced.group(1).strip() if fenced else stripped
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise JudgeParseError(f"the reply is not one JSON object ({exc.msg} at char {exc.pos}): {body[:80]!r}") from None
    if not isinstance(data, dict):
        raise JudgeParseError(f"the reply is JSON {type(data).__name__}, not an object")
    missing = [k for k in keys if k not in data]
    extra = [k for k in data if k not in keys]
    if missing or extra:
        raise JudgeParseError(f"the object must have exactly the keys {', '.join(keys)}; missing {missing}, unexpected {extra}")
    if not isinstance(data["reason"], str):
        raise JudgeParseError(f"'reason' must be a string; got {data['reason']!r}")
    return data


def parse_judgement(text: str | None) -> dict[str, Any]:
    """The four integer scores (1-5) and the reason from a pointwise reply.

    Raises:
        JudgeParseError: not exactly one JSON object with those keys and types.
    """
    data = _json_object(text, (*CRITERIA, "reason"))
    for key in CRITERIA:
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5:
            raise JudgeParseError(f"'{key}' must be an integer from 1 to 5; got {value!r}")
    return data


def parse_verdict(text: str | None) -> dict[str, Any]:
    """``{"winner": "A"|"B"|"tie", "reason": str}`` from a pairwise reply (winner's case ignored).

    Raises:
        JudgeParseError: not exactly one JSON object with those keys and values.
    """
    data = _json_object(text, ("winner", "reason"))
    winner = data["winner"]
    normal = {w.lower(): w for w in WINNERS}.get(winner.strip().lower()) if isinstance(winner, str) else None
    if normal is None:
        raise JudgeParseError(f"'winner' must be \"A\", \"B\" or \"tie\"; got {winner!r}")
    return {"winner": normal, "reason": data["reason"]}


# ---------------------------------------------------------------- asking with retries


@dataclass(frozen=True)
class _Outcome:
    parsed: dict[str, Any] | None
    error: str | None
    attempts: int


def _ask(chat: Chat, conversations: list[list[Message]]) -> list[tuple[str | None, str | None]]:
    """(reply, error) per conversation; a backend failure becomes errors, never an exception."""
    try:
        replies = chat(conversations)
    except ChatBatchError as exc:
        return list(zip(exc.replies, exc.errors))
    except Exception as exc:  # noqa: BLE001 - any backend failure is counted, the run goes on
        log.warning("judge backend failed on a batch of %d: %s", len(conversations), exc)
        return [(None, f"backend failed: {type(exc).__name__}: {str(exc)[:200]}")] * len(conversations)
    if len(replies) != len(conversations):
        problem = f"backend returned {len(replies)} replies for {len(conversations)} conversations"
        return [(None, problem)] * len(conversations)
    return [(r, None) for r in replies]


def _reask(conversation: list[Message], reply: str, problem: str) -> list[Message]:
    """The original conversation, the bad reply, and what to fix: the judge sees its own mistake."""
    fix = f"Your reply was not valid: {problem}. {_JSON_ONLY}"
    return [*conversation, {"role": "assistant", "content": reply[:2000]}, {"role": "user", "content": fix}]


def _ask_until_valid(
    chat: Chat, conversations: list[list[Message]], parse: Callable[[str], dict[str, Any]], max_retries: int
) -> list[_Outcome]:
    """Ask every conversation, then re-ask the failed ones together, up to ``max_retries`` more rounds."""
    current = [list(c) for c in conversations]
    parsed: list[dict[str, Any] | None] = [None] * len(current)
    errors: list[str | None] = [None] * len(current)
    attempts = [0] * len(current)
    pending = list(range(len(current)))
    for _ in range(1 + max_retries):
        if not pending:
            break
        answers = _ask(chat, [current[i] for i in pending])
        still = []
        for i, (reply, error) in zip(pending, answers):
            attempts[i] += 1
            if error is None:
                try:
                    parsed[i], errors[i] = parse(reply or ""), None
                    continue
                except JudgeParseError as exc:
                    error = f"malformed judge reply: {exc}"
                    current[i] = _reask(conversations[i], reply or "", str(exc))
            errors[i] = error
            still.append(i)
        pending = still
    return [_Outcome(p, e, a) for p, e, a in zip(parsed, errors, attempts)]


def _checked(items: Sequence[Mapping[str, Any]], answers: Sequence[str], max_examples: int) -> list[Mapping[str, Any]]:
    """The first ``max_examples`` items, each checked to carry an id, a question and the answers as text."""
    for n, item in enumerate(items[:max_examples]):
        for key in ("question", *answers):
            if not isinstance(item.get(key), str):
                raise ValueError(
                    f"judge item {n} (id {item.get('id')!r}): field '{key}' must be a string, got {item.get(key)!r}; "
                    "build judge items from the evaluate step's generations"
                )
        if "id" not in item:
            raise ValueError(f"judge item {n}: has no 'id'; got keys {sorted(item)}")
        if not isinstance(item.get("reference") or "", str):
            raise ValueError(f"judge item {n} (id {item['id']!r}): 'reference' must be a string or absent")
    return list(items[:max_examples])


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


# ---------------------------------------------------------------- pointwise


@dataclass(frozen=True)
class ItemScore:
    """One answer's judgement: scores and reason, or None and the last error."""

    id: Any
    scores: dict[str, int] | None
    reason: str | None
    error: str | None
    attempts: int


@dataclass(frozen=True)
class JudgeResult:
    """Pointwise results in item order; means over the items that were scored."""

    items: tuple[ItemScore, ...]
    means: dict[str, float | None]
    overall: float | None  # mean of the four criterion means
    failures: int
    attempts: int
    backend: str

    def metrics(self) -> dict[str, float | int | None]:
        """The flat metric names of the eval contract: judge_overall, judge_<criterion>, judge_failures."""
        means = {f"judge_{c}": self.means[c] for c in CRITERIA}
        return {"judge_overall": self.overall, **means, "judge_failures": self.failures}


def judge_pointwise(
    chat: Chat, items: Sequence[Mapping[str, Any]], cfg: JudgeConfig, backend: str = ""
) -> JudgeResult:
    """Score each item's answer 1-5 on the four criteria; malformed or failed replies are retried, then counted.

    Args:
        chat: the backend.
        items: dicts with id, question, answer and optionally reference; the first ``cfg.max_examples`` are judged.
        cfg: the judge params (``max_retries``, ``max_examples``).
        backend: the backend's description, recorded in the result.
    """
    items = _checked(items, ("answer",), cfg.max_examples)
    outcomes = _ask_until_valid(chat, [pointwise_prompt(it) for it in items], parse_judgement, cfg.max_retries)
    scored = [
        ItemScore(
            it["id"],
            {c: o.parsed[c] for c in CRITERIA} if o.parsed else None,
            o.parsed["reason"] if o.parsed else None,
            o.error,
            o.attempts,
        )
        for it, o in zip(items, outcomes)
    ]
    means = {c: _mean([s.scores[c] for s in scored if s.scores]) for c in CRITERIA}
    overall = None if any(m is None for m in means.values()) else _mean([m for m in means.values() if m is not None])
    failures = sum(s.scores is None for s in scored)
    return JudgeResult(tuple(scored), means, overall, failures, sum(o.attempts for o in outcomes), backend)


# ---------------------------------------------------------------- pairwise


@dataclass(frozen=True)
class PairVerdict:
    """One comparison: the raw winners in both orders and the swap-checked outcome."""

    id: Any
    in_order: str | None  # winner with the candidate shown as A
    swapped: str | None  # winner with the production answer shown as A
    outcome: str | None  # candidate | production | tie; None when a pass failed
    reasons: tuple[str, ...]
    error: str | None
    attempts: int


@dataclass(frozen=True)
class PairwiseResult:
    """Pairwise results in item order; the win rate counts ties as half a win."""

    items: tuple[PairVerdict, ...]
    wins: int
    losses: int
    ties: int
    failures: int
    n_valid: int
    win_rate: float | None  # (wins + 0.5 * ties) / n_valid; None when nothing was judged
    attempts: int
    backend: str

    def metrics(self) -> dict[str, float | None]:
        """The flat metric name of the eval contract: pairwise_win_rate."""
        return {"pairwise_win_rate": self.win_rate}


def swap_outcome(in_order: str, swapped: str) -> str:
    """Candidate, production or tie from the two passes: a verdict counts only if it survives the swap."""
    first = {"A": "candidate", "B": "production"}.get(in_order, "tie")
    second = {"A": "production", "B": "candidate"}.get(swapped, "tie")
    return first if first == second else "tie"


def _verdict(item_id: Any, first: _Outcome, second: _Outcome) -> PairVerdict:
    """Both passes of one item as a verdict; no outcome unless both passes were parsed."""
    in_order = first.parsed["winner"] if first.parsed else None
    swapped = second.parsed["winner"] if second.parsed else None
    return PairVerdict(
        id=item_id,
        in_order=in_order,
        swapped=swapped,
        outcome=swap_outcome(in_order, swapped) if in_order and swapped else None,
        reasons=tuple(o.parsed["reason"] for o in (first, second) if o.parsed),
        error=first.error or second.error,
        attempts=first.attempts + second.attempts,
    )


def judge_pairwise(
    chat: Chat, items: Sequence[Mapping[str, Any]], cfg: JudgeConfig, backend: str = ""
) -> PairwiseResult:
    """Compare candidate (answer_a) with production (answer_b), in both orders to cancel position bias.

    Args:
        chat: the backend.
        items: dicts with id, question, answer_a (candidate), answer_b (production), optionally reference.
        cfg: the judge params (``max_retries``, ``max_examples``).
        backend: the backend's description, recorded in the result.
    """
    items = _checked(items, ("answer_a", "answer_b"), cfg.max_examples)
    conversations = [pairwise_prompt(it, it["answer_a"], it["answer_b"]) for it in items]
    conversations += [pairwise_prompt(it, it["answer_b"], it["answer_a"]) for it in items]
    outcomes = _ask_until_valid(chat, conversations, parse_verdict, cfg.max_retries)
    n = len(items)
    verdicts = [_verdict(it["id"], first, second) for it, first, second in zip(items, outcomes[:n], outcomes[n:])]
    count = {k: sum(v.outcome == k for v in verdicts) for k in ("candidate", "production", "tie")}
    n_valid = sum(count.values())
    win_rate = (count["candidate"] + 0.5 * count["tie"]) / n_valid if n_valid else None
    return PairwiseResult(
        items=tuple(verdicts),
        wins=count["candidate"],
        losses=count["production"],
        ties=count["tie"],
        failures=len(verdicts) - n_valid,
        n_valid=n_valid,
        win_rate=win_rate,
        attempts=sum(o.attempts for o in outcomes),
        backend=backend,
    )
