"""The ``tunegate-step`` flow: one step of the pipeline, run where its work pool puts it.

The retrain flow starts it through ``run_deployment`` (flows/dispatch.py) for each step placed in
another pool (``steps_in``); its deployments are ``step-process``, ``step-docker`` and
``step-kubernetes`` in deploy/prefect.yaml. The same code runs in every pool: the step's config
arrives as JSON and is rebuilt by the loader that reads params.yaml, so a bad value fails here
with the same message it would in the flow.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.dispatch import STEP_FLOW, run_here
from steps import describe


@flow(name=STEP_FLOW)
def run_step(step: str, config: dict[str, Any], paths: dict[str, Any]) -> str:
    """Run ``step`` (ingest ... merge) on ``config`` with its input and output ``paths``; the result lands in OUT_DIR/result.json."""
    result = run_here(describe(step), config, paths)
    return f"{step}: {type(result).__name__} in {paths['out_dir']}"
