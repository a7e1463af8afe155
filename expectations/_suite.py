"""The one expectation shape the dedup, leakage and PII suites share: a column bounded by a suite parameter."""

from __future__ import annotations

import great_expectations as gx
import great_expectations.expectations as gxe


def at_most(kind: type[gxe.Expectation], column: str, parameter: str, description: str, field: str,
            fix: str) -> gxe.Expectation:
    """``kind`` (a column mean or sum expectation) over ``column`` between 0 and the suite parameter ``parameter``.

    ``field`` and ``fix`` go to ``meta``: report.json shows them beside each failing record.
    """
    return kind(column=column, min_value=0, max_value={"$PARAMETER": parameter}, description=description,
                meta={"field": field, "fix": fix})


def suite(name: str, *expectations: gxe.Expectation) -> gx.ExpectationSuite:
    return gx.ExpectationSuite(name=name, expectations=list(expectations))
