"""The two engines: transformers ``generate`` (CPU or GPU, always there) and vLLM (CUDA, when installed).

Each loads a model folder (a full model, or an unmerged PEFT adapter on its base) and turns prompt
token ids into a ``Run`` of text pieces. Which one serves is ``steps.serving.backend.load_engine``'s
choice. The transformers engine batches concurrent requests (steps/serving/batching.py), except
under a prompt-learning adapter (prompt, prefix or p-tuning), whose virtual tokens only
``generate`` knows how to feed: those requests each run ``generate`` alone. Both decode under a
JSON grammar when a request asks for one (``compile_schema``).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from steps.models.folders import read_adapter_config, with_adapter
from steps.models.loading import tokenizer_from
from steps.serving.batching import Scheduler
from steps.serving.folder import base_of, chat_stop_ids, context_length, torch_dtype
from steps.serving.generation import Generation, GenParams, Run

# Under generate (prompt-learning adapters), stop strings up to this long also stop generate at the token that completes
# them (transformers' StopStringCriteria, whose set-up scans the vocabulary per character: 0.3 s for 10 characters, 8 s
# for 1000 on SmolLM2's 49k tokens). Longer ones are cut by the server's StopTrimmer alone, which ends the run at the
# next token. The batch scheduler checks every stop string in the decoded text itself.
STOP_SCAN_CHARS = 64


def _has_tokenizer(folder: Path) -> bool:
    return any((Path(folder) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))


def _schema_checked(schema: Any) -> Any:
    """``schema`` when every keyword in it would be enforced; ValueError naming the first that would not."""
    from steps.models.structured import unenforced_keyword

    if (where := unenforced_keyword(schema)) is not None:
        raise ValueError(f"{where}: this keyword is not enforced by the structured-output decoder (xgrammar), "
                         f"so a reply could break it; remove it or say it with keywords it enforces (anyOf, enum, bounds)")
    return schema


class TransformersEngine:
    """transformers on one model: concurrent requests decoded together (``Scheduler``), or ``generate`` per request."""

    backend = "transformers"

    def __init__(self, model_dir: Path, dtype: str, adapter_base: str | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, GenerationConfig

        model_dir = Path(model_dir)
        adapter = read_adapter_config(model_dir)
        base_dir = base_of(model_dir, adapter_base) if adapter else str(model_dir)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = tokenizer_from(model_dir if _has_tokenizer(model_dir) else base_dir)
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch_dtype(dtype))
        self.gen_config = model.generation_config
        if adapter:
            if len(self.tokenizer) > model.get_input_embeddings().num_embeddings:  # training added tokens
                model.resize_token_embeddings(len(self.tokenizer))
            model = with_adapter(model, model_dir)
            if (model_dir / "generation_config.json").is_file():
                self.gen_config = GenerationConfig.from_pretrained(str(model_dir))
        self.model = model.to(self.device).eval()
        # prompt tuning's virtual tokens take positions of the context too
        self.context = context_length(model.config, self.tokenizer) - int((adapter or {}).get("num_virtual_tokens") or 0)
        self.stop_ids = chat_stop_ids(model_dir, self.tokenizer, self.gen_config.eos_token_id)
        config = getattr(self.model, "active_peft_config", None)
        prompt_learning = bool(getattr(config, "is_prompt_learning", False))
        decoder = copy.deepcopy(self.tokenizer)  # the scheduler thread's own: one fast tokenizer is not for concurrent callers
        self.scheduler = None if prompt_learning else Scheduler(self.model, decoder, self.stop_ids, self.gen_config)
        self._grammars: Any = None
        self._grammar_lock = threading.Lock()

    def compile_schema(self, schema: Any) -> Any:
        """The xgrammar grammar of a JSON schema, for ``GenParams.grammar`` (the vocabulary is read at the first call).

        Raises:
            ValueError: a keyword the decoder would not enforce (``steps.models.structured.unenforced_keyword``).
            RuntimeError: xgrammar cannot compile the schema.
        """
        from steps.models.structured import JsonGrammars

        with self._grammar_lock:
            if self._grammars is None:
                self._grammars = JsonGrammars(self.tokenizer, self.model.config.vocab_size, self.stop_ids)
        return self._grammars.compile(_schema_checked(schema))

    def start(self, prompt_ids: list[int], params: GenParams, on_done: Callable[[], None]) -> Run:
        """Start generating; the Run yields text pieces as tokens arrive."""
        if self.scheduler is None:
            return Run.in_thread(lambda emit, cancelled: self._generate(prompt_ids, params, emit, cancelled), on_done)
        run = Run(on_done)
        self.scheduler.submit(prompt_ids, params, run)
        return run

    def _generate(self, prompt_ids: list[int], params: GenParams, emit: Callable[[str], None], cancelled: threading.Event) -> Generation:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList, TextStreamer

        class Piece(TextStreamer):
            def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                if text:
                    emit(text)

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), cancelled.is_set(), dtype=torch.bool, device=input_ids.device)

        if params.seed is not None:
            torch.manual_seed(params.seed % 2**64)  # one generation at a time per slot: the global RNG is ours
        ids = torch.tensor([prompt_ids], device=self.device)
        grammar = []
        if params.grammar is not None:
            import xgrammar as xgr

            grammar = [xgr.contrib.hf.LogitsProcessor(params.grammar)]  # stateful: one per generate call
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                generation_config=self._config(params),
                streamer=Piece(self.tokenizer, skip_prompt=True, skip_special_tokens=True),
                stopping_criteria=StoppingCriteriaList([Cancelled()]),
                logits_processor=LogitsProcessorList(grammar),
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
        gen.stop_strings = [s for s in params.stop if len(s) <= STOP_SCAN_CHARS] or None
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
        from transformers import AutoConfig, GenerationConfig
        from vllm import LLM
        from vllm.lora.request import LoRARequest

        adapter = read_adapter_config(model_dir)
        base_dir = base_of(model_dir, adapter_base) if adapter else str(model_dir)
        tok_dir = str(model_dir) if _has_tokenizer(model_dir) else base_dir
        self.tokenizer = tokenizer_from(tok_dir)
        self.context = context_length(AutoConfig.from_pretrained(base_dir), self.tokenizer)
        gen_dir = model_dir if (Path(model_dir) / "generation_config.json").is_file() else base_dir
        self.gen_config = GenerationConfig.from_pretrained(str(gen_dir))
        self.stop_ids = chat_stop_ids(model_dir, self.tokenizer, self.gen_config.eos_token_id)
        rank = 1 << max(3, int(adapter.get("r", 8)) - 1).bit_length() if adapter else 0  # vLLM takes 8, 16, 32...
        lora = {"enable_lora": True, "max_lora_rank": rank} if adapter else {}
        self.llm = LLM(model=base_dir, tokenizer=tok_dir, dtype=dtype, gpu_memory_utilization=gpu_memory_utilization, **lora)
        self.lora = LoRARequest("adapter", 1, str(model_dir)) if adapter else None
        self._lock = threading.Lock()  # LLM.generate is not for concurrent callers

    def compile_schema(self, schema: Any) -> Any:
        """None: vLLM compiles ``GenParams.schema`` itself (structured outputs); the schema is checked here."""
        _schema_checked(schema)
        return None

    def start(self, prompt_ids: list[int], params: GenParams, on_done: Callable[[], None]) -> Run:
        from vllm import SamplingParams

        def work(emit: Callable[[str], None], cancelled: threading.Event) -> Generation:
            sample = bool(self.gen_config.do_sample)  # the model's own defaults, as transformers would use them
            temperature = params.temperature if params.temperature is not None else (self.gen_config.temperature or 1.0) * sample
            top_p = params.top_p if params.top_p is not None else (self.gen_config.top_p or 1.0) if sample else 1.0
            sampling = SamplingParams(
                max_tokens=params.max_new_tokens, temperature=temperature, top_p=top_p, seed=params.seed,
                stop=list(params.stop) or None, stop_token_ids=self.stop_ids, skip_special_tokens=True,
                **_structured(params.schema),
            )  # fmt: skip
            with self._lock:
                out = self.llm.generate([{"prompt_token_ids": prompt_ids}], sampling, lora_request=self.lora, use_tqdm=False)
            done = out[0].outputs[0]
            emit(done.text)
            return Generation(completion_tokens=len(done.token_ids), stopped=done.finish_reason == "stop")

        return Run.in_thread(work, on_done)


def _structured(schema: Any) -> dict[str, Any]:
    """vLLM's sampling argument that decodes under a JSON schema (its API was renamed in 0.10.2)."""
    if schema is None:
        return {}
    try:
        from vllm.sampling_params import StructuredOutputsParams

        return {"structured_outputs": StructuredOutputsParams(json=schema)}
    except ImportError:
        from vllm.sampling_params import GuidedDecodingParams

        return {"guided_decoding": GuidedDecodingParams(json=schema)}
