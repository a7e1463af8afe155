"""``tunegate`` (flows/cli.py) through Typer's CliRunner: one command per step, built from the step descriptors.

Fast: the help texts, ``ingest`` on the demo data (under a second) and ``base-model`` on the tiny model;
nothing trains.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app
from steps import PIPELINE, demo_data, describe
from tests.helpers import ROOT

runner = CliRunner()


def commands(help_text: str) -> list[str]:
    """The command names of a --help screen, in the order listed (rich's boxed panel or click's plain list)."""
    return re.findall(r"^(?:│ |  )([a-z][\w-]*)\s", help_text, flags=re.M)


@pytest.fixture
def project(tmp_path, monkeypatch, tiny_model_dir) -> Path:
    """The shipped params.yaml (base model: the tiny one) and the demo data in data/raw; the working directory."""
    values = yaml.safe_load((ROOT / "params.yaml").read_text())
    values["base"]["base_model"] = tiny_model_dir
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    demo_data.run(tmp_path / "data" / "raw")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TUNEGATE_CACHE", str(tmp_path / "cache"))  # nothing lands in ~/.cache/tunegate
    return tmp_path


def test_help_lists_every_step_in_pipeline_order():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    listed = commands(result.output)
    assert [c for c in listed if c in PIPELINE] == list(PIPELINE), listed
    assert {"demo-data", "serve", "base-model", "run", "registry"} <= set(listed), listed


@pytest.mark.parametrize("name", PIPELINE)
def test_each_step_command_shows_its_descriptors_default_folders(name):
    step = describe(name)
    result = runner.invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # rich wraps at the terminal width
    assert f"{name} [OPTIONS] " + " ".join(f"[{arg}]" for arg in step.paths) in text, text  # the paths, in run's order
    for arg, folder in step.paths.items():
        assert f"[default: {folder}]" in text, (arg, folder, text)
    assert "[default: params.yaml]" in text


def test_ingest_on_the_demo_data_writes_data_prepared(project):
    result = runner.invoke(app, ["ingest"])
    assert result.exit_code == 0, result.output
    prepared = project / "data" / "prepared"
    assert {"train.jsonl", "validation.jsonl", "test.jsonl", "manifest.json"} <= {p.name for p in prepared.iterdir()}
    assert json.loads((prepared / "manifest.json").read_text())["step"] == "ingest"
    assert "-> data/prepared" in result.stdout

    elsewhere = runner.invoke(app, ["ingest", "elsewhere"])  # a path argument overrides the descriptor's default
    assert elsewhere.exit_code == 0, elsewhere.output
    assert (project / "elsewhere" / "manifest.json").is_file()


def test_a_bad_params_key_exits_2_with_one_line(project):
    (project / "bad.yaml").write_text("ingest:\n  bogus_key: 1\n")
    result = runner.invoke(app, ["ingest", "--params", "bad.yaml"])
    assert result.exit_code == 2
    assert result.stdout == ""
    err = result.stderr
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("ingest: ") and "unknown key 'bogus_key'" in err, err
    assert not (project / "data" / "prepared").exists()


def test_base_model_prints_the_folder(project, tiny_model_dir):
    named = runner.invoke(app, ["base-model", tiny_model_dir])
    assert named.exit_code == 0, named.output
    assert Path(named.stdout.strip()).resolve() == Path(tiny_model_dir).resolve()

    from_params = runner.invoke(app, ["base-model"])  # base.base_model of ./params.yaml
    assert from_params.exit_code == 0, from_params.output
    folder = Path(from_params.stdout.strip())
    assert folder.resolve() == Path(tiny_model_dir).resolve() and (folder / "config.json").is_file()

    missing = runner.invoke(app, ["base-model", "no/such/model"])
    assert missing.exit_code == 2 and missing.stdout == ""
    assert missing.stderr.startswith("base-model: ") and missing.stderr.count("\n") == 1, missing.stderr


def test_ingest_into_the_raw_folder_is_refused_and_deletes_nothing(project):
    raw = project / "data" / "raw"
    before = {p: p.read_bytes() for p in raw.rglob("*") if p.is_file()}
    result = runner.invoke(app, ["ingest", "data/raw"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("ingest: data/raw: not empty and not the output of a step")
    assert "give an empty or new folder" in result.stderr
    assert {p: p.read_bytes() for p in raw.rglob("*") if p.is_file()} == before


def test_run_checks_every_config_before_the_flow_starts(project, monkeypatch):
    import flows.retrain

    monkeypatch.setattr(flows.retrain, "retrain", lambda **kw: pytest.fail("the flow started"))
    values = yaml.safe_load((project / "params.yaml").read_text())
    values["train"]["stage"] = "sftt"
    (project / "bad.yaml").write_text(yaml.safe_dump(values))
    result = runner.invoke(app, ["run", "--params", "bad.yaml"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("run: train: ") and "sftt" in result.stderr, result.stderr

    (project / "data" / "prepared").mkdir(parents=True)  # ingest's output folder holds something that is not ingest's
    (project / "data" / "prepared" / "notes.txt").write_text("mine")
    result = runner.invoke(app, ["run"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("run: ingest: data/prepared: not empty"), result.stderr
    assert (project / "data" / "prepared" / "notes.txt").read_text() == "mine"
