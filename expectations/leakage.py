"""Leakage gate: no train record may copy validation, test or held-out text.

One row per train record; ``leaked`` is 1 when the record is a MinHash
near-duplicate of an evaluation record or shares too many word n-grams with
the evaluation text. ``max_leaked`` is a suite parameter.
"""

from __future__ import annotations

import great_expectations as gx
import great_expectations.expectations as gxe

NAME = "leakage"
PARAMETERS = ("max_leaked",)


def build() -> gx.ExpectationSuite:
    return gx.ExpectationSuite(
        name=NAME,
        expectations=[
            gxe.ExpectColumnSumToBeBetween(
                column="leaked", min_value=0, max_value={"$PARAMETER": "max_leaked"},
                description="Train records that leak validation/test/held-out text",
                meta={"field": "messages", "fix": "remove the record from train (rerun ingest: near-duplicate groups stay in one split)"},
            ),
        ],
    )
