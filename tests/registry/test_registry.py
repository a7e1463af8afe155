"""The registry on real GTO tags in a temporary git repo and real DVC storage in a temporary remote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from flows.registry_cli import lineage_command, registry_app
from steps import promote, register
from steps.registry.settings import PRODUCTION, STAGING, RegistryError, RegistrySettings
from steps.registry.state import read_state
from steps.registry.versions import Registry
from steps.registry.wandb_link import link_wandb
from tests.helpers import ROOT

IDENTITY = {"GIT_AUTHOR_NAME": "Tess Tune", "GIT_AUTHOR_EMAIL": "tess@example.com",
            "GIT_COMMITTER_NAME": "Tess Tune", "GIT_COMMITTER_EMAIL": "tess@example.com"}  # fmt: skip


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A git repo with one commit, fake train/data outputs, and a params.yaml whose registry lives in tmp_path."""
    for k, v in IDENTITY.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("WANDB_MODE", "offline")
    repo = tmp_path / "repo"
    (repo / "data" / "raw").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "README.md").write_text("tiny\n")
    (repo / "data" / "raw" / "faq.csv.dvc").write_text("outs:\n- md5: 72b81ad23139c75417fd50267153e6cc\n  path: faq.csv\n")
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "init"], cwd=repo, check=True)
    validated = repo / "data" / "validated"
    validated.mkdir()
    (validated / "train.jsonl").write_text('{"id": "a"}\n')
    (validated / "validation.jsonl").write_text('{"id": "b"}\n')
    train = repo / "models" / "train"
    train.mkdir(parents=True)
    from steps.core.manifest import digests

    inputs = {"train": "data/validated/train.jsonl", "validation": "data/validated/validation.jsonl"}
    (train / "manifest.json").write_text(json.dumps({
        "config": {"stage": "sft", "method": "lora", "base_model": "smollm2-135m-instruct", "epochs": 2.0,
                   "learning_rate": 2e-4, "seed": 42},
        "git_revision": "abc123", "inputs": inputs, "input_digests": digests({k: repo / v for k, v in inputs.items()}),
        "metrics": {"train_loss": {"last": 3.4}, "eval_loss": 3.41, "steps": 10}}))  # fmt: skip
    params = {"registry": {"repo": str(repo), "remote": str(tmp_path / "remote"), "cache_dir": str(tmp_path / "cache"),
                           "lock_timeout_s": 60},
              "register": {"train_dir": str(train), "data_dir": str(validated), "raw_dir": str(repo / "data" / "raw")},
              "promote": {"compare": ["test_perplexity"], "min_improvement": 0.0}}  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def candidate(root: Path, name: str, perplexity: float, passed: bool = True) -> tuple[Path, Path]:
    """A fake merged model folder (the registry does not care about weights) and evaluate's output for it,
    compared, as evaluate does, with the production version of the moment."""
    merged, evaluate = root / name / "merged", root / name / "evaluate"
    (merged / "tokenizer").mkdir(parents=True)
    (merged / "config.json").write_text(json.dumps({"name": name}))
    (merged / "model.safetensors").write_bytes(os.urandom(2048))
    (merged / "tokenizer" / "tokenizer.json").write_text("{}")
    state = registry(root).state()
    production = state.production
    write_gate(evaluate, {"test_perplexity": perplexity}, passed, production,
               state.versions[production].record["metrics"] if production else None)
    return merged, evaluate


def write_gate(evaluate: Path, metrics: dict, passed: bool, production: str | None = None,
               production_metrics: dict | None = None) -> None:  # fmt: skip
    evaluate.mkdir(parents=True, exist_ok=True)
    reasons = ["all checks passed"] if passed else ["test_perplexity above the base model's"]
    gate = {"passed": passed, "reasons": reasons, "candidate_dir": "models/train", "metrics": metrics}
    (evaluate / "gate.json").write_text(json.dumps(gate))
    doc = {"candidate": metrics, "gate": gate, "production_version": production}
    (evaluate / "metrics.json").write_text(json.dumps(doc | ({"production": production_metrics} if production else {})))


def do_register(root: Path, name: str, perplexity: float) -> tuple[str, Path]:
    merged, evaluate = candidate(root, name, perplexity)
    result = register.run(register.STEP.load_config(root / "params.yaml"), merged, evaluate, root / name / "register")
    assert result.registered, result.reasons
    return result.version, evaluate


def do_promote(root: Path, name: str, evaluate: Path) -> promote.PromoteResult:
    return promote.run(promote.STEP.load_config(root / "params.yaml"), evaluate, root / name / "register", root / name / "promote")


def registry(root: Path) -> Registry:
    from steps.registry.settings import load_settings

    return Registry(load_settings(root / "params.yaml"))


def assert_one_production(root: Path) -> str:
    """Exactly one version holds production in GTO's own state (all versions per stage, not just the newest)."""
    state = read_state(root / "repo", "tunegate-model")
    assert len(state.stages.get(PRODUCTION, [])) == 1, state.stages
    return state.stages[PRODUCTION][0]


def test_register_bumps_versions_stores_model_in_dvc_and_assigns_staging(project):
    v1, _ = do_register(project, "c1", 12.0)
    v2, _ = do_register(project, "c2", 11.0)
    assert (v1, v2) == ("v0.1.0", "v0.2.0")
    state = registry(project).state()
    assert state.stages[STAGING] == ["v0.2.0", "v0.1.0"] and PRODUCTION not in state.stages
    info = state.versions["v0.2.0"]
    assert info.author == "Tess Tune" and info.record["metrics"] == {"test_perplexity": 11.0}
    assert info.record["model"]["md5"].endswith(".dir") and info.record["model"]["nfiles"] == 3
    # GTO allows one version per commit: the second one sits on a registration commit, child of HEAD, same tree
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project / "repo", capture_output=True, text=True).stdout.strip()
    assert state.versions["v0.1.0"].commit == head
    assert info.commit != head and info.record["code_revision"] == head
    parent = subprocess.run(["git", "rev-parse", f"{info.commit}^"], cwd=project / "repo", capture_output=True, text=True)
    assert parent.stdout.strip() == head
    # the files come back from the DVC remote even with the local cache gone
    import shutil

    shutil.rmtree(project / "cache")
    out = registry(project).fetch("v0.2.0", project / "fetched")
    for f in ("config.json", "model.safetensors", "tokenizer/tokenizer.json"):
        assert (out / f).read_bytes() == (project / "c2" / "merged" / f).read_bytes()
    assert (project / "remote" / "files" / "md5").is_dir()
    manifest = json.loads((project / "c2" / "register" / "manifest.json").read_text())
    assert manifest["step"] == "register" and manifest["metrics"]["version"] == "v0.2.0"


def test_register_refuses_a_failed_gate(project):
    merged, evaluate = candidate(project, "bad", 30.0, passed=False)
    code = register.main([str(merged), str(evaluate), str(project / "bad" / "register"), "--params", str(project / "params.yaml")])
    assert code == 1
    assert registry(project).state().versions == {}


def test_failed_gate_blocks_promotion_and_production_stays(project, capsys):
    v1, ev1 = do_register(project, "c1", 12.0)
    assert do_promote(project, "c1", ev1).promoted
    v2, ev2 = do_register(project, "c2", 11.0)
    write_gate(ev2, {"test_perplexity": 11.0}, False, v1, {"test_perplexity": 12.0})  # evaluate re-ran: the gate fails
    args = [str(ev2), str(project / "c2" / "register"), str(project / "c2" / "promote"), "--params", str(project / "params.yaml")]
    assert promote.main(args) == 1
    assert "REFUSED v0.2.0; production stays v0.1.0" in capsys.readouterr().out
    assert json.loads((project / "c2" / "promote" / "promotion.json").read_text())["promoted"] is False
    assert assert_one_production(project) == v1
    # a gate that passes but a candidate worse than production: refused by the thresholds
    v3, ev3 = do_register(project, "c3", 13.0)
    result = do_promote(project, "c3", ev3)
    assert not result.promoted and result.production == v1 and "candidate 13 vs production 12" in result.reasons[1]
    # the registry CLI goes through the same gate: no way around it
    refused = CliRunner().invoke(registry_app, ["promote", v3, "--evaluate-dir", str(ev3), "--params", str(project / "params.yaml")])
    assert refused.exit_code == 1 and "REFUSED" in refused.output
    assert assert_one_production(project) == v1


def test_rollback_restores_the_previous_version_with_who_and_why(project):
    v1, ev1 = do_register(project, "c1", 12.0)
    assert do_promote(project, "c1", ev1).promoted
    v2, ev2 = do_register(project, "c2", 11.0)  # evaluated against v0.1.0 in production
    result = do_promote(project, "c2", ev2)
    assert result.promoted and (result.previous, result.production) == (v1, v2)
    assert assert_one_production(project) == v2
    res = CliRunner().invoke(registry_app, ["rollback", "-m", "v0.2.0 answers in French", "--who", "oncall",
                                            "--params", str(project / "params.yaml")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert assert_one_production(project) == v1
    events = registry(project).state().events
    last = [e for e in events if e["event"] == "assignment"][-1]
    assert (last["version"], last["author"], last["record"]["action"]) == (v1, "oncall", "rollback")
    assert last["record"]["why"] == "v0.2.0 answers in French" and last["record"]["previous"] == v2
    assert [e["version"] for e in events if e["event"] == "unassignment"] == [v1, v2]
    with pytest.raises(RegistryError, match="no earlier production"):
        registry(project).rollback(why="again")
    assert do_promote(project, "c1", ev1).changed is False  # promoting production again is a no-op


CONTENDER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from steps import promote
    root, name, version = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    (root / f"ready-{name}").touch()
    while len(list(root.glob("ready-*"))) < 2:  # start together
        time.sleep(0.01)
    cfg = promote.STEP.load_config(root / "params.yaml")
    outcome, _ = promote.promote_version(cfg, version, root / name / "evaluate")
    print(json.dumps({"accepted": outcome.accepted, "previous": outcome.previous, "production": outcome.production,
                      "reasons": outcome.reasons}))
""")


def test_two_concurrent_promotions_end_in_one_consistent_state(project):
    v1, _ = do_register(project, "c1", 12.0)
    v2, _ = do_register(project, "c2", 11.0)  # both evaluated while nothing was in production
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", CONTENDER, str(project), name, v], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for name, v in (("c1", v1), ("c2", v2))]  # fmt: skip
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    # the first to take the lock promotes; the second decides under the lock, sees a production its
    # evaluation never compared against, and is refused: it must re-run evaluate
    first, second = sorted(results, key=lambda r: not r["accepted"])
    assert first["accepted"] and first["previous"] is None
    assert not second["accepted"] and second["previous"] == second["production"] == first["production"]
    assert "re-run evaluate against the current production" in second["reasons"][0]
    production = assert_one_production(project)
    assert production == first["production"] == registry(project).production_version()
    tags = subprocess.run(["git", "tag", "-l", "tunegate-model#production*"], cwd=project / "repo", capture_output=True, text=True)
    assert len(tags.stdout.split()) == 1  # one assignment, no stray or duplicated tag
    # GTO's own reader agrees
    from gto import api

    assert [v.version for v in api.find_versions_in_stage(str(project / "repo"), "tunegate-model", PRODUCTION)] == [production]


def test_a_promotion_cut_short_still_resolves_to_one_production_and_the_next_one_cleans_up(project):
    from gto import api

    v1, ev1 = do_register(project, "c1", 12.0)
    do_promote(project, "c1", ev1)
    v2, _ = do_register(project, "c2", 12.0)
    import time

    time.sleep(1)  # a later second, as the registry itself would wait
    # a promotion killed between its two tags: v2 assigned, v1 never unassigned
    api.assign(str(project / "repo"), "tunegate-model", PRODUCTION, version=v2, message="cut short")
    assert registry(project).production_version() == v2  # the newest assignment, as `gto show` says
    v3, ev3 = do_register(project, "c3", 12.0)
    assert do_promote(project, "c3", ev3).production == v3
    assert assert_one_production(project) == v3  # both older ones retired


def test_a_held_lock_makes_writers_wait_then_give_up_with_a_clear_error(project):
    import dataclasses

    from steps.registry.git import registry_lock

    reg = registry(project)
    impatient = Registry(dataclasses.replace(reg.settings, lock_timeout_s=0.3))
    with registry_lock(reg.root, 5):  # another operation (same process, other thread: flock still excludes)
        with pytest.raises(RegistryError, match="held by another registry operation for over 0 s"):
            impatient.rollback(why="test")


def test_list_show_and_lineage_through_the_cli(project):
    v1, ev1 = do_register(project, "c1", 12.0)
    do_promote(project, "c1", ev1)
    params = ["--params", str(project / "params.yaml")]
    runner = CliRunner()
    listed = runner.invoke(registry_app, ["list", *params])
    assert listed.exit_code == 0, listed.output
    assert "production v0.1.0" in listed.output and "staging,production" in listed.output.replace(", ", ",")
    as_json = json.loads(runner.invoke(registry_app, ["list", "--json", *params]).output)
    assert as_json["production"] == v1 and as_json["versions"][0]["metrics"] == "test_perplexity=12"
    shown = runner.invoke(registry_app, ["show", "production", *params])
    assert shown.exit_code == 0, shown.output
    assert "tunegate-model v0.1.0" in shown.output and "tunegate registry fetch v0.1.0 DEST" in shown.output
    assert "promote: v0.1.0 to production" in shown.output  # history with who and why
    missing = runner.invoke(registry_app, ["show", "v9.9.9", *params])
    assert missing.exit_code == 2 and "no version or stage 'v9.9.9'" in missing.output

    app = typer.Typer()
    app.command("lineage")(lineage_command)
    app.command("other")(lambda: None)  # two commands, so typer keeps the command name
    lineage = runner.invoke(app, ["lineage", "production", *params])
    assert lineage.exit_code == 0, lineage.output
    out = lineage.output
    md5 = registry(project).state().versions[v1].record["model"]["md5"]
    for expected in (f"tunegate-model {v1}", f"DVC md5 {md5}", "git revision abc123", "method=lora",
                     "training data", "raw data faq.csv: DVC md5 72b81ad23139c75417fd50267153e6cc"):  # fmt: skip
        assert expected in out, out
    assert "differs from what was trained on" not in out  # the data files are the ones trained on
    chain = json.loads(runner.invoke(app, ["lineage", v1, "--json", *params]).output)
    assert chain["data"]["data_dvc_md5"].endswith(".dir") and chain["train"]["params"]["seed"] == 42


def test_outside_git_there_is_no_production_model(tmp_path):
    """evaluate's production: auto in a folder that is no git repository (so holds no registry) compares with none."""
    from steps.registry.versions import production_model_dir

    assert production_model_dir(tmp_path, RegistrySettings()) is None


def test_production_model_dir_and_dvc_repo_cache(project):
    from dvc.repo import Repo

    Repo.init(str(project / "repo"))  # a DVC repo: the model goes through its own cache
    assert registry(project).production_model_dir() is None
    v1, ev1 = do_register(project, "c1", 12.0)
    do_promote(project, "c1", ev1)
    md5 = registry(project).state().versions[v1].record["model"]["md5"]
    assert (project / "repo" / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]).is_file()
    path = registry(project).production_model_dir()
    assert path.parent == project / "cache" / "tunegate-model" and path.name.startswith(v1)
    assert (path / "config.json").read_text() == (project / "c1" / "merged" / "config.json").read_text()


def test_wandb_link_is_skipped_offline(project, monkeypatch):
    v1, _ = do_register(project, "c1", 12.0)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_MODE", "offline")
    info = registry(project).state().versions[v1]
    assert link_wandb(RegistrySettings(), info, PRODUCTION).startswith("skipped: W&B is offline")
    registration = json.loads((project / "c1" / "register" / "registration.json").read_text())
    assert registration["wandb"].startswith("skipped")
