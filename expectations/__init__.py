"""Great Expectations suites for the data gates, written in code; thresholds are suite parameters.

Each module here defines one suite (``NAME``, ``PARAMETERS``, ``build()``) over a
DataFrame of per-record feature columns that ``steps/validate.py`` computes. The
suites are built once per context; thresholds arrive at validation time as
``expectation_parameters`` (the ``{"$PARAMETER": name}`` values in the suites),
so changing params.yaml never rebuilds a suite.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")  # no usage statistics leave the machine

import great_expectations as gx  # noqa: E402
from great_expectations.data_context.types.base import DataContextConfig, InMemoryStoreBackendDefaults, ProgressBarsConfig  # noqa: E402

from expectations import dedup, leakage, pii  # noqa: E402
from expectations import format as format_  # noqa: E402

SUITES = {m.NAME: m for m in (format_, dedup, leakage, pii)}
EXAMPLES = 20  # unexpected rows GX returns per expectation (enough for a report, cheap at 100k rows)

logging.getLogger("great_expectations").setLevel(logging.ERROR)


@dataclass(frozen=True)
class Check:
    """One expectation's verdict, in plain Python types."""

    gate: str
    column: str
    expectation: str
    description: str
    passed: bool
    observed: dict[str, Any]
    threshold: dict[str, Any]
    unexpected_index: list[int] = field(default_factory=list)  # DataFrame index labels GX flagged
    field: str = ""
    fix: str = ""
    error: str | None = None


def context(docs_dir: Path) -> Any:
    """An in-memory GX context with one Data Docs site written under ``docs_dir``."""
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
        data_docs_sites={
            "local": {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(Path(docs_dir).resolve())},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
    )
    return gx.get_context(project_config=config, mode="ephemeral")


def run_suites(frames: dict[str, Any], parameters: dict[str, Any], docs_dir: Path) -> dict[str, list[Check]]:
    """Validate ``frames[gate]`` against each gate's suite; build Data Docs under ``docs_dir``.

    Args:
        frames: gate name -> pandas DataFrame of that gate's feature columns.
        parameters: values for every suite parameter (``max_tokens``, ``max_leaked``, ...).
        docs_dir: where the Data Docs site (index.html) is written.
    """
    ctx = context(docs_dir)
    source = ctx.data_sources.add_pandas("tunegate")
    out: dict[str, list[Check]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for gate, frame in frames.items():
            module = SUITES[gate]
            suite = ctx.suites.add(module.build())
            batch = source.add_dataframe_asset(gate).add_batch_definition_whole_dataframe("records")
            vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=gate, data=batch, suite=suite))
            result = vd.run(
                batch_parameters={"dataframe": frame},
                expectation_parameters={k: parameters[k] for k in module.PARAMETERS},
                result_format={"result_format": "COMPLETE", "partial_unexpected_count": EXAMPLES,
                               "return_unexpected_index_query": False},
            )
            out[gate] = [_check(gate, r, parameters) for r in result.results]
        ctx.build_data_docs()
    return out


def _check(gate: str, r: Any, parameters: dict[str, Any]) -> Check:
    cfg = r.expectation_config
    res = r.result or {}
    if "observed_value" in res:
        observed = {"value": _plain(res["observed_value"])}
    else:
        observed = {k: _plain(res.get(k)) for k in ("element_count", "unexpected_count", "missing_count")}
    names = [v["$PARAMETER"] for v in _raw_kwargs(gate, cfg).values() if isinstance(v, dict) and "$PARAMETER" in v]
    threshold = {n: parameters[n] for n in names} or {k: v for k, v in cfg.kwargs.items() if k == "value_set"}
    index = [int(i) for i in (res.get("unexpected_index_list") or [])[:EXAMPLES] if not isinstance(i, dict)]
    exc = r.exception_info or {}
    error = exc.get("exception_message") if exc.get("raised_exception") else None
    meta = cfg.meta or {}
    return Check(gate, cfg.kwargs.get("column", ""), cfg.type, cfg.description or cfg.type, bool(r.success),
                 observed, threshold, index, meta.get("field", ""), meta.get("fix", ""), error)


def _raw_kwargs(gate: str, cfg: Any) -> dict[str, Any]:
    """The suite's own kwargs for this expectation (before parameters were substituted)."""
    for exp in SUITES[gate].build().expectations:
        if exp.expectation_type == cfg.type and getattr(exp, "column", None) == cfg.kwargs.get("column"):
            return exp.configuration.kwargs
    return {}


def _plain(v: Any) -> Any:
    """numpy scalars -> Python numbers, so reports serialise as JSON."""
    return v.item() if hasattr(v, "item") else v
