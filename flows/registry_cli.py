"""``tunegate registry list|show|promote|rollback|fetch|history`` and ``tunegate lineage``.

The registry is GTO tags in the git repository (``gto show`` reads the same state) and the
model files sit in DVC storage; these commands wrap steps.registry.versions. ``promote`` goes through
the same gate and thresholds as the promote step: there is no way around it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import typer

from steps.registry.config import PromoteConfig
from steps.registry.settings import PRODUCTION, RegistryError, load_settings
from steps.registry.versions import Registry

registry_app = typer.Typer(help="Model versions and stages (GTO tags) with their files in DVC.", no_args_is_help=True,
                           add_completion=False)  # fmt: skip

PARAMS = typer.Option("params.yaml", "--params", "-p", help="The params file (its registry: section).")
REPO = typer.Option(None, "--repo", help="The git repository holding the registry (default: registry.repo).")
JSON = typer.Option(False, "--json", help="Print JSON instead of text.")
WHO = typer.Option(None, "--who", help="Who does it (default: git user.name, else $USER).")
SHOWN_METRICS = ("test_perplexity", "heldout_perplexity", "f1", "accuracy", "reward_pairwise_accuracy", "judge_overall")


def _registry(params: str, repo: str | None) -> Registry:
    try:
        settings = load_settings(params)
        return Registry(dataclasses.replace(settings, repo=repo) if repo else settings)
    except (RegistryError, ValueError) as exc:
        _fail(exc)


def _fail(exc: Exception) -> None:
    typer.echo(f"registry: {exc}", err=True)
    raise typer.Exit(2)


def _echo_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


def _metrics(record: dict[str, Any], n: int = 2) -> str:
    metrics = record.get("metrics") or {}
    shown = [k for k in SHOWN_METRICS if isinstance(metrics.get(k), (int, float))][:n]
    return ", ".join(f"{k}={metrics[k]:.4g}" for k in shown) or "-"


@registry_app.command("list")
def list_versions(params: str = PARAMS, repo: str = REPO, as_json: bool = JSON) -> None:
    """Every version, newest first: stages, when and by whom registered, model md5, key metrics."""
    try:
        state = _registry(params, repo).state()
    except RegistryError as exc:
        _fail(exc)
    rows = [{"version": v.version, "stages": list(v.stages), "registered_at": v.created_at, "by": v.author,
             "model_md5": (v.record.get("model") or {}).get("md5"), "active": v.active, "metrics": _metrics(v.record)}
            for v in sorted(state.versions.values(), key=lambda v: v.created_at, reverse=True)]  # fmt: skip
    if as_json:
        return _echo_json({"artifact": state.artifact, "production": state.production, "versions": rows})
    typer.echo(f"{state.artifact}: production {state.production or '-'}, {len(rows)} versions")
    for r in rows:
        typer.echo(f"  {r['version']:<10} {','.join(r['stages']) or '-':<20} {r['registered_at'][:19]}  {r['by']:<16} "
                   f"{(r['model_md5'] or '-')[:12]:<12}  {r['metrics']}{'' if r['active'] else '  (deregistered)'}")  # fmt: skip


@registry_app.command()
def show(ref: str = typer.Argument(PRODUCTION, help="A version (v0.2.0), a stage (production, staging) or latest."),
         params: str = PARAMS, repo: str = REPO, as_json: bool = JSON) -> None:  # fmt: skip
    """One version: tag, commit, stages, metrics, gate, model files in DVC and how to fetch them, its history."""
    try:
        state = _registry(params, repo).state()
        info = state.resolve(ref)
    except RegistryError as exc:
        _fail(exc)
    history = [{k: e[k] for k in ("time", "event", "stage", "author", "message")} for e in state.events if e["version"] == info.version]
    rec, model = info.record, info.record.get("model") or {}
    if as_json:
        return _echo_json({**dataclasses.asdict(info), "history": history})
    typer.echo(f"{state.artifact} {info.version}  stages: {', '.join(info.stages) or '-'}{'' if info.active else '  (deregistered)'}")
    typer.echo(f"  tag {info.tag} -> commit {info.commit} (code revision {rec.get('code_revision', '?')})")
    typer.echo(f"  registered {info.created_at} by {info.author}: {rec.get('why', '')}")
    typer.echo(f"  metrics: {json.dumps(rec.get('metrics') or {}, sort_keys=True)}")
    typer.echo(f"  gate: {'passed' if (rec.get('gate') or {}).get('passed') else 'not recorded'}; "
               f"evaluated against production {rec.get('evaluated_against')}")  # fmt: skip
    if model:
        typer.echo(f"  model files: DVC md5 {model['md5']} ({model.get('nfiles')} files, {model.get('size')} bytes) in {model.get('remote')}")
        typer.echo(f"  fetch: tunegate registry fetch {info.version} DEST")
        typer.echo(f"     or with DVC alone: a .dvc file with `outs: [{{md5: {model['md5']}, path: model, hash: md5}}]`, "
                   f"then `dvc pull` from a remote at {model.get('remote')}")  # fmt: skip
    typer.echo("  history:")
    for e in history:
        typer.echo(f"    {str(e['time'])[:19]}  {e['event']:<13} {e['stage'] or '':<11} by {e['author']}: {e['message']}")


@registry_app.command()
def promote(version: str = typer.Argument(..., help="The version to promote (v0.2.0) or staging."),
            evaluate_dir: Path = typer.Option(Path("models/evaluate"), help="evaluate's output: its gate.json judges this version."),
            who: str = WHO, message: str = typer.Option(None, "--message", "-m", help="Why (default: the gate's verdict)."),
            params: str = PARAMS, repo: str = REPO) -> None:  # fmt: skip
    """Make VERSION production, only if its gate passed and it is not worse than production (promote: thresholds)."""
    from steps import promote as step

    try:
        cfg = step.STEP.load_config(params) if Path(params).is_file() else PromoteConfig()
        cfg = dataclasses.replace(cfg, who=who or cfg.who, message=message or cfg.message,
                                  registry=dataclasses.replace(cfg.registry, repo=repo) if repo else cfg.registry)  # fmt: skip
        outcome, wandb = step.promote_version(cfg, version, evaluate_dir)
    except (RegistryError, ValueError) as exc:
        _fail(exc)
    typer.echo("\n".join(f"  {r}" for r in outcome.reasons))
    if not outcome.accepted:
        typer.echo(f"REFUSED: {outcome.version} stays out of production; production is still {outcome.production}")
        raise typer.Exit(1)
    if outcome.changed:
        typer.echo(f"{outcome.version} is production (was {outcome.previous or 'none'}); W&B: {wandb}")


@registry_app.command()
def rollback(message: str = typer.Option(..., "--message", "-m", help="Why production goes back (recorded in the tag)."),
             who: str = WHO, params: str = PARAMS, repo: str = REPO) -> None:  # fmt: skip
    """Put the previous production version back in production (recorded with who and why)."""
    from steps.registry.wandb_link import link_wandb

    registry = _registry(params, repo)
    try:
        outcome = registry.rollback(who=who, why=message)
        wandb = link_wandb(registry.settings, registry.state().versions[outcome.version], PRODUCTION)
    except RegistryError as exc:
        _fail(exc)
    typer.echo(f"rolled back: {outcome.version} is production (was {outcome.previous}); W&B: {wandb}")


@registry_app.command()
def fetch(ref: str = typer.Argument(PRODUCTION, help="A version or a stage."),
          dest: Path = typer.Argument(None, help="Where to put the files (default: registry.cache_dir)."),
          params: str = PARAMS, repo: str = REPO) -> None:  # fmt: skip
    """Check a version's model files out of the DVC cache (pulled from the remote when needed)."""
    try:
        typer.echo(_registry(params, repo).fetch(ref, dest))
    except RegistryError as exc:
        _fail(exc)


@registry_app.command()
def history(params: str = PARAMS, repo: str = REPO, as_json: bool = JSON) -> None:
    """Every registration, promotion, rollback and retirement, oldest first, with who and why."""
    try:
        events = _registry(params, repo).state().events
    except RegistryError as exc:
        _fail(exc)
    if as_json:
        return _echo_json([{k: v for k, v in e.items() if k != "record"} for e in events])
    for e in events:
        typer.echo(f"{str(e['time'])[:19]}  {e['version'] or '':<10} {e['event']:<13} {e['stage'] or '':<11} by {e['author']}: {e['message']}")


def lineage_lines(chain: dict[str, Any]) -> list[str]:
    """The lineage chain as indented lines, newest link first."""
    model, train, data = chain.get("model") or {}, chain.get("train") or {}, chain.get("data") or {}
    params = train.get("params") or {}
    lines = [f"{chain['artifact']} {chain['version']} (stages: {', '.join(chain['stages']) or '-'})",
             f"  <- tag {chain['tag']} on commit {chain['commit']}, registered {chain['registered_at']} by {chain['registered_by']}",
             f"  <- model files: DVC md5 {model.get('md5', '?')} in {model.get('remote', '?')}",
             f"  <- code: git revision {chain.get('code_revision') or '?'} (workspace at registration: {chain.get('git_revision') or '?'})"]  # fmt: skip
    if train:
        lines += [f"  <- train manifest {train.get('manifest')}: git revision {train.get('git_revision')}",
                  f"       params: stage={params.get('stage')} method={params.get('method')} base_model={params.get('base_model')} "
                  f"epochs={params.get('epochs')} learning_rate={params.get('learning_rate')} seed={params.get('seed')}",
                  "       trained on sha256: " + ", ".join(f"{k}={v[:12]}" for k, v in (train.get("data_sha256") or {}).items() if v)]  # fmt: skip
    else:
        lines.append("  <- train manifest: not recorded")
    lines.append(f"  <- training data {data.get('data_dir', '?')}: DVC md5 {data.get('data_dvc_md5')}"
                 f"{'' if data.get('data_matches_train') else ' (differs from what was trained on, or unknown)'}")  # fmt: skip
    for name, md5 in (data.get("raw_dvc_md5") or {}).items():
        lines.append(f"  <- raw data {name}: DVC md5 {md5}")
    return lines


def lineage_command(ref: str = typer.Argument(PRODUCTION, help="A version (v0.2.0) or a stage (production, staging)."),
                    params: str = PARAMS, repo: str = REPO, as_json: bool = JSON) -> None:  # fmt: skip
    """Print the chain behind a model: version, tag and commit, DVC md5 of its files, train params and git
    revision, DVC md5 of the training and raw data."""
    try:
        chain = _registry(params, repo).lineage(ref)
    except RegistryError as exc:
        _fail(exc)
    if as_json:
        return _echo_json(chain)
    typer.echo("\n".join(lineage_lines(chain)))
