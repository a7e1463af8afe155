"""PII gate: personal data and secrets found by steps/core/pii.py.

One row per record; ``pii_findings`` counts its findings. ``max_pii_findings``
is a suite parameter: 0 for ``pii_action: fail``, unbounded (None) for mask and
report, where findings are reported but do not stop the pipeline.
"""

from __future__ import annotations

import great_expectations as gx
import great_expectations.expectations as gxe

from expectations._suite import at_most, suite

NAME = "pii"
PARAMETERS = ("max_pii_findings",)


def build() -> gx.ExpectationSuite:
    return suite(NAME, at_most(gxe.ExpectColumnSumToBeBetween, "pii_findings", "max_pii_findings",
                               "Emails, phone numbers, national ids, card numbers and secrets found", "content",
                               "remove the personal data at the source, or set validate.pii_action: mask"))
