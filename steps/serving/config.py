"""The serve step's settings: the serve: section of params.yaml."""

from __future__ import annotations

from dataclasses import dataclass

from steps.core.config import ConfigError
from steps.serving.backend import BACKENDS, DTYPES


@dataclass(frozen=True)
class ServeConfig:
    """The ``serve:`` section of params.yaml."""

    model: str = "production"  # a model folder, or a registry stage that `tunegate serve` resolves
    host: str = "127.0.0.1"  # loopback: nothing outside this machine can call it; 0.0.0.0 in a container
    port: int = 8000
    model_name: str | None = None  # the id in /v1/models and in requests; None: the folder's name
    api_key_env: str = "TUNEGATE_API_KEY"  # auth is on when this variable is set
    max_new_tokens: int = 256  # reply length when the request names none
    max_new_tokens_limit: int = 2048  # a request asking for more is refused (400); the context is the model's own (config.json)
    max_concurrency: int = 1  # requests generating at once, decoded together in one batch; params.yaml's 8 batches them
    queue_timeout_s: float = 120.0  # a request waiting longer than this for a slot gets 503
    max_body_bytes: int = 1 << 20  # a larger request body gets 413 and is never kept; 1 MiB is ~250k tokens of text
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
        if self.max_body_bytes < 1024:
            bad("max_body_bytes", f"is the largest request body in bytes, at least 1024 (default 1048576 = 1 MiB); got {self.max_body_bytes}")
        if not 0 < self.gpu_memory_utilization <= 1:
            bad("gpu_memory_utilization", f"is a fraction in (0, 1]; got {self.gpu_memory_utilization}")
        if self.threads is not None and self.threads < 1:
            bad("threads", f"is a count of CPU threads (1 or more), or null for torch's default; got {self.threads}")
        if not self.api_key_env:
            bad("api_key_env", "name the environment variable that holds the API key, e.g. TUNEGATE_API_KEY")
