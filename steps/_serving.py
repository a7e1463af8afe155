"""The model side of serving: load a model folder (full or unmerged PEFT adapter) and generate.

An engine turns prompt token ids into text pieces, in a background thread, so the server can
stream them as they come and a non-streaming request reads the same pieces to the end. Two
engines: transformers (CPU or GPU, always there) and vLLM (only when it is installed and a CUDA
GPU is visible). Which one runs is ``choose_backend``, a pure function.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steps._model import ModelError, ensure_local_model

BACKENDS = ("auto", "transformers", "vllm")
DTYPES = ("auto", "float32", "bfloat16", "float16")
_END = object()
_PROBE = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Bye"},
    {"role": "assistant", "content": "Goodbye."},
]


class ServeError(ValueError):
    """A model folder or serve setting that cannot be served; the message names it and the fix."""


@dataclass(frozen=True)
class GenParams:
    """One request's sampling settings; None means the model's own generation_config value."""

    max_new_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class Generation:
    """What a finished generation reports: tokens generated, and whether it ended by itself."""

    completion_tokens: int
    stopped: bool  # an end-of-turn/eos token or a stop string ended it; False: max_new_tokens did


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


class StopTrimmer:
    """Cuts streamed text at the first stop string, holding back what could be the start of one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.buf, self.stopped = "", False

    def feed(self, text: str) -> str:
        """The part of the text seen so far that is safe to send."""
        if self.stopped:
            return ""
        self.buf += text
        cuts = [i for i in (self.buf.find(s) for s in self.stops) if i >= 0]
        if cuts:
            out, self.buf, self.stopped = self.buf[: min(cuts)], "", True
            return out
        n = max(0, len(self.buf) - self.hold)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def flush(self) -> str:
        """What was held back, once the generation has ended without a stop string."""
        out, self.buf = ("" if self.stopped else self.buf), ""
        return out


class Run:
    """One generation in a daemon thread: iterate it for text pieces, then read ``result``.

    ``work(emit, cancelled)`` generates, calling ``emit(text)`` per piece, and returns a
    Generation; ``on_done`` runs when the thread ends whatever happened (it frees the slot).
    """

    def __init__(self, work: Callable[[Callable[[str], None], threading.Event], Generation], on_done: Callable[[], None]) -> None:
        self._q: queue.Queue[Any] = queue.Queue()
        self.cancelled = threading.Event()
        self.result: Generation | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, args=(work, on_done), name="tunegate-generate", daemon=True)
        self._thread.start()

    def _main(self, work: Callable[..., Generation], on_done: Callable[[], None]) -> None:
        try:
            self.result = work(self._q.put, self.cancelled)
        except BaseException as exc:  # handed to the reader, who reports it
            self.error = exc
        finally:
            self._q.put(_END)
            on_done()

    def __iter__(self) -> Iterator[str]:
        while (item := self._q.get()) is not _END:
            yield item
        if self.error is not None:
            raise self.error

    def cancel(self) -> None:
        """Ask the generation to stop at its next token (the client went away)."""
        self.cancelled.set()

    def join(self, timeout: float | None = None) -> Generation | None:
        """Wait for the generation thread; its result (None if it failed or is still running)."""
        self._thread.join(timeout)
        return self.result


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


def _has_tokenizer(folder: Path) -> bool:
    return any((Path(folder) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))


class TransformersEngine:
    """transformers ``generate`` on one model, with a TextStreamer feeding the Run's pieces."""

    backend = "transformers"

    def __init__(self, model_dir: Path, dtype: str, adapter_base: str | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

        model_dir = Path(model_dir)
        adapter = read_adapter_config(model_dir)
        base_dir = base_of(model_dir, adapter, adapter_base) if adapter else str(model_dir)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir) if _has_tokenizer(model_dir) else base_dir)
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch_dtype(dtype))
        self.gen_config = model.generation_config
        if adapter:
            from peft import PeftModel

            if len(self.tokenizer) > model.get_input_embeddings().num_embeddings:  # training added tokens
                model.resize_token_embeddings(len(self.tokenizer))
            model = PeftModel.from_pretrained(model, str(model_dir))
            if (model_dir / "generation_config.json").is_file():
                self.gen_config = GenerationConfig.from_pretrained(str(model_dir))
        self.model = model.to(self.device).eval()
        # prompt tuning's virtual tokens take positions of the context too
        self.context = context_length(model.config, self.tokenizer) - int((adapter or {}).get("num_virtual_tokens") or 0)
        self.stop_ids = chat_stop_ids(model_dir, self.tokenizer, self.gen_config.eos_token_id)

    def start(self, prompt_ids: list[int], params: GenParams, on_done: Callable[[], None]) -> Run:
        """Generate in a background thread; the Run yields text pieces as tokens arrive."""
        return Run(lambda emit, cancelled: self._generate(prompt_ids, params, emit, cancelled), on_done)

    def _generate(self, prompt_ids: list[int], params: GenParams, emit: Callable[[str], None], cancelled: threading.Event) -> Generation:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextStreamer

        class Piece(TextStreamer):
            def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                if text:
                    emit(text)

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), cancelled.is_set(), dtype=torch.bool, device=input_ids.device)

        if params.seed is not None:
            torch.manual_seed(params.seed)  # one generation at a time per slot: the global RNG is ours
        ids = torch.tensor([prompt_ids], device=self.device)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                generation_config=self._config(params),
                streamer=Piece(self.tokenizer, skip_prompt=True, skip_special_tokens=True),
                stopping_criteria=StoppingCriteriaList([Cancelled()]),
                tokenizer=self.tokenizer if params.stop else None,  # stop_strings need it
            )
        new = out[0, len(prompt_ids) :].tolist()
        ended = bool(new) and new[-1] in self.stop_ids
        return Generation(completion_tokens=len(new), stopped=ended or len(new) < params.max_new_tokens)

    def _config(self, params: GenParams) -> Any:
        """The model's own generation_config with the request's settings on top."""
        gen = copy.deepcopy(self.gen_config)
        gen.max_new_tokens, gen.max_length = params.max_new_tokens, None
        pad = self.tokenizer.pad_token_id
        gen.eos_token_id, gen.pad_token_id = self.stop_ids, self.stop_ids[0] if pad is None else pad
        gen.stop_strings = list(params.stop) or None
        if params.temperature == 0:
            gen.do_sample = False
        elif params.temperature is not None or (params.top_p is not None and params.top_p < 1):
            gen.do_sample = True
        if gen.do_sample:
            gen.temperature = params.temperature if params.temperature is not None else gen.temperature
            gen.top_p = params.top_p if params.top_p is not None else gen.top_p
        else:
            gen.temperature = gen.top_p = gen.top_k = None  # greedy: sampling knobs would only warn
        return gen


class VllmEngine:
    """vLLM's offline ``LLM`` on a CUDA GPU; a LoRA adapter rides on its base. Streams one piece at the end."""

    backend = "vllm"

    def __init__(self, model_dir: Path, dtype: str, gpu_memory_utilization: float, adapter_base: str | None = None) -> None:
        from transformers import AutoConfig, AutoTokenizer, GenerationConfig
        from vllm import LLM
        from vllm.lora.request import LoRARequest

        adapter = read_adapter_config(model_dir)
        base_dir = base_of(model_dir, adapter, adapter_base) if adapter else str(model_dir)
        tok_dir = str(model_dir) if _has_tokenizer(model_dir) else base_dir
        self.tokenizer = AutoTokenizer.from_pretrained(tok_dir)
        self.context = context_length(AutoConfig.from_pretrained(base_dir), self.tokenizer)
        gen_dir = model_dir if (Path(model_dir) / "generation_config.json").is_file() else base_dir
        self.gen_config = GenerationConfig.from_pretrained(str(gen_dir))
        self.stop_ids = chat_stop_ids(model_dir, self.tokenizer, self.gen_config.eos_token_id)
        rank = 1 << max(3, int(adapter.get("r", 8)) - 1).bit_length() if adapter else 0  # vLLM takes 8, 16, 32...
        lora = {"enable_lora": True, "max_lora_rank": rank} if adapter else {}
        self.llm = LLM(model=base_dir, tokenizer=tok_dir, dtype=dtype, gpu_memory_utilization=gpu_memory_utilization, **lora)
        self.lora = LoRARequest("adapter", 1, str(model_dir)) if adapter else None
        self._lock = threading.Lock()  # LLM.generate is not for concurrent callers

    def start(self, prompt_ids: list[int], params: GenParams, on_done: Callable[[], None]) -> Run:
        from vllm import SamplingParams

        def work(emit: Callable[[str], None], cancelled: threading.Event) -> Generation:
            sample = bool(self.gen_config.do_sample)  # the model's own defaults, as transformers would use them
            temperature = params.temperature if params.temperature is not None else (self.gen_config.temperature or 1.0) * sample
            top_p = params.top_p if params.top_p is not None else (self.gen_config.top_p or 1.0) if sample else 1.0
            sampling = SamplingParams(
                max_tokens=params.max_new_tokens, temperature=temperature, top_p=top_p, seed=params.seed,
                stop=list(params.stop) or None, stop_token_ids=self.stop_ids, skip_special_tokens=True,
            )  # fmt: skip
            with self._lock:
                out = self.llm.generate([{"prompt_token_ids": prompt_ids}], sampling, lora_request=self.lora, use_tqdm=False)
            done = out[0].outputs[0]
            emit(done.text)
            return Generation(completion_tokens=len(done.token_ids), stopped=done.finish_reason == "stop")

        return Run(work, on_done)


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


def load_engine(cfg: Any, model_dir: Path) -> Any:
    """The engine for ``model_dir`` on the backend ``choose_backend`` picks here (``cfg``: a ServeConfig)."""
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
