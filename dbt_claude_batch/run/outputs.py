"""Structured output: answers checked against `output_schema`, parsed into a JSON column, flattened.

An answer that is not JSON or does not validate becomes an outcome of kind `invalid_output`, which is
retried (bounded by `max_attempts`).
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from dbt_claude_batch.base.identifiers import literal, quote
from dbt_claude_batch.state.state import State

_READ_ROWS = 10_000


def validate_outputs(state: State, batch_id: str, schema: Mapping[str, Any]) -> int:
    """Mark this batch's succeeded answers that fail the schema as `invalid_output`; parse the rest."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(dict(schema))
    outcomes = state.table("outcomes")
    reader = state.cursor.sql(
        f"select custom_id, output_text from {outcomes} where batch_id = {literal(batch_id)} "
        "and result_type = 'succeeded' and shared_from is null"
    ).to_arrow_reader(_READ_ROWS)
    invalid: list[tuple[str, str]] = []
    for record_batch in reader:
        data = record_batch.to_pydict()
        for custom_id, text in zip(data["custom_id"], data["output_text"]):
            try:
                value = json.loads(text or "")
            except ValueError as exc:
                invalid.append((custom_id, f"answer is not JSON: {exc}"))
                continue
            error = next(iter(validator.iter_errors(value)), None)
            if error is not None:
                where = "/".join(str(p) for p in error.absolute_path) or "(root)"
                invalid.append((custom_id, f"answer does not match output_schema at {where}: {error.message}"))
    if invalid:
        state.run("create or replace temp table cb_invalid (custom_id varchar, reason varchar)")
        state.cursor.executemany("insert into cb_invalid values (?, ?)", invalid)
        state.run(
            f"update {outcomes} o set result_type = 'invalid_output', error_type = 'invalid_output', "
            "error_message = i.reason from cb_invalid i where o.batch_id = ? and o.custom_id = i.custom_id",
            [batch_id],
        )
        state.run("drop table cb_invalid")
    state.run(
        f"update {outcomes} set output_json = cast(output_text as json) "
        "where batch_id = ? and result_type = 'succeeded' and shared_from is null",
        [batch_id],
    )
    return len(invalid)


def flattened_columns_sql(columns: Mapping[str, str] | None, json_expr: str = "output_json") -> str:
    """`output_columns: {label: VARCHAR, score: DOUBLE}` -> typed columns read from top-level JSON fields."""
    if not columns:
        return ""
    return "".join(
        f", try_cast(json_extract_string({json_expr}, {literal('$.' + name)}) as {ctype}) as {quote(name)}"
        for name, ctype in columns.items()
    )
