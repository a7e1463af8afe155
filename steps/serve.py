"""serve: an OpenAI-compatible chat API over one model folder (the production model by default).

``python -m steps.serve [MODEL_DIR] [--params params.yaml] [--host H] [--port P]`` serves
GET /health, GET /v1/models and POST /v1/chat/completions (streaming with ``stream: true``).
The prompt is the model's own chat template rendered by ``steps.models.template`` (the render the
model was trained on) and generation stops at the template's end-of-turn token. A full model
folder or an unmerged PEFT adapter folder (on its ``base_model_name_or_path``) is served, with
vLLM when it is installed on a CUDA GPU and transformers otherwise (steps/serving/backend.py).
Bearer-token auth is on when ``$TUNEGATE_API_KEY`` (``serve.api_key_env``) is set (every path but
/health, the docs included). A client mistake is a 4xx in OpenAI's error shape ``{"error": {message,
type, param, code}}`` naming the field, never a 500; special-token text in a message is tokenized as
text; a body over ``serve.max_body_bytes`` is a 413 and is never kept; a client that leaves stops
its generation.

The HTTP side lives in steps/serving/: steps/serving/app.py (the FastAPI app, auth, the body limit,
routes), steps/serving/chat.py (request and reply shapes, errors in OpenAI's shape) and
steps/serving/prompt.py (the prompt, message text kept as text).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from steps.core.config import ConfigError, load_section
from steps.models.loading import ModelError
from steps.models.template import TemplateError
from steps.serving.app import create_app
from steps.serving.backend import BACKENDS
from steps.serving.config import ServeConfig
from steps.serving.folder import ServeError


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
        cfg = load_section(ServeConfig, "serve", args.params or "params.yaml", missing_ok=args.params is None)
        cfg = dataclasses.replace(cfg, **{k: getattr(args, k) for k in OVERRIDES if getattr(args, k) is not None})
        run(cfg, args.model_dir, resolver)
    except (ConfigError, ServeError, ModelError, TemplateError) as exc:
        print(f"serve: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
