"""Tiny real models and tokenizers for tests, built locally: no download, a training step in milliseconds.

``tiny_tokenizer()`` is a byte-level BPE trained here on a few sentences, with the same
ChatML chat template as SmolLM2-135M-Instruct; unlike SmolLM2 its pad token (``<|pad|>``)
is distinct from its end-of-turn/eos token (``<|im_end|>``). The models are 2-layer Llamas
built from a config with a fixed seed, in float32.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

# SmolLM2-135M-Instruct's chat template, verbatim (default system message included).
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|pad|>", "<|im_start|>", "<|im_end|>", "<|endoftext|>"]
VOCAB_SIZE = 512  # 256 bytes + 4 specials + ~250 merges: short sequences, tiny embedding

_CORPUS = [
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
    "system user assistant tool function_call",
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France? The capital of France is Paris.",
    "Hello! How can I help you today? Thanks, that is all.",
    "Please answer in one short sentence. Sure, here is the answer.",
    "1 2 3 4 5 6 7 8 9 10 + - * / = ( ) [ ] { } \" ' : ; , . ! ?",
    'def add(a, b): return a + b {"name": "get_weather", "arguments": {"city": "Paris"}}',
    "positive negative neutral good bad great terrible",
]


@functools.cache
def _trained_bpe() -> str:
    """The BPE trained once per process (deterministic), as JSON; each caller gets a fresh tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_CORPUS, trainer=trainer)
    return core.to_str()


def tiny_tokenizer(tmp_dir: str | Path | None = None) -> Any:
    """A small byte-level BPE tokenizer with SmolLM2's ChatML template.

    Args:
        tmp_dir: if given, the tokenizer is also saved there (``AutoTokenizer.from_pretrained`` loads it).

    Returns:
        A ``PreTrainedTokenizerFast`` with eos ``<|im_end|>``, pad ``<|pad|>``, bos ``<|im_start|>``.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer.from_str(_trained_bpe())
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        unk_token="<|endoftext|>",
        model_max_length=512,
    )
    tok.chat_template = CHATML_TEMPLATE
    if tmp_dir is not None:
        tok.save_pretrained(str(tmp_dir))
    return tok


def _config(tokenizer: Any, layers: int, hidden: int, **extra: Any) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        **extra,
    )


def _seeded(build: Any, seed: int) -> Any:
    import torch

    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's RNG
        torch.manual_seed(seed)
        model = build()
    return model.float()


def tiny_causal_lm(tokenizer: Any, layers: int = 2, hidden: int = 64, seed: int = 0) -> Any:
    """A randomly initialised ``LlamaForCausalLM`` (float32) sized to ``tokenizer``; eos/pad from it."""
    from transformers import LlamaForCausalLM

    model = _seeded(lambda: LlamaForCausalLM(_config(tokenizer, layers, hidden)), seed)
    gen = model.generation_config
    gen.eos_token_id, gen.pad_token_id, gen.bos_token_id = (
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
        tokenizer.bos_token_id,
    )
    return model


def tiny_seq_cls(tokenizer: Any, num_labels: int, layers: int = 2, hidden: int = 64, seed: int = 0) -> Any:
    """A randomly initialised ``LlamaForSequenceClassification`` with ``num_labels`` outputs."""
    from transformers import LlamaForSequenceClassification

    return _seeded(
        lambda: LlamaForSequenceClassification(_config(tokenizer, layers, hidden, num_labels=num_labels)), seed
    )


def save_tiny_model(path: str | Path, layers: int = 2, hidden: int = 64) -> str:
    """Save a tiny tokenizer + causal LM (+ generation config) to ``path``, usable as ``base_model:``.

    Returns:
        ``str(path)``; ``AutoTokenizer``/``AutoModelForCausalLM.from_pretrained`` load it offline.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = tiny_tokenizer()
    model = tiny_causal_lm(tok, layers=layers, hidden=hidden)
    tok.save_pretrained(str(path))
    model.save_pretrained(str(path))  # writes generation_config.json with eos/pad too
    return str(path)
