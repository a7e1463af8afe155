"""``tunegate``: one subcommand per step, and ``run`` for the whole flow.

Each step command calls the step's own ``main`` (the same entry point dvc.yaml
runs), so the CLI, DVC and Prefect run one code path.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from steps import PIPELINE, describe

app = typer.Typer(
    help="tunegate: a fine-tuning pipeline whose gates keep bad data and worse models out of production.",
    no_args_is_help=True,
    add_completion=False,
)

PARAMS = typer.Option("params.yaml", "--params", "-p", help="The params file (one section per step).")


@app.command("demo-data")
def demo_data(
    raw_dir: Path = typer.Argument(Path("data/raw"), help="Where raw data lives (DVC-tracked)."),
    track: bool = typer.Option(True, help="Track the files with `dvc add` (needs a DVC repository)."),
) -> None:
    """Write the embedded demo dataset and the MT-Bench held-out set into data/raw, then `dvc add` them."""
    from steps import demo_data as step

    paths = step.run(raw_dir)
    for p in paths:
        typer.echo(f"wrote {p}")
    if track and Path(".dvc").is_dir():
        subprocess.run([sys.executable, "-m", "dvc", "add", "--quiet", *map(str, paths)], check=True)
        typer.echo(f"tracked {len(paths)} files with DVC ({raw_dir}/*.dvc)")


# Each step's command: its paths in order, defaults from the step's descriptor (steps/core/step.py),
# run through the step's own main (the entry point dvc.yaml runs). Here: only the help texts.
STEP_HELP = {
    "ingest": ("Read raw datasets (JSON, JSONL, CSV, Parquet; alpaca, sharegpt, OpenAI messages, preference, "
               "feedback, text, classification) into canonical records; quarantine bad records with file, row, "
               "field and reason; split train/validation/test without letting a duplicate group span two splits.",
               {"out_dir": "Output folder for the splits and quarantine."}),
    "validate": ("Run the data gates (format, dedup, leakage, PII) as Great Expectations suites; exit 1 when one "
                 "fails, with a summary table, report.html (every failing record, offline) and report.json in "
                 "OUT_DIR.failed, keeping the last passing OUT_DIR.",
                 {"prepared_dir": "ingest's output folder.", "out_dir": "Output: gated data, report.json, report.html, Data Docs."}),
    "augment": ("Augment the train split (back-translation, EDA; optional Self-Instruct) behind quality filters, "
                "then re-run the dedup and leakage checks so no augmented record resembles a test record.",
                {"data_dir": "validate's output folder.", "out_dir": "Output: train split + accepted augmented records."}),
    "train": ("Fine-tune the base model: stage (sft, pt, cls, dpo, kto, orpo, rm, grpo, rloo) and method (full, "
              "freeze, lora, qlora, dora, prefix, prompt, ia3) from params.yaml; resumable, tracked in W&B "
              "(offline by default).",
              {"data_dir": "augment's output folder (validate's when augment is off).",
               "out_dir": "Output: model or adapter, tokenizer, template, manifest."}),
    "evaluate": ("Score the candidate against the base and production models (perplexity, BLEU/ROUGE, BERTScore, "
                 "judge, forgetting, safety) and apply the evaluation gate; exit 1 when it fails, with every reason.",
                 {"data_dir": "validate's output folder (test + held-out splits).",
                  "model_dir": "train's output folder: the candidate.",
                  "out_dir": "Output: metrics.json, gate.json, report.html, plots."}),
    "merge": ("Merge a LoRA/DoRA/QLoRA adapter into its base (in full precision) after a passing gate; the merged "
              "logits must match the adapter's.",
              {"model_dir": "train's output folder.", "evaluate_dir": "evaluate's output folder (its gate.json must pass).",
               "out_dir": "Output: the merged model with its model card."}),
    "register": ("Register the merged model as a new version (GTO git tag, files in DVC), stage `staging`.",
                 {"merged_dir": "merge's output folder.", "evaluate_dir": "evaluate's output folder.",
                  "out_dir": "Output: the registration record."}),
    "promote": ("Move the registered version to `production` if the gate passed and it beats production; exit 1 "
                "if refused.",
                {"evaluate_dir": "evaluate's output folder.", "register_dir": "register's output folder.",
                 "out_dir": "Output: the promotion decision."}),
}  # fmt: skip


def _step_command(name: str) -> None:
    """Add ``tunegate <name> [PATHS...] [--params]`` for pipeline step ``name``."""
    step = describe(name)
    doc, arg_help = STEP_HELP[name]

    def command(**kwargs: Any) -> None:
        argv = [str(kwargs[k]) for k in step.paths] + ["--params", kwargs["params"]]
        raise typer.Exit(step.main(argv))

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter(k, kind, annotation=Path, default=typer.Argument(Path(v), help=arg_help[k]))
              for k, v in step.paths.items()]  # fmt: skip
    command.__signature__ = inspect.Signature([*params, inspect.Parameter("params", kind, annotation=str, default=PARAMS)])
    command.__doc__ = doc
    command.__name__ = name
    app.command(name)(command)


for _name in PIPELINE:
    _step_command(_name)


@app.command("serve")
def serve_cmd(
    model: str = typer.Argument(None, help="A model folder, or 'production' (the registry's); default: serve.model."),
    host: str = typer.Option(None, help="Bind address (serve.host; 0.0.0.0 in a container)."),
    port: int = typer.Option(None, help="TCP port (serve.port)."),
    model_name: str = typer.Option(None, "--model-name", help="The model id clients send (default: serve.model_name)."),
    backend: str = typer.Option(None, help="auto | transformers | vllm (serve.backend)."),
    adapter_base: str = typer.Option(None, "--adapter-base", help="An unmerged adapter's base model folder here."),
    params: str = PARAMS,
) -> None:
    """Serve a model over an OpenAI-compatible API (/v1/chat/completions, /v1/models, /health); bearer-token
    auth when $TUNEGATE_API_KEY is set; vLLM on a CUDA GPU when installed, transformers otherwise."""
    from steps import serve as step
    from steps.registry.settings import RegistryError
    from steps.registry.versions import production_model_dir
    from steps.serving.folder import ServeError

    def resolver(stage: str) -> Path | None:
        if stage != "production":
            raise ServeError(f"serve.model '{stage}': no such folder, and the registry resolves only 'production'")
        try:
            return production_model_dir(".")
        except RegistryError as exc:
            raise ServeError(f"serve.model 'production': {exc}") from exc

    flags = {"--host": host, "--port": port, "--model-name": model_name, "--backend": backend, "--adapter-base": adapter_base}
    argv = [model] if model else []
    argv += ["--params", params] + [x for flag, v in flags.items() if v is not None for x in (flag, str(v))]
    raise typer.Exit(step.main(argv, resolver=resolver))


@app.command("base-model")
def base_model(spec: str = typer.Argument(None, help="Model id or path; default: base.base_model from params.")) -> None:
    """Resolve the base model (converting the embedded SmolLM2 GGUF once into a local cache) and print its folder."""
    from steps.core.config import read_params
    from steps.models.loading import ModelError, ensure_local_model

    spec = spec or read_params().get("base", {}).get("base_model")
    try:
        typer.echo(ensure_local_model(spec))
    except ModelError as exc:
        typer.echo(f"base-model: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def run(
    params: str = PARAMS,
    data_dir: str = typer.Option("data", help="Where the data steps write their outputs."),
    models_dir: str = typer.Option("models", help="Where the model steps write their outputs."),
    steps_in: Optional[str] = typer.Option(
        None, help="Send each step to this pool's step deployment (process, docker, kubernetes: a section of "
        "deploy/workpools/job_variables.yaml); needs a Prefect server, the step-<pool> deployment and its worker."),
) -> None:
    """Run the whole retrain flow under Prefect (its ephemeral local server unless PREFECT_API_URL is set)."""
    _preflight(params, Path(data_dir), Path(models_dir))
    from flows.retrain import retrain

    state = retrain(params=params, data_dir=data_dir, models_dir=models_dir, steps_in=steps_in, return_state=True)
    typer.echo(f"retrain: {state.name}: {state.message or ''}")
    _where_to_look(Path(data_dir), Path(models_dir))
    raise typer.Exit(0 if state.is_completed() else 1)


def _preflight(params: str, data_dir: Path, models_dir: Path) -> None:
    """Every step's config and output folder checked before the flow starts: a bad one is one line and exit 2."""
    from steps.core.config import ConfigError, params_of
    from steps.core.io import FolderError, check_output

    roots = {"data": data_dir, "models": models_dir}
    try:
        values = params_of(params)
    except ConfigError as exc:
        typer.echo(f"run: {exc}", err=True)
        raise typer.Exit(2) from None
    for name in PIPELINE:
        step = describe(name)
        out = roots[Path(step.output).parts[0]].joinpath(*Path(step.output).parts[1:])
        try:
            step.load_config(values)
            check_output(out, name)
        except (ConfigError, FolderError, *step.errors) as exc:
            typer.echo(f"run: {name}: {exc}", err=True)
            raise typer.Exit(2) from None


def _where_to_look(data_dir: Path, models_dir: Path) -> None:
    """The closing lines of a run: every place its results can be seen."""
    import glob

    from steps.registry.versions import production_version

    runs = sorted(glob.glob("wandb/offline-run-*"))
    report, docs = models_dir / "evaluate" / "report.html", data_dir / "validated" / "report.html"
    if (data_dir / "validated.failed" / "report.html").is_file():  # the data gates failed: their report is there
        docs = data_dir / "validated.failed" / "report.html"
    lines = [
        ("evaluation report", f"{report.resolve()}" if report.is_file() else "(not written: the flow stopped earlier)"),
        ("data gates", f"{docs.resolve()}" if docs.is_file() else "(not written)"),
        ("Prefect UI", "prefect server start   # then open http://127.0.0.1:4200 (runs are kept in ~/.prefect)"),
        ("W&B offline run", f"{runs[-1]}   # wandb sync {runs[-1]}" if runs else "(tracking off)"),
        ("registry", f"production = {production_version() or 'none'}   # tunegate registry list; tunegate lineage production"),
        ("chat with production", "tunegate serve   # then: curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' "
                                 "-d '{\"model\": \"tunegate\", \"messages\": [{\"role\": \"user\", \"content\": \"Hi Tessa\"}]}'"),
        ("DVC", "dvc metrics show; dvc plots show   # or make repro: the same steps through dvc repro"),
    ]
    typer.echo("\nWhere to look:")
    for name, where in lines:
        typer.echo(f"  {name:<21} {where}")


from flows.registry_cli import lineage_command, registry_app  # noqa: E402

app.add_typer(registry_app, name="registry")
app.command("lineage")(lineage_command)

from flows.deploy import deploy_command  # noqa: E402

app.command("deploy")(deploy_command)


if __name__ == "__main__":
    app()
