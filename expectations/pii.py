"""PII gate: personal data and secrets found by steps/_pii.py.

One row per record; ``pii_findings`` counts its findings. ``max_pii_findings``
is a suite parameter: 0 for ``pii_action: fail``, unbounded (None) for mask and
report, where findings are reported but do not stop the pipeline.
"""

from __future__ import annotations

import great_expectations as gx
import great_expectations.expectations as gxe

NAME = "pii"
PARAMETERS = ("max_pii_findings",)


def build() -> gx.ExpectationSuite:
    return gx.ExpectationSuite(
        name=NAME,
        expectations=[
            gxe.ExpectColumnSumToBeBetween(
                column="pii_findings", min_value=0, max_value={"$PARAMETER": "max_pii_findings"},
                description="Emails, phone numbers, national ids, card numbers and secrets found",
                meta={"field": "content", "fix": "remove the personal data at the source, or set validate.pii_action: mask"},
            ),
        ],
    )
