"""The ``tunegate-step`` flow: one step of the pipeline, run where its work pool puts it.

The retrain flow starts it through ``run_deployment`` (flows/_dispatch.py) for each step placed in
another pool (``steps_in``); its deployments are ``step-process``, ``step-docker`` and
``step-kubernetes`` in deploy/prefect.yaml. The same code runs in every pool: the step's config
arrives as JSON and is rebuilt by the loader that reads params.yaml, so a bad value fails here
with the same message it would in the flow.
"""

from __future__ import annotations

from typing import Any

import flows  # noqa: F401  (telemetry defaults before prefect is imported)
from prefect import flow

from flows._dispatch import STEP_FLOW, run_here


@flow(name=STEP_FLOW)
def run_step(step: str, config: dict[str, Any], paths: dict[str, Any]) -> str:
    """Run ``step`` (ingest ... merge) on ``config`` with its input and output ``paths``; the result lands in OUT_DIR/result.json."""
    from flows.retrain import STEPS

    result = run_here(STEPS[step], step, config, paths)
    return f"{step}: {type(result).__name__} in {paths['out_dir']}"
