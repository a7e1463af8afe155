"""Format gate: every record is well formed, trainable and of a sane token length.

One row per record of every split; steps/validate.py computes the columns, the
expectations judge them. ``min_tokens``/``max_tokens`` are suite parameters.
"""

from __future__ import annotations

import great_expectations as gx
import great_expectations.expectations as gxe

NAME = "format"
PARAMETERS = ("min_tokens", "max_tokens")


def _true(column: str, description: str, field: str, fix: str) -> gxe.Expectation:
    return gxe.ExpectColumnValuesToBeInSet(
        column=column, value_set=[True], description=description, meta={"field": field, "fix": fix}
    )


def build() -> gx.ExpectationSuite:
    return gx.ExpectationSuite(
        name=NAME,
        expectations=[
            _true("schema_ok", "Record matches the canonical schema (kind, roles, types, meta)", "kind/messages",
                  "rewrite the record with steps.core.schema.make_record (see the steps/core/schema.py docstring)"),
            _true("nonempty_ok", "No empty turn or text", "content",
                  "drop the empty turn or fill it in the source data"),
            _true("roles_ok", "Role order: [system], user, then assistant/user alternating; "
                  "function_call -> tool -> assistant|function_call", "messages",
                  "reorder or merge turns in the source conversation"),
            _true("learnable_ok", "SFT record has at least one assistant turn", "messages",
                  "add the assistant answer, or map the right column to the assistant role"),
            _true("pair_ok", "Preference: chosen and rejected non-empty and different", "chosen/rejected",
                  "drop the pair: identical answers teach nothing"),
            _true("label_ok", "Feedback label is a bool; cls label is present", "label",
                  "map the label column to true/false (feedback) or a class (cls)"),
            gxe.ExpectColumnValuesToBeUnique(
                column="id", description="Record ids are unique across splits",
                meta={"field": "id", "fix": "rerun ingest: ids are digests of dataset, file and row"},
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column="n_tokens",
                min_value={"$PARAMETER": "min_tokens"},
                max_value={"$PARAMETER": "max_tokens"},
                description="Token length (base model tokenizer, chat template) within bounds",
                meta={"field": "messages", "fix": "drop or truncate the record, or raise validate.max_tokens"},
            ),
        ],
    )
