"""The model side of serving: load a model folder (full or unmerged PEFT adapter) and generate.

An engine turns prompt token ids into text pieces, in a background thread, so the server can
stream them as they come and a non-streaming request reads the same pieces to the end. Two
engines: transformers (CPU or GPU, always there) and vLLM (only when it is installed and a CUDA
GPU is visible). Which one runs is ``choose_backend``, a pure function; ``load_engine`` loads it.

The pieces live beside it, layered so none imports this one: steps/serving/generation.py (GenParams,
Generation, StopTrimmer, Run), steps/serving/folder.py (ServeError and what a folder must hold)
and steps/serving/engines.py (TransformersEngine, VllmEngine).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steps.models.folders import read_adapter_config
from steps.serving.engines import TransformersEngine, VllmEngine
from steps.serving.folder import ServeError

if TYPE_CHECKING:  # annotations only: steps.serving.config imports this module
    from steps.serving.config import ServeConfig

BACKENDS = ("auto", "transformers", "vllm")
DTYPES = ("auto", "float32", "bfloat16", "float16")


def choose_backend(requested: str, vllm_installed: bool, cuda: bool, lora_or_full: bool = True) -> str:
    """The backend to serve with: vLLM only when installed, on CUDA, and able to serve the folder.

    Args:
        requested: ``serve.backend``: auto, transformers or vllm.
        vllm_installed: the ``vllm`` package imports.
        cuda: a CUDA GPU is visible.
        lora_or_full: the folder is a full model or a LoRA adapter (vLLM serves no other PEFT type).

    Raises:
        ServeError: vllm was asked for but cannot run here.
    """
    if requested == "transformers":
        return "transformers"
    if requested == "vllm":
        why = (
            "the vllm package is not installed (use the tunegate-gpu image or `pip install vllm`)" if not vllm_installed
            else "no CUDA GPU is visible" if not cuda
            else "vLLM serves full models and LoRA adapters only; merge this adapter first (merge step)" if not lora_or_full
            else ""
        )  # fmt: skip
        if why:
            raise ServeError(f"serve.backend: vllm requested but {why}; or set serve.backend: auto or transformers")
        return "vllm"
    return "vllm" if vllm_installed and cuda and lora_or_full else "transformers"


def load_engine(cfg: ServeConfig, model_dir: Path) -> Any:
    """The engine for ``model_dir`` on the backend ``choose_backend`` picks here."""
    adapter = read_adapter_config(model_dir)
    lora_or_full = adapter is None or (str(adapter.get("peft_type", "")).upper() == "LORA" and not adapter.get("use_dora"))
    cuda = False
    if importlib.util.find_spec("vllm") is not None:
        import torch

        cuda = torch.cuda.is_available()
    chosen = choose_backend(cfg.backend, importlib.util.find_spec("vllm") is not None, cuda, lora_or_full)
    if chosen == "vllm":
        return VllmEngine(model_dir, cfg.dtype, cfg.gpu_memory_utilization, cfg.adapter_base)
    return TransformersEngine(model_dir, cfg.dtype, cfg.adapter_base)
