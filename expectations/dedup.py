"""Dedup gate: how much of train is an exact or near-duplicate of an earlier train record.

One row per train record; ``exact_dup``/``near_dup`` are 1 for every copy after
the first of its group, so the column mean is the duplicate fraction.
"""

from __future__ import annotations

import great_expectations as gx
import great_expectations.expectations as gxe

NAME = "dedup"
PARAMETERS = ("max_exact_dup_fraction", "max_near_dup_fraction")


def build() -> gx.ExpectationSuite:
    return gx.ExpectationSuite(
        name=NAME,
        expectations=[
            gxe.ExpectColumnMeanToBeBetween(
                column="exact_dup", min_value=0, max_value={"$PARAMETER": "max_exact_dup_fraction"},
                description="Fraction of train records that repeat an earlier one exactly (meta.hash)",
                meta={"field": "meta.hash", "fix": "rerun ingest (it drops exact copies) or remove the copies"},
            ),
            gxe.ExpectColumnMeanToBeBetween(
                column="near_dup", min_value=0, max_value={"$PARAMETER": "max_near_dup_fraction"},
                description="Fraction of train records that nearly repeat an earlier one (MinHash Jaccard)",
                meta={"field": "messages", "fix": "deduplicate near-copies (templated rows?) or raise validate.max_near_dup_fraction"},
            ),
        ],
    )
