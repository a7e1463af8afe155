"""Leakage gate: no train record may copy validation, test or held-out text.

One row per train record; ``leaked`` is 1 when the record is a MinHash
near-duplicate of an evaluation record or shares too many word n-grams with
the evaluation text. ``max_leaked`` is a suite parameter.
"""

from __future__ import annotations

import great_expectations as gx
import great_expectations.expectations as gxe

from expectations._suite import at_most, suite

NAME = "leakage"
PARAMETERS = ("max_leaked",)


def build() -> gx.ExpectationSuite:
    return suite(NAME, at_most(gxe.ExpectColumnSumToBeBetween, "leaked", "max_leaked",
                               "Train records that leak validation/test/held-out text", "messages",
                               "remove the record from train (rerun ingest: near-duplicate groups stay in one split)"))
