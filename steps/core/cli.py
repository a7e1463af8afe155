"""The entry point every step shares: ``python -m steps.<step> PATHS... [--params params.yaml]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from steps.core.io import FolderError, check_inputs, check_output

if TYPE_CHECKING:
    from steps.core.step import Step


def step_main(step: Step, argv: list[str] | None) -> int:
    """Parse the step's paths and --params, run it on its config, report, return the exit code.

    Before running, after loading the config: the output folder must be empty, new or this step's own (never an input), and no
    input folder's manifest may say its gate failed (``steps.core.io.check_output``, ``check_inputs``).
    A known error (``step.errors``: bad params, a bad input file, a missing model; a refused folder)
    prints one line naming the step and returns 2; ``step.report(result)`` prints the summary and returns 0 or 1
    (a failed gate).
    """
    ap = argparse.ArgumentParser(prog=f"python -m steps.{step.name}", description=(step.doc or "").split("\n")[0])
    for name, default in step.paths.items():
        ap.add_argument(name, type=Path, nargs="?", default=Path(default))
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    paths = {name: getattr(args, name) for name in step.paths}
    inputs = [paths[name] for name in step.inputs]
    try:
        cfg = step.load_config(args.params)
        check_output(paths["out_dir"], step.name, inputs)
        check_inputs(step.name, inputs)
        result = (step.cli_run or step.run)(cfg, *paths.values())
    except (FolderError, *step.errors) as exc:
        print(f"{step.name}: {exc}", file=sys.stderr)
        return 2
    return step.report(result)
