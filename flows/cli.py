"""``tunegate``: one subcommand per step, and ``run`` for the whole flow.

Each step command calls the step's own ``main`` (the same entry point dvc.yaml
runs), so the CLI, DVC and Prefect run one code path.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer

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


@app.command()
def ingest(
    out_dir: Path = typer.Argument(Path("data/prepared"), help="Output folder for the splits and quarantine."),
    params: str = PARAMS,
) -> None:
    """Read raw datasets (JSON, JSONL, CSV, Parquet; alpaca, sharegpt, OpenAI messages, preference,
    feedback, text, classification) into canonical records; quarantine bad records with file, row,
    field and reason; split train/validation/test without letting a duplicate group span two splits."""
    from steps import ingest as step

    raise typer.Exit(step.main([str(out_dir), "--params", params]))


@app.command()
def validate(
    prepared_dir: Path = typer.Argument(Path("data/prepared"), help="ingest's output folder."),
    out_dir: Path = typer.Argument(Path("data/validated"), help="Output: gated data, report.json, Data Docs."),
    params: str = PARAMS,
) -> None:
    """Run the data gates (format, dedup, leakage, PII) as Great Expectations suites; exit 1 when one fails,
    with a summary table, Data Docs HTML and report.json."""
    from steps import validate as step

    raise typer.Exit(step.main([str(prepared_dir), str(out_dir), "--params", params]))


@app.command("train")
def train_cmd(
    data_dir: Path = typer.Argument(Path("data/validated"), help="validate's output folder."),
    out_dir: Path = typer.Argument(Path("models/train"), help="Output: model or adapter, tokenizer, template, manifest."),
    params: str = PARAMS,
) -> None:
    """Fine-tune the base model: stage (sft, pt, cls, dpo, kto, orpo, rm, grpo, rloo) and method (full, freeze,
    lora, qlora, dora, prefix, prompt, ia3) from params.yaml; resumable, tracked in W&B (offline by default)."""
    from steps import train as step

    raise typer.Exit(step.main([str(data_dir), str(out_dir), "--params", params]))


@app.command("base-model")
def base_model(spec: str = typer.Argument(None, help="Model id or path; default: base.base_model from params.")) -> None:
    """Resolve the base model (converting the embedded SmolLM2 GGUF once into a local cache) and print its folder."""
    from steps._config import read_params
    from steps._model import ModelError, ensure_local_model

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
) -> None:
    """Run the whole retrain flow under Prefect (its ephemeral local server unless PREFECT_API_URL is set)."""
    from flows.retrain import retrain

    state = retrain(params=params, data_dir=data_dir, models_dir=models_dir, return_state=True)
    typer.echo(f"retrain: {state.name}: {state.message or ''}")
    raise typer.Exit(0 if state.is_completed() else 1)


if __name__ == "__main__":
    app()
