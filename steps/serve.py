"""serve: an OpenAI-compatible chat API over one model folder (the production model by default).

``python -m steps.serve [MODEL_DIR] [--params params.yaml] [--host H] [--port P]`` serves
GET /health, GET /v1/models and POST /v1/chat/completions (streaming with ``stream: true``).
The prompt is the model's own chat template rendered by ``steps._template`` (the render the
model was trained on) and generation stops at the template's end-of-turn token. A full model
folder or an unmerged PEFT adapter folder (on its ``base_model_name_or_path``) is served, with
vLLM when it is installed on a CUDA GPU and transformers otherwise (steps/_serving.py).
Bearer-token auth is on when ``$TUNEGATE_API_KEY`` (``serve.api_key_env``) is set. A client
mistake is a 4xx in OpenAI's error shape ``{"error": {message, type, param, code}}``, never a 500.

The HTTP side lives in private modules, re-exported here: steps/_serve_app.py (the FastAPI app,
auth, routes) and steps/_serve_chat.py (request and reply shapes, errors in OpenAI's shape).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from steps._config import ConfigError, load_section
from steps._model import ModelError
from steps._serve_app import BearerAuth, EventStream, build_prompt, create_app, log, token_budget
from steps._serve_chat import ROLES, ApiError, ChatRequest, Message, Reply, StreamOptions, validation_error
from steps._serving import BACKENDS, DTYPES, ServeError
from steps._template import TemplateError

__all__ = [
    "OVERRIDES", "ROLES", "ApiError", "BearerAuth", "ChatRequest", "EventStream", "Message", "Reply", "ServeConfig",
    "StreamOptions", "build_prompt", "create_app", "log", "main", "parser", "resolve_model_dir", "run", "token_budget",
    "validation_error",
]  # fmt: skip


@dataclass(frozen=True)
class ServeConfig:
    """The ``serve:`` section of params.yaml."""

    model: str = "production"  # a model folder, or a registry stage that `tunegate serve` resolves
    host: str = "127.0.0.1"  # loopback: nothing outside this machine can call it; 0.0.0.0 in a container
    port: int = 8000
    model_name: str | None = None  # the id in /v1/models and in requests; None: the folder's name
    api_key_env: str = "TUNEGATE_API_KEY"  # auth is on when this variable is set
    max_new_tokens: int = 256  # reply length when the request names none
    max_new_tokens_limit: int = 2048  # a request asking for more is refused (400)
    max_concurrency: int = 1  # generations at once; on CPU one at a time is fastest per request
    queue_timeout_s: float = 120.0  # a request waiting longer than this for a slot gets 503
    backend: str = "auto"  # auto: vllm when installed on a CUDA GPU, else transformers
    dtype: str = "auto"  # auto: bfloat16 on a GPU, float32 on CPU
    gpu_memory_utilization: float = 0.85  # vLLM's share of GPU memory (weights + KV cache)
    adapter_base: str | None = None  # an adapter's base folder here, when its base_model_name_or_path is elsewhere
    threads: int | None = None  # torch CPU threads; None: torch's default. Set it to the container's CPU limit

    def __post_init__(self) -> None:
        def bad(key: str, why: str) -> None:
            raise ConfigError(f"serve.{key}: {why}")

        if self.backend not in BACKENDS:
            bad("backend", f"must be one of {', '.join(BACKENDS)}; got {self.backend!r}")
        if self.dtype not in DTYPES:
            bad("dtype", f"must be one of {', '.join(DTYPES)}; got {self.dtype!r}")
        if not 0 <= self.port <= 65535:
            bad("port", f"must be a TCP port (0-65535); got {self.port}")
        if not 1 <= self.max_new_tokens <= self.max_new_tokens_limit:
            bad("max_new_tokens", f"need 1 <= max_new_tokens <= max_new_tokens_limit; got {self.max_new_tokens} and {self.max_new_tokens_limit}")
        if self.max_concurrency < 1 or self.queue_timeout_s <= 0:
            bad("max_concurrency", f"need max_concurrency >= 1 and queue_timeout_s > 0; got {self.max_concurrency}, {self.queue_timeout_s}")
        if not 0 < self.gpu_memory_utilization <= 1:
            bad("gpu_memory_utilization", f"is a fraction in (0, 1]; got {self.gpu_memory_utilization}")
        if self.threads is not None and self.threads < 1:
            bad("threads", f"is a count of CPU threads (1 or more), or null for torch's default; got {self.threads}")
        if not self.api_key_env:
            bad("api_key_env", "name the environment variable that holds the API key, e.g. TUNEGATE_API_KEY")


def resolve_model_dir(spec: str, resolver: Callable[[str], str | Path | None] | None = None) -> Path:
    """The folder to serve: ``spec`` if it is one, else what ``resolver`` (the registry) says it names.

    ``resolver(spec)`` returns the local folder of a registry stage such as ``production``, or None
    when the stage holds no model.

    Raises:
        ServeError: no such folder, or one that holds no model (config.json or adapter_config.json).
    """
    path = Path(spec).expanduser()
    if not path.is_dir():
        if resolver is None:
            raise ServeError(
                f"serve.model '{spec}': no such folder, and registry stages need the registry; pass a model folder "
                f"(e.g. models/merged) or run `tunegate serve`, which resolves '{spec}' from the registry"
            )
        found = resolver(spec)
        if found is None:
            raise ServeError(f"serve.model '{spec}': the registry has no model there yet; promote one, or pass a model folder")
        path = Path(found).expanduser()
    if not ((path / "config.json").is_file() or (path / "adapter_config.json").is_file()):
        raise ServeError(
            f"serve.model '{spec}': {path} holds no model (no config.json or adapter_config.json); point it at the "
            f"merge step's output (models/merged) or a train output folder"
        )
    return path


# ---------------------------------------------------------------- entry points
def run(cfg: ServeConfig, model_dir: Path | str | None = None, resolver: Callable[[str], str | Path | None] | None = None) -> None:
    """Serve until interrupted: ``model_dir``, or ``cfg.model`` resolved (through ``resolver`` for registry stages)."""
    import torch
    import uvicorn

    if cfg.threads:  # more threads than the CPUs a container may use makes every token many times slower
        torch.set_num_threads(cfg.threads)
    folder = resolve_model_dir(str(model_dir or cfg.model), resolver)
    app = create_app(cfg, folder)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="info")


OVERRIDES = ("host", "port", "model_name", "backend", "adapter_base")  # flags that override the serve: section


def parser() -> argparse.ArgumentParser:
    """``python -m steps.serve [MODEL_DIR] [--params P] [--host H] [--port N] [--model-name ID] [--backend B] [--adapter-base DIR]``."""
    ap = argparse.ArgumentParser(prog="python -m steps.serve", description=(__doc__ or "").split("\n")[0])
    ap.add_argument("model_dir", nargs="?", default=None, help="model folder; default: serve.model from params")
    ap.add_argument("--params", default=None, help="params file (default: params.yaml, or built-in defaults without one)")
    ap.add_argument("--host")
    ap.add_argument("--port", type=int)
    ap.add_argument("--model-name", dest="model_name", help="the model id clients send; default: the folder's name")
    ap.add_argument("--backend", choices=BACKENDS)
    ap.add_argument("--adapter-base", dest="adapter_base", help="an adapter's base model folder on this machine")
    return ap


def main(argv: list[str] | None = None, resolver: Callable[[str], str | Path | None] | None = None) -> int:
    """Serve until interrupted; 2 with one line on stderr when the params or the model cannot be served."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        params = args.params or ("params.yaml" if Path("params.yaml").is_file() else {})
        cfg = load_section(ServeConfig, "serve", params)
        cfg = dataclasses.replace(cfg, **{k: getattr(args, k) for k in OVERRIDES if getattr(args, k) is not None})
        run(cfg, args.model_dir, resolver)
    except (ConfigError, ServeError, ModelError, TemplateError) as exc:
        print(f"serve: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
