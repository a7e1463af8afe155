"""Dedup gate: how much of train is an exact or near-duplicate of an earlier train record.

One row per train record; ``exact_dup``/``near_dup`` are 1 for every copy after
the first of its group, so the column mean is the duplicate fraction.
"""

from __future__ import annotations

import great_expectations as gx
import great_expectations.expectations as gxe

from expectations._suite import at_most, suite

NAME = "dedup"
PARAMETERS = ("max_exact_dup_fraction", "max_near_dup_fraction")


def build() -> gx.ExpectationSuite:
    return suite(
        NAME,
        at_most(gxe.ExpectColumnMeanToBeBetween, "exact_dup", "max_exact_dup_fraction",
                "Fraction of train records that repeat an earlier one exactly (meta.hash)", "meta.hash",
                "rerun ingest: it keeps the first copy of each content (meta.hash) and drops the rest, "
                "counted in its manifest (datasets.<name>.dropped) and listed in dropped.jsonl"),
        at_most(gxe.ExpectColumnMeanToBeBetween, "near_dup", "max_near_dup_fraction",
                "Fraction of train records that nearly repeat an earlier one (MinHash Jaccard)", "messages",
                "deduplicate near-copies (templated rows?) or raise validate.max_near_dup_fraction"),
    )
