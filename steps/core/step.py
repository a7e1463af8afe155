"""Each step described once: name, Config, Result, run, and its default input and output folders.

The step CLI (``python -m steps.<name>`` and ``tunegate <name>``), the Prefect tasks, per-step
dispatch, dvc.yaml's test and the docs all read a step's ``STEP``; no other place names a default
folder or builds a class name from a string.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steps.core.config import ConfigError, load_section, params_of


@dataclass(frozen=True)
class Step:
    """One pipeline step.

    Attributes:
        name: the step's one name: module ``steps.<name>``, params section, DVC stage, Prefect task, CLI command.
        config: the frozen dataclass its params section loads into.
        result: what ``run`` returns (rebuilt from JSON when the step ran in another container).
        run: ``run(cfg, *paths, **extra)``, the pure function the flow and the CLI call.
        paths: ``run``'s path arguments in order, each with its default folder; ``out_dir`` last.
        report: prints the result's summary and returns the exit code (0, or 1 for a failed gate).
        errors: what a user can cause (bad params, a bad input, a missing model): one line and exit 2.
        configure: builds the config from all params when it needs more than its own section.
        cli_run: what the CLI runs instead of ``run`` when the CLI resolves more arguments itself.
        doc: the module docstring, whose first line is the command's help.
    """

    name: str
    config: type
    result: type
    run: Callable[..., Any]
    paths: dict[str, str]
    report: Callable[[Any], int]
    errors: tuple[type[BaseException], ...] = (ConfigError,)
    configure: Callable[[dict[str, Any]], Any] | None = None
    cli_run: Callable[..., Any] | None = None
    doc: str = ""

    def __post_init__(self) -> None:
        if list(self.paths)[-1:] != ["out_dir"]:
            raise ValueError(f"step {self.name}: paths must end with out_dir; got {list(self.paths)}")

    @property
    def inputs(self) -> dict[str, str]:
        """The input path arguments and their default folders (each another step's output, or data/raw)."""
        return {k: v for k, v in self.paths.items() if k != "out_dir"}

    @property
    def output(self) -> str:
        """The default output folder."""
        return self.paths["out_dir"]

    def load_config(self, params: Path | str | dict[str, Any] = "params.yaml") -> Any:
        """The step's config from params.yaml (or its already-read dict); a bad key raises ConfigError."""
        values = params_of(params)
        return self.configure(values) if self.configure else load_section(self.config, self.name, values)

    def main(self, argv: list[str] | None = None) -> int:
        """``python -m steps.<name> [PATHS...] [--params params.yaml]``: run, report, return the exit code."""
        from steps.core.cli import step_main

        return step_main(self, argv)
