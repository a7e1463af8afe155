"""The entry point every step shares: ``python -m steps.<step> PATHS... [--params params.yaml]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from steps._config import load_section


def step_main(
    argv: list[str] | None,
    *,
    step: str,
    doc: str,
    config: type,
    paths: dict[str, Path],
    run: Callable[..., Any],
    report: Callable[[Any], int],
    errors: tuple[type[BaseException], ...],
) -> int:
    """Parse the step's paths and --params, run it on its params section, report, return the exit code.

    A known error (``errors``: bad params, a bad input file, a missing model) prints one line naming
    the step and returns 2; ``report(result)`` prints the summary and returns 0 or 1 (a failed gate).
    """
    ap = argparse.ArgumentParser(prog=f"python -m steps.{step}", description=(doc or "").split("\n")[0])
    for name, default in paths.items():
        ap.add_argument(name, type=Path, nargs="?", default=default)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    try:
        result = run(load_section(config, step, args.params), *(getattr(args, name) for name in paths))
    except errors as exc:
        print(f"{step}: {exc}", file=sys.stderr)
        return 2
    return report(result)
