"""The validate step: each gate passes clean data and fails its planted fault, naming the record."""

from __future__ import annotations

import html
import json
import random
import re
import shutil
import subprocess

import pytest
import yaml

from steps import validate
from steps.core.config import ConfigError, load_section
from steps.core.io import atomic_write_jsonl, read_jsonl
from steps.core.schema import make_record
from steps.gates.config import PII_ACTIONS, ValidateConfig
from steps.gates.format import format_problems
from steps.gates.tokens import count_tokens

# A word list big enough that random records share no 3-grams (no near-duplicates, no leaks).
WORDS = [f"{a}{b}" for a in ("kettle", "boil", "water", "scale", "lid", "base", "cord", "light", "timer", "filter",
                             "steam", "spout", "handle", "app", "wifi", "preset", "warm", "glass", "steel", "ring")
         for b in ("", "s", "ed", "ing", "er", "y", "ly", "ness", "ful", "less")]
TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A tiny word-level tokenizer with a chat template, built locally."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    fast.chat_template = TEMPLATE
    path = tmp_path_factory.mktemp("tok")
    fast.save_pretrained(path)
    return str(path)


def sentence(rng: random.Random, n: int = 14) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def sft(rng, dataset, row, **kw):
    msgs = kw.pop("messages", None) or [
        {"role": "user", "content": sentence(rng)},
        {"role": "assistant", "content": sentence(rng, 24)},
    ]
    return make_record("sft", dataset=dataset, source=f"{dataset}.jsonl", row=row, fmt="sharegpt", messages=msgs, **kw)


def clean_splits(seed: int = 0) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    train = [sft(rng, "support", i) for i in range(16)]
    train.append(make_record(
        "sft", dataset="support", source="support.jsonl", row=99, fmt="sharegpt",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": sentence(rng)},
                  {"role": "function_call", "content": '{"name": "timer"}'}, {"role": "tool", "content": "ok 3"},
                  {"role": "assistant", "content": sentence(rng)}]))
    train.append(make_record("preference", dataset="prefs", source="prefs.jsonl", row=0, fmt="preference",
                             messages=[{"role": "user", "content": sentence(rng)}],
                             chosen=[{"role": "assistant", "content": sentence(rng)}],
                             rejected=[{"role": "assistant", "content": sentence(rng)}]))
    train.append(make_record("feedback", dataset="fb", source="fb.jsonl", row=0, fmt="feedback", label=True,
                             messages=[{"role": "user", "content": sentence(rng)}],
                             completion=[{"role": "assistant", "content": sentence(rng)}]))
    return {
        "train": train,
        "validation": [sft(rng, "support", 100 + i) for i in range(4)],
        "test": [sft(rng, "support", 200 + i) for i in range(4)],
        "heldout": [sft(rng, "mtbench", i) for i in range(3)],
    }


def write(tmp_path, splits):
    prepared = tmp_path / "prepared"
    for name, recs in splits.items():
        atomic_write_jsonl(prepared / f"{name}.jsonl", recs)
    return prepared


def run(tmp_path, tokenizer_dir, splits, **cfg):
    config = ValidateConfig(tokenizer=tokenizer_dir, **cfg)
    return validate.run(config, write(tmp_path, splits), tmp_path / "validated")


def failed(result):
    return {g for g, v in result.gates.items() if not v["passed"]}


def test_clean_data_passes_every_gate(tmp_path, tokenizer_dir):
    result = run(tmp_path, tokenizer_dir, clean_splits())
    assert result.passed, json.dumps(result.gates, indent=1)[:3000]
    assert set(result.gates) == {"format", "dedup", "leakage", "pii"}
    out = tmp_path / "validated"
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] is True and report["counts"] == {"train": 19, "validation": 4, "test": 4, "heldout": 3}
    assert result.data_docs_path == out / "data_docs" / "index.html" and result.data_docs_path.is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["step"] == "validate" and manifest["config"]["max_leaked"] == 0
    assert len(read_jsonl(out / "train.jsonl")) == 19
    tokens = {c["check"]: c for c in report["gates"]["format"]["checks"]}["n_tokens"]
    assert tokens["threshold"] == {"min_tokens": 2, "max_tokens": 2048}


def test_token_bound_is_a_suite_parameter(tmp_path, tokenizer_dir):
    result = run(tmp_path, tokenizer_dir, clean_splits(), max_tokens=40)  # records hold ~40-60 tokens
    assert failed(result) == {"format"}
    f = result.gates["format"]["failures"][0]
    assert f["check"] == "n_tokens" and "max_tokens=40" in result.gates["format"]["reason"]


def test_near_duplicate_leak_of_a_test_record_fails_and_names_it(tmp_path, tokenizer_dir):
    splits = clean_splits()
    victim = splits["test"][2]
    msgs = [dict(m) for m in victim["messages"]]
    msgs[1]["content"] = msgs[1]["content"].rsplit(" ", 1)[0] + " kettles"  # one word changed
    splits["train"].append(sft(random.Random(1), "scraped", 7, messages=msgs))
    result = run(tmp_path, tokenizer_dir, splits)
    assert failed(result) == {"leakage"}
    [f] = result.gates["leakage"]["failures"]
    assert f["file"] == "train.jsonl" and f["line"] == 20 and f["dataset"] == "scraped" and f["row"] == 7
    assert "test.jsonl:3" in f["detail"] and victim["id"] in f["detail"]


def test_ngram_overlap_with_heldout_text_leaks(tmp_path, tokenizer_dir):
    splits = clean_splits()
    rng = random.Random(2)
    answer = splits["heldout"][0]["messages"][1]["content"]  # 24 words: 17 of the record's 27 8-grams
    splits["train"].append(sft(rng, "scraped", 8, messages=[
        {"role": "user", "content": sentence(rng, 6)}, {"role": "assistant", "content": answer + " " + sentence(rng, 4)}]))
    result = run(tmp_path, tokenizer_dir, splits)
    assert failed(result) == {"leakage"}
    [f] = result.gates["leakage"]["failures"]
    assert "8-grams" in f["detail"] and "heldout.jsonl:1" in f["detail"]


def test_exact_duplicate_group_over_the_bound_fails_dedup(tmp_path, tokenizer_dir):
    splits = clean_splits()
    original = splits["train"][0]
    splits["train"] += [sft(None, "copies", i, messages=original["messages"]) for i in range(3)]
    result = run(tmp_path, tokenizer_dir, splits)
    assert failed(result) == {"dedup"}
    checks = {c["check"]: c for c in result.gates["dedup"]["checks"]}
    assert not checks["exact_dup"]["passed"] and checks["exact_dup"]["observed"]["value"] == pytest.approx(3 / 22)
    assert checks["near_dup"]["passed"]
    assert {f["dataset"] for f in result.gates["dedup"]["failures"]} == {"copies"}
    assert "train.jsonl:1" in result.gates["dedup"]["failures"][0]["detail"]
    # The same data passes once the bound allows it: thresholds are parameters, not suite edits.
    assert run(tmp_path, tokenizer_dir, splits, max_exact_dup_fraction=0.2).passed


def test_chosen_equal_to_rejected_fails_format(tmp_path, tokenizer_dir):
    splits = clean_splits()
    rng = random.Random(3)
    answer = sentence(rng)
    splits["train"].append(make_record(
        "preference", dataset="prefs", source="prefs.jsonl", row=5, fmt="preference",
        messages=[{"role": "user", "content": sentence(rng)}],
        chosen=[{"role": "assistant", "content": answer}], rejected=[{"role": "assistant", "content": " " + answer.upper()}]))
    result = run(tmp_path, tokenizer_dir, splits)
    assert failed(result) == {"format"}
    [f] = result.gates["format"]["failures"]
    assert (f["check"], f["dataset"], f["row"], f["field"]) == ("pair_ok", "prefs", 5, "chosen/rejected")
    assert "same" in f["detail"]


def test_wrong_role_order_fails_format(tmp_path, tokenizer_dir):
    splits = clean_splits()
    rng = random.Random(4)
    splits["validation"].append(sft(rng, "support", 300, messages=[
        {"role": "user", "content": sentence(rng)}, {"role": "user", "content": sentence(rng)},
        {"role": "assistant", "content": sentence(rng)}]))
    result = run(tmp_path, tokenizer_dir, splits)
    assert failed(result) == {"format"}
    [f] = result.gates["format"]["failures"]
    assert (f["check"], f["file"], f["line"]) == ("roles_ok", "validation.jsonl", 5)
    assert f["detail"] == "messages[1] is user after user; expected assistant or function_call"


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "assistant", "content": "hello"}, {"role": "user", "content": "hi"}],
        [{"role": "user", "content": "x"}, {"role": "system", "content": "late"}, {"role": "assistant", "content": "y"}],
        [{"role": "user", "content": "x"}, {"role": "function_call", "content": "{}"}, {"role": "assistant", "content": "y"}],
        [{"role": "user", "content": "x"}, {"role": "tool", "content": "r"}],
    ],
)
def test_role_order_rules(messages):
    rec = make_record("sft", dataset="d", source="s", row=0, fmt="sharegpt", messages=messages)
    assert "roles_ok" in format_problems(rec)


def test_other_format_rules():
    msg = lambda role, text: {"role": role, "content": text}  # noqa: E731
    rec = make_record("sft", dataset="d", source="s", row=0, fmt="f", messages=[msg("user", "only a question")])
    assert set(format_problems(rec)) == {"learnable_ok"}
    rec = make_record("sft", dataset="d", source="s", row=0, fmt="f", messages=[msg("user", "q"), msg("assistant", "  ")])
    assert set(format_problems(rec)) == {"nonempty_ok"}
    rec = make_record("feedback", dataset="d", source="s", row=0, fmt="f", label="yes",
                      messages=[msg("user", "q")], completion=[msg("assistant", "a")])
    assert set(format_problems(rec)) == {"label_ok"}
    rec = make_record("sft", dataset="d", source="s", row=0, fmt="f", messages=[msg("robot", "q")])
    assert set(format_problems(rec)) == {"schema_ok"}


def test_pii_is_masked_in_outputs_and_never_reported_raw(tmp_path, tokenizer_dir):
    splits = clean_splits()
    rng = random.Random(5)
    secret_mail, card = "jane.roe@example.com", "4111 1111 1111 1111"
    splits["train"].append(sft(rng, "support", 400, messages=[
        {"role": "user", "content": f"{sentence(rng)} mail {secret_mail} card {card}"},
        {"role": "assistant", "content": sentence(rng)}]))
    result = run(tmp_path, tokenizer_dir, splits)
    assert result.passed
    out = tmp_path / "validated"
    train = (out / "train.jsonl").read_text()
    assert "[EMAIL]" in train and "[CARD]" in train and secret_mail not in train and card not in train
    report = (out / "report.json").read_text()
    assert secret_mail not in report and card not in report
    findings = result.gates["pii"]["findings"]
    assert {(f["type"], f["field"], f["row"]) for f in findings} == {("email", "messages[0].content", 400),
                                                                     ("card", "messages[0].content", 400)}
    masked = next(r for r in read_jsonl(out / "train.jsonl") if r["meta"]["row"] == 400)
    assert masked["meta"]["hash"] != splits["train"][-1]["meta"]["hash"]

    assert secret_mail not in (out / "report.html").read_text() and card not in (out / "report.html").read_text()

    failing = run(tmp_path, tokenizer_dir, splits, pii_action="fail")
    assert failed(failing) == {"pii"}
    assert failing.gates["pii"]["failures"][0]["row"] == 400
    assert secret_mail in (tmp_path / "validated.failed" / "train.jsonl").read_text()  # fail/report leave text as is
    assert (out / "train.jsonl").read_text() == train  # the last output that passed stays


def test_main_returns_1_on_a_failing_gate(tmp_path, tokenizer_dir, capsys):
    splits = clean_splits()
    splits["train"] += [splits["train"][0]] * 2
    prepared = write(tmp_path, splits)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"base": {"base_model": "unused", "seed": 1},
                                      "validate": {"tokenizer": tokenizer_dir, "max_tokens": 512}}))
    out = tmp_path / "validated"
    assert validate.main([str(prepared), str(out), "--params", str(params)]) == 1
    assert not out.exists()  # a failed gate publishes nothing there...
    failed_out = tmp_path / "validated.failed"  # ...but here, where the message says
    assert (failed_out / "report.json").is_file() and (failed_out / "report.html").is_file()
    assert json.loads((failed_out / "report.json").read_text())["passed"] is False
    shown = " ".join(capsys.readouterr().out.split())  # rich wraps at the terminal width
    assert "dedup" in shown and "train.jsonl:" in shown and "fix:" in shown
    assert f"FAILEDreport:{failed_out / 'report.html'}" in "".join(shown.split())  # rich may break the long path


def test_a_failed_gate_keeps_the_last_good_output(tmp_path, tokenizer_dir):
    out, failed_out = tmp_path / "validated", tmp_path / "validated.failed"
    good = run(tmp_path, tokenizer_dir, clean_splits())
    assert good.passed and good.report_path == out / "report.json"
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    splits = clean_splits()
    splits["train"] += [splits["train"][0]] * 2  # exact duplicates: the dedup gate fails
    bad = run(tmp_path, tokenizer_dir, splits)
    assert "dedup" in failed(bad)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert bad.report_path == failed_out / "report.json" and bad.html_path == failed_out / "report.html"
    manifest = json.loads((failed_out / "manifest.json").read_text())
    assert manifest["step"] == "validate" and manifest["metrics"]["passed"] is False
    assert run(tmp_path, tokenizer_dir, clean_splits()).passed
    assert not failed_out.exists()  # a pass clears the stale failure


def test_report_html_lists_every_failing_record(tmp_path, tokenizer_dir):
    splits = clean_splits()
    rng = random.Random(3)
    splits["train"] += [sft(rng, "support", 300 + i, messages=[{"role": "user", "content": "<script>x()</script> q"},
                                                               {"role": "assistant", "content": " "}]) for i in range(7)]
    result = run(tmp_path, tokenizer_dir, splits)
    assert "format" in failed(result)
    page = result.html_path.read_text()
    assert "<script>" not in page and "http" not in page  # escaped data; nothing fetched from a network
    for i in range(7):  # more than report.json's EXAMPLES: the page lists all of them
        assert f"support.jsonl:{300 + i} (train.jsonl:{20 + i})" in page
    assert "nonempty_ok" in page and "fix" in page
    report = json.loads(result.report_path.read_text())
    assert report["gates"]["format"]["failing"]["nonempty_ok"] == 7
    assert sum(f["check"] == "nonempty_ok" for f in report["gates"]["format"]["failures"]) == 5


def test_swapped_folders_are_refused_and_nothing_is_replaced(tmp_path, tokenizer_dir, capsys):
    prepared = write(tmp_path, clean_splits())
    (prepared / "manifest.json").write_text(json.dumps({"step": "ingest", "metrics": {"passed": True}}))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"base": {"base_model": "unused", "seed": 1}, "validate": {"tokenizer": tokenizer_dir}}))
    out = tmp_path / "validated"
    assert validate.main([str(prepared), str(out), "--params", str(params)]) == 0
    before = {p: p.read_bytes() for p in [*prepared.iterdir(), *out.iterdir()] if p.is_file()}
    capsys.readouterr()
    assert validate.main([str(out), str(prepared), "--params", str(params)]) == 2  # arguments swapped
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{prepared}: not empty and the output of ingest" in err[0] and "give an empty or new folder" in err[0]
    assert validate.main([str(prepared), str(prepared), "--params", str(params)]) == 2  # the input itself
    assert "never writes over what it reads" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in [*prepared.iterdir(), *out.iterdir()] if p.is_file()} == before


def test_an_input_whose_gate_failed_is_refused(tmp_path, tokenizer_dir, capsys):
    prepared = write(tmp_path, clean_splits())
    (prepared / "manifest.json").write_text(json.dumps({"step": "ingest", "metrics": {"passed": False}}))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"base": {"base_model": "unused", "seed": 1}, "validate": {"tokenizer": tokenizer_dir}}))
    assert validate.main([str(prepared), str(tmp_path / "validated"), "--params", str(params)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{prepared}: ingest's gate failed there" in err[0] and "rerun `tunegate ingest`" in err[0]
    assert not (tmp_path / "validated").exists()


def test_unknown_key_is_a_config_error(tmp_path, capsys):
    with pytest.raises(ConfigError, match="max_tokenz"):
        load_section(ValidateConfig, "validate", {"validate": {"max_tokenz": 10}})
    params = tmp_path / "params.yaml"
    params.write_text("validate:\n  max_tokenz: 10\n")
    assert validate.main([str(tmp_path), str(tmp_path / "out"), "--params", str(params)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "max_tokenz" in err[0] and "did you mean 'max_tokens'" in err[0]


@pytest.mark.parametrize(
    ("key", "value"),
    [("pii_action", "redact"), ("min_tokens", 0), ("max_near_dup_fraction", 1.5), ("leak_threshold", 0.0), ("ngram", 0)],
)
def test_bad_values_name_the_key(key, value):
    with pytest.raises(ConfigError, match=f"validate.{key}"):
        ValidateConfig(**{key: value})


def test_shipped_params_parse():
    cfg = load_section(ValidateConfig, "validate", "params.yaml")
    assert cfg.max_leaked == 0 and cfg.pii_action in PII_ACTIONS


def test_token_counts_match_the_rendered_chat_template(tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    records = clean_splits()["train"]
    ok = [not format_problems(r) for r in records]
    cfg = ValidateConfig(tokenizer=tokenizer_dir, exact_tokens=True)
    counts = count_tokens(records, __import__("numpy").array(ok), tok, cfg)
    for rec, n in zip(records, counts):
        tail = rec.get("chosen") or rec.get("completion") or []
        rendered = tok.apply_chat_template(rec["messages"] + tail, tokenize=False)
        assert n == len(tok(rendered, add_special_tokens=False)["input_ids"])
    # Without exact_tokens, records far inside the bounds keep an upper bound: same verdicts.
    bounds = count_tokens(records, __import__("numpy").array(ok), tok, ValidateConfig(tokenizer=tokenizer_dir))
    assert (bounds >= counts).all() and (bounds <= 2048).all()


def offline_chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium with no network: in an empty network namespace where ``unshare -n`` works, and
    with every request sent to a closed proxy port either way."""
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
           "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>", *args]  # fmt: skip
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False).returncode == 0:
        cmd = ["unshare", "-n", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium (apt-get install -y chromium)")
def test_report_html_shows_the_failing_records_in_a_browser_offline(tmp_path, tokenizer_dir):
    from PIL import Image

    splits = clean_splits()
    splits["train"] += [splits["train"][0]] * 2  # two exact copies of support row 0: the dedup gate fails
    result = run(tmp_path, tokenizer_dir, splits)
    assert failed(result) == {"format", "dedup"}  # format: the copies share an id
    page = result.html_path.resolve().as_uri()
    dom = offline_chromium(tmp_path, "--dump-dom", page).stdout  # the DOM as the browser built it
    text = html.unescape(" ".join(re.sub(r"<[^>]+>", " ", dom).split()))
    assert "FAILED: format, dedup" in text and "dedup: FAILED" in text
    for line in (20, 21):  # both copies, by raw file:row and split file:line, with the reason and the fix
        assert f"support.jsonl:0 (train.jsonl:{line})" in text, text[:3000]
    f = next(f for f in result.gates["dedup"]["failures"] if f["line"] == 20)
    assert f["fix"] in text and str(f["field"]) in text
    shot = tmp_path / "report.png"
    offline_chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", page)
    image = Image.open(shot).convert("RGB")
    colors = image.getcolors(maxcolors=1 << 20) or []
    reds = sum(n for n, (r, g, b) in colors if r > 200 and g < 235 and b < 235 and r - b > 20)  # the FAILED banner, NO cells
    dark = sum(n for n, (r, g, b) in colors if r + g + b < 200)  # text
    assert reds > 1000 and dark > 1000, (reds, dark)
