"""A state with a staged source, for the pure DuckDB tests of planning."""

from __future__ import annotations

import duckdb

from dbt_claude_batch.run import planning
from dbt_claude_batch.state.state import State


def staged_items(source_rows: list[tuple[str | None, str | None]]) -> tuple[duckdb.DuckDBPyConnection, State]:
    """An in-memory state, a table `items` (id, body, model) with one row per (body, model), ids from 0,
    staged as a model keyed by id whose prompt reads body and whose model column is `model`."""
    con = duckdb.connect()
    state = State(con, "dbt_claude_batch", "db.main.items_batch")
    state.ensure()
    con.execute("create table items (id bigint, body varchar, model varchar)")
    con.executemany("insert into items values (?, ?, ?)", [(i, b, m) for i, (b, m) in enumerate(source_rows)])
    planning.stage(state, "select * from items", ["id"], ["body"], "model", "claude-haiku-4-5", "fingerprint")
    return con, state
