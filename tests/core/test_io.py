"""steps/core/io.py: a step replaces only its own output, never an input, and refuses an input whose gate failed."""

from __future__ import annotations

import json

import pytest

from steps.core.io import FolderError, atomic_write_json, check_inputs, check_output, publish_dir, staging_dir


def output_of(folder, step, passed=True, inputs=None):
    """A finished step output: a file and a manifest naming ``step``."""
    (folder / "data.jsonl").parent.mkdir(parents=True, exist_ok=True)
    (folder / "data.jsonl").write_text(f"{step}\n")
    atomic_write_json(folder / "manifest.json", {"step": step, "inputs": inputs or {}, "metrics": {"passed": passed}})
    return folder


def test_a_step_replaces_its_own_output(tmp_path):
    out = output_of(tmp_path / "out", "validate")
    tmp = output_of(staging_dir(out), "validate")
    (tmp / "data.jsonl").write_text("new\n")
    publish_dir(tmp, out)
    assert (out / "data.jsonl").read_text() == "new\n" and not tmp.exists()
    publish_dir(output_of(staging_dir(tmp_path / "new"), "validate"), tmp_path / "new")  # a new folder
    (tmp_path / "empty").mkdir()
    publish_dir(output_of(staging_dir(tmp_path / "empty"), "validate"), tmp_path / "empty")  # an empty one


@pytest.mark.parametrize("holds", ["another step", "no manifest", "a file"])
def test_a_folder_that_is_not_its_own_output_is_refused_untouched(tmp_path, holds):
    out = tmp_path / "out"
    if holds == "another step":
        output_of(out, "ingest")
    elif holds == "no manifest":
        out.mkdir()
        (out / "raw.jsonl").write_text("a user's data\n")
    else:
        out.write_text("a file")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    tmp = output_of(staging_dir(out), "validate")
    with pytest.raises(FolderError, match=f"^{out}: ") as info:
        publish_dir(tmp, out)
    assert "\n" not in str(info.value) and ("give an empty or new folder" in str(info.value) or "another output" in str(info.value))
    assert not tmp.exists()  # the staged output is cleaned up
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_an_input_is_never_the_output(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.jsonl").write_text("{}\n")
    for out, given in ((raw, raw / "a.jsonl"), (raw, raw), (raw / "inside", raw), (tmp_path, raw / "a.jsonl")):
        with pytest.raises(FolderError, match="never writes over what it reads"):  # the input, in it, holding it
            check_output(out, "ingest", [given])
    check_output(raw / "beside", "ingest", [raw / "a.jsonl"])  # beside an input file: allowed
    tmp = output_of(staging_dir(tmp_path / "x"), "ingest", inputs={"a": str(raw / "a.jsonl")})
    with pytest.raises(FolderError, match="never writes over what it reads"):  # publish_dir reads the inputs from the manifest
        publish_dir(tmp, raw)
    assert [p.name for p in raw.iterdir()] == ["a.jsonl"] and (raw / "a.jsonl").read_text() == "{}\n"


def test_an_input_whose_gate_failed_is_refused(tmp_path):
    good, bad = output_of(tmp_path / "good", "validate"), output_of(tmp_path / "bad", "ingest", passed=False)
    check_inputs("train", [good, good / "data.jsonl", tmp_path / "no-manifest" / "x.jsonl"])
    for given in (bad, bad / "data.jsonl"):  # a folder, or a file in it
        with pytest.raises(FolderError, match=f"^{bad}: ingest's gate failed there .* rerun `tunegate ingest`$"):
            check_inputs("validate", [given])
    assert json.loads((bad / "manifest.json").read_text())["metrics"]["passed"] is False
