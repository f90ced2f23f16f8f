"""What dbt knows about the model being run that its Python `dbt` object does not expose.

A Python model's `dbt.config.get(...)` only answers keys the model file names literally, so the
model's `unique_key` (the column(s) dbt merges the returned rows on) is read from the node that
dbt-duckdb is executing, on the calling stack. This is a DuckDB-specific seam: on an adapter that runs
Python models elsewhere the node is not found and the check it serves is skipped.
"""

from __future__ import annotations

import inspect
from typing import Any


def running_node(identifier: str) -> dict[str, Any] | None:
    """The parsed node dbt-duckdb is running (`submit_python_job`'s `parsed_model`), if it is ours."""
    frame = inspect.currentframe()
    try:
        while frame is not None:
            node = frame.f_locals.get("parsed_model") if frame.f_code.co_name == "submit_python_job" else None
            if isinstance(node, dict) and (node.get("alias") or node.get("name")) == identifier:
                return node
            frame = frame.f_back
        return None
    finally:
        del frame


def config(identifier: str) -> dict[str, Any] | None:
    """The model's resolved dbt config (`materialized`, `unique_key`, `incremental_strategy`, ...), or None
    when the node is not found."""
    node = running_node(identifier)
    return None if node is None else (node.get("config") or {})


def columns(value: Any) -> tuple[str, ...] | None:
    """A config's column list (`unique_key`, `merge_on_using_columns`) as a tuple of names: a name, a
    comma-separated string or a list; None when unset."""
    if value is None:
        return None
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",")) if "," in value else (value,)
    return tuple(value)
