"""serve: a real uvicorn server on a free port, the official ``openai`` client as the caller.

The served models are tiny 2-layer Llamas taught (in about a second) to answer "Hello" with
"Hi there" and the end-of-turn token, so a reply that stops by itself proves generation stops at
the template's end-of-turn token, and a greedy reply equal to the local one proves the prompt is
the training render. One server serves an unmerged LoRA adapter folder on its base.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import openai
import pytest
import torch

from steps import serve
from steps.core.config import ConfigError, load_section
from steps.models.template import inference_prompt_ids, render_with_mask
from steps.serving.app import create_app
from steps.serving.backend import choose_backend
from steps.serving.chat import ChatRequest
from steps.serving.config import ServeConfig
from steps.serving.folder import ServeError
from steps.serving.generation import StopTrimmer
from tests.helpers import ROOT, one_torch_thread

HELLO = [{"role": "user", "content": "Hello"}]
TAUGHT = [*HELLO, {"role": "assistant", "content": "Hi there"}]
KEY = "s3cret-token"


def _teach(model, tokenizer, steps: int = 20, lr: float = 1e-2) -> None:
    """Overfit ``model`` on TAUGHT with the training render (loss on the assistant turn and its end token)."""
    ids, mask = render_with_mask(tokenizer, TAUGHT)
    x, labels = torch.tensor([ids]), torch.tensor([[i if m else -100 for i, m in zip(ids, mask)]])
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)  # r=8 LoRA learns it in ~5 steps
    model.train()
    for _ in range(steps):
        model(input_ids=x, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


def _greedy(model, tokenizer, messages, max_new: int) -> str:
    ids = torch.tensor([inference_prompt_ids(tokenizer, messages)])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new, do_sample=False)
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


one_thread = pytest.fixture(scope="module", autouse=True)(one_torch_thread)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    """base (untrained), adapter (LoRA on base, taught) and chat (that adapter merged: a full model) folders."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("serve")
    base = Path(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(str(base))
    torch.manual_seed(0)
    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(str(base)), LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    _teach(lora, tok)
    lora.save_pretrained(str(root / "adapter"))  # adapter_config.json: base_model_name_or_path = the base folder
    lora.merge_and_unload().save_pretrained(str(root / "chat"))  # after saving the adapter: merging is in place
    for name in ("adapter", "chat"):
        tok.save_pretrained(str(root / name))
    return {"base": base, "chat": root / "chat", "adapter": root / "adapter"}


def serving(app) -> AbstractContextManager[str]:
    """Run ``app`` under uvicorn in a thread on a free port; yields its base URL."""
    from tests.openai_server import serving as serve_app

    return serve_app(app)


def _app(model_dir: Path, key: str | None = None, **cfg):
    with pytest.MonkeyPatch.context() as mp:  # the key is read once, when the app is made
        mp.setenv("TUNEGATE_API_KEY", key) if key is not None else mp.delenv("TUNEGATE_API_KEY", raising=False)
        return create_app(ServeConfig(**cfg), model_dir)


@pytest.fixture(scope="module")
def url(dirs) -> Iterator[str]:
    with serving(_app(dirs["chat"], model_name="tiny-chat")) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def client(url) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)


# ---------------------------------------------------------------- pure parts
def test_config_checks_itself():
    with pytest.raises(ConfigError, match="backend"):
        ServeConfig(backend="tpu")
    with pytest.raises(ConfigError, match="max_new_tokens"):
        ServeConfig(max_new_tokens=4096, max_new_tokens_limit=2048)
    with pytest.raises(ConfigError, match="did you mean 'port'"):
        load_section(ServeConfig, "serve", {"serve": {"prot": 80}})
    assert load_section(ServeConfig, "serve", {"serve": {"port": 9000}}).port == 9000


def test_choose_backend():
    assert choose_backend("auto", vllm_installed=True, cuda=True) == "vllm"
    assert choose_backend("auto", vllm_installed=True, cuda=False) == "transformers"
    assert choose_backend("auto", vllm_installed=False, cuda=True) == "transformers"
    assert choose_backend("auto", True, True, lora_or_full=False) == "transformers"  # an IA3 or prefix adapter
    assert choose_backend("transformers", True, True) == "transformers"
    for installed, cuda, why in [(False, True, "not installed"), (True, False, "no CUDA GPU")]:
        with pytest.raises(ServeError, match=why):
            choose_backend("vllm", installed, cuda)


def test_stop_trimmer_holds_back_a_split_stop_string():
    trim = StopTrimmer(["END"])
    sent = "".join(trim.feed(p) for p in ["ab", "cE", "N", "Dxyz"]) + trim.flush()
    assert (sent, trim.stopped) == ("abc", True)
    trim = StopTrimmer(["END"])
    assert "".join(trim.feed(p) for p in ["ab", "cE"]) + trim.flush() == "abcE" and not trim.stopped


def test_resolve_model_dir(dirs, tmp_path):
    assert serve.resolve_model_dir(str(dirs["chat"])) == dirs["chat"]
    assert serve.resolve_model_dir("production", lambda stage: dirs["adapter"]) == dirs["adapter"]
    with pytest.raises(ServeError, match="tunegate serve"):
        serve.resolve_model_dir("production")
    with pytest.raises(ServeError, match="no model there yet"):
        serve.resolve_model_dir("production", lambda stage: None)
    with pytest.raises(ServeError, match="holds no model"):
        serve.resolve_model_dir(str(tmp_path))


def test_bad_model_or_empty_key_fail_before_serving(dirs, tmp_path, monkeypatch, capsys):
    assert serve.main([str(tmp_path / "missing"), "--params", str(tmp_path / "p.yaml")]) == 2
    (tmp_path / "p.yaml").write_text("serve: {port: 0}\n")
    assert serve.main([str(tmp_path / "missing"), "--params", str(tmp_path / "p.yaml")]) == 2
    assert "no such folder" in capsys.readouterr().err
    monkeypatch.setenv("TUNEGATE_API_KEY", " ")
    with pytest.raises(ServeError, match="set but empty"):
        create_app(ServeConfig(), dirs["chat"])


def test_openai_messages_become_canonical_turns():
    req = ChatRequest.model_validate({"model": "m", "messages": [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "content": "42"},
    ]})  # fmt: skip
    roles = [(m["role"], m["content"][:8]) for m in (msg.canonical() for msg in req.messages)]
    assert roles == [("system", "Be brief"), ("user", "a\nb"), ("function_call", '[{"id": '), ("tool", "42")]


# ---------------------------------------------------------------- the server, through the openai client
def test_chat_completion_stops_at_end_of_turn(client, dirs):
    from transformers import AutoTokenizer

    reply = client.chat.completions.create(model="tiny-chat", messages=HELLO, max_tokens=10)
    choice = reply.choices[0]
    assert (choice.message.role, choice.message.content, choice.finish_reason) == ("assistant", "Hi there", "stop")
    prompt = inference_prompt_ids(AutoTokenizer.from_pretrained(str(dirs["chat"])), HELLO)
    assert reply.usage.prompt_tokens == len(prompt)
    assert 0 < reply.usage.completion_tokens < 10
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_greedy_reply_equals_local_generation(client, dirs):
    """Same prompt ids as training, same greedy decode: the served text equals transformers' own."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the capital of France?"}]
    reply = client.chat.completions.create(model="tiny-chat", messages=msgs, max_tokens=6, temperature=0)
    model, tok = AutoModelForCausalLM.from_pretrained(str(dirs["chat"])), AutoTokenizer.from_pretrained(str(dirs["chat"]))
    assert reply.choices[0].message.content == _greedy(model, tok, msgs, 6)


def test_streaming_yields_chunks_then_usage(client):
    stream = client.chat.completions.create(
        model="tiny-chat", messages=HELLO, max_tokens=10, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text == "Hi there" and finishes == ["stop"]
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 2  # really streamed
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_stop_strings_and_length(client):
    cut = client.chat.completions.create(model="tiny-chat", messages=HELLO, max_tokens=10, stop=[" th"])
    assert (cut.choices[0].message.content, cut.choices[0].finish_reason) == ("Hi", "stop")
    streamed = client.chat.completions.create(model="tiny-chat", messages=HELLO, max_tokens=10, stop=" th", stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "Hi"
    short = client.chat.completions.create(model="tiny-chat", messages=HELLO, max_completion_tokens=1)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 1
    sampled = client.chat.completions.create(model="tiny-chat", messages=HELLO, max_tokens=4, temperature=1.5, top_p=0.9, seed=3)
    again = client.chat.completions.create(model="tiny-chat", messages=HELLO, max_tokens=4, temperature=1.5, top_p=0.9, seed=3)
    assert sampled.choices[0].message.content == again.choices[0].message.content  # seeded sampling repeats


def test_models_and_health(client, url):
    assert [m.id for m in client.models.list()] == ["tiny-chat"]
    assert client.models.retrieve("tiny-chat").owned_by == "tunegate"
    assert client.models.retrieve("tiny-chat").model_extra["max_model_len"] == 512  # the folder's context, which it enforces
    assert httpx.get(f"{url}/health").json() == {"status": "ok", "model": "tiny-chat", "backend": "transformers"}


def test_concurrent_requests_are_served_in_turn(client):
    def ask(_: int) -> str:
        return client.chat.completions.create(model="tiny-chat", messages=HELLO, max_tokens=10).choices[0].message.content

    with ThreadPoolExecutor(3) as pool:
        assert list(pool.map(ask, range(3))) == ["Hi there"] * 3


MSG = [{"role": "user", "content": "Hi"}]
MALFORMED = [  # (body, status, param the error names)
    (b"{not json", 400, None),
    (b"[1, 2]", 400, None),
    (b"", 400, None),
    ({}, 400, "model"),
    ({"model": "tiny-chat"}, 400, "messages"),
    ({"model": "tiny-chat", "messages": "Hi"}, 400, "messages"),
    ({"model": "tiny-chat", "messages": []}, 400, "messages"),
    ({"model": "tiny-chat", "messages": [{"role": "robot", "content": "Hi"}]}, 400, "messages[0].role"),
    ({"model": "tiny-chat", "messages": [{"role": "user"}]}, 400, "messages[0]"),
    ({"model": "tiny-chat", "messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content"),
    ({"model": "tiny-chat", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400, "messages[0].content"),
    ({"model": "tiny-chat", "messages": [7]}, 400, "messages[0]"),
    ({"model": "tiny-chat", "messages": MSG, "n": 2}, 400, "n"),
    ({"model": "tiny-chat", "messages": MSG, "max_tokens": -1}, 400, "max_tokens"),
    ({"model": "tiny-chat", "messages": MSG, "max_tokens": 0}, 400, "max_tokens"),
    ({"model": "tiny-chat", "messages": MSG, "max_tokens": "ten"}, 400, "max_tokens"),
    ({"model": "tiny-chat", "messages": MSG, "max_tokens": 10**6}, 400, "max_tokens"),
    ({"model": "tiny-chat", "messages": MSG, "temperature": "hot"}, 400, "temperature"),
    ({"model": "tiny-chat", "messages": MSG, "temperature": 9}, 400, "temperature"),
    ({"model": "tiny-chat", "messages": MSG, "stop": 5}, 400, "stop"),
    ({"model": "tiny-chat", "messages": MSG, "stream": "yes"}, 400, "stream"),
    ({"model": "tiny-chat", "messages": MSG, "logprobs": True}, 400, "logprobs"),
    ({"model": "tiny-chat", "messages": [{"role": "user", "content": "word " * 600}]}, 400, "messages"),
    ({"model": "tiny-chat", "messages": MSG, "max_tokens": 500}, 400, "max_tokens"),  # prompt + 500 > 512 context
    ({"model": "nope", "messages": MSG}, 404, "model"),
]


@pytest.mark.parametrize(("body", "status", "param"), MALFORMED, ids=lambda v: None if isinstance(v, (dict, bytes)) else str(v))
def test_malformed_requests_get_4xx_json(url, body, status, param):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(f"{url}/v1/chat/completions", content=content, headers={"Content-Type": "application/json"})
    err = r.json()["error"]
    assert (r.status_code, err["param"]) == (status, param), err
    assert err["message"] and err["type"] == "invalid_request_error"


def test_other_client_mistakes_get_4xx(url, client):
    assert httpx.post(f"{url}/v1/chat/completions", content=b"model=x").status_code == 400  # not JSON at all
    assert httpx.get(f"{url}/v1/chat/completions").json()["error"]["message"]  # wrong method: 405
    assert httpx.get(f"{url}/v1/nothing-here").status_code == 404
    with pytest.raises(openai.BadRequestError, match="n=1"):
        client.chat.completions.create(model="tiny-chat", messages=HELLO, n=2)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=HELLO)
    with pytest.raises(openai.BadRequestError, match="context is 512"):  # refused before the stream starts
        client.chat.completions.create(model="tiny-chat", messages=[{"role": "user", "content": "x " * 600}], stream=True)


def test_bearer_token_auth(dirs):
    with serving(_app(dirs["chat"], key=KEY, model_name="tiny-chat")) as url:
        msg = {"model": "tiny-chat", "messages": HELLO, "max_tokens": 3}
        assert httpx.post(f"{url}/v1/chat/completions", json=msg).status_code == 401
        assert httpx.post(f"{url}/v1/chat/completions", content=b"{bad", headers={"Authorization": "Bearer x"}).status_code == 401
        assert httpx.get(f"{url}/v1/models").status_code == 401
        assert httpx.get(f"{url}/health").status_code == 200  # probes need no token
        wrong = openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.chat.completions.create(model="tiny-chat", messages=HELLO, max_tokens=3)
        right = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        assert right.chat.completions.create(model="tiny-chat", messages=HELLO, max_tokens=10).choices[0].message.content == "Hi there"


def test_unmerged_lora_adapter_is_served_on_its_base(dirs):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert json.loads((dirs["adapter"] / "adapter_config.json").read_text())["base_model_name_or_path"] == str(dirs["base"])
    with serving(_app(dirs["adapter"])) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        assert [m.id for m in client.models.list()] == ["adapter"]
        reply = client.chat.completions.create(model="adapter", messages=HELLO, max_tokens=10)
        assert (reply.choices[0].message.content, reply.choices[0].finish_reason) == ("Hi there", "stop")
    tok = AutoTokenizer.from_pretrained(str(dirs["base"]))
    base = AutoModelForCausalLM.from_pretrained(str(dirs["base"]))
    assert _greedy(base, tok, HELLO, 10) != "Hi there"  # the adapter, not the base, learned it
    assert _greedy(PeftModel.from_pretrained(base, str(dirs["adapter"])), tok, HELLO, 10) == "Hi there"


def test_client_that_leaves_mid_stream_stops_the_generation(dirs):
    """The untrained base never says its end-of-turn token: only the disconnect can end its run early."""
    from steps.serving.engines import TransformersEngine

    class Recording(TransformersEngine):  # the real engine, keeping its runs to look at
        def start(self, *args):
            self.runs = [*getattr(self, "runs", []), super().start(*args)]
            return self.runs[-1]

    engine = Recording(dirs["base"], "float32")
    with serving(create_app(ServeConfig(model_name="base"), dirs["base"], engine=engine)) as url:
        body = {"model": "base", "messages": HELLO, "max_tokens": 450, "stream": True}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
            next(r.iter_lines())
        assert engine.runs[0].join(60).completion_tokens < 450
        assert httpx.post(f"{url}/v1/chat/completions", json={**body, "stream": False, "max_tokens": 2}).status_code == 200


def test_adapter_whose_base_moved(dirs, tmp_path):
    """In a container the training machine's base path is gone: the merge step's base_model.json, or
    serve.adapter_base, names the base here; with neither the error says what was tried and the fix."""
    import shutil

    moved = Path(shutil.copytree(dirs["adapter"], tmp_path / "adapter"))
    cfg = json.loads((moved / "adapter_config.json").read_text())
    (moved / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": "/gone/base"}))
    with pytest.raises(ServeError, match="/gone/base.*adapter_base"):
        _app(moved)
    assert _app(moved, adapter_base=str(dirs["base"])).title == "tunegate"
    (moved / "base_model.json").write_text(json.dumps({"base_model": "/gone/too", "base_model_path": str(dirs["base"])}))
    assert _app(moved).title == "tunegate"


def test_deploy_manifests_run_the_serve_command():
    """compose.yaml and k8s.yaml parse, pass arguments steps.serve accepts, and probe /health on the served port."""
    import yaml

    here = ROOT / "deploy" / "serve"
    compose = yaml.safe_load((here / "compose.yaml").read_text())["services"]["serve"]
    deployment, service = yaml.safe_load_all((here / "k8s.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]["containers"][0]
    for image, command in ((compose["image"], compose["command"]), (pod["image"], pod["command"])):
        assert image == "localhost/tunegate-cpu:0.1.0" and command[:2] == ["tunegate", "serve"]
        args = serve.parser().parse_args(command[2:])
        assert (args.model_dir, args.host, args.port) == ("models/merged", "0.0.0.0", 8000)
    assert compose["ports"] == ["127.0.0.1:8000:8000"] and "/health" in " ".join(compose["healthcheck"]["test"])
    assert pod["ports"][0] == {"name": "http", "containerPort": 8000}
    assert {pod[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")} == {"/health"}
    assert service["kind"] == "Service" and service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert [e["name"] for e in pod["env"]][0] == ServeConfig().api_key_env


@pytest.mark.gpu
def test_vllm_backend_serves(dirs):
    pytest.importorskip("vllm")
    with serving(_app(dirs["chat"], backend="vllm", model_name="tiny-chat", gpu_memory_utilization=0.3)) as url:
        assert httpx.get(f"{url}/health").json()["backend"] == "vllm"
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        reply = client.chat.completions.create(model="tiny-chat", messages=HELLO, max_tokens=10, temperature=0)
        assert reply.choices[0].message.content == "Hi there"
