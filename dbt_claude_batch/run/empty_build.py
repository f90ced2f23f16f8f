"""`dbt run --empty`: the results relation with its columns and no rows, with no API call and no state write.

dbt's `--empty` limits the refs of SQL models to zero rows; a Python model's `dbt.ref()` on dbt-duckdb is
not limited, so the model asks dbt's flags itself. CI runs `--empty` to check that a project builds, with
no money in mind: nothing may be submitted, sampled or polled, and the state schema is not touched (not
even created). The columns are those a real run returns: the results query is bound against an empty
state in a throwaway in-memory database, and only its column names and types are kept.
"""

from __future__ import annotations

import uuid

from dbt_claude_batch.base.errors import ConfigError
from dbt_claude_batch.base.identifiers import quote
from dbt_claude_batch.run.preflight import table_types
from dbt_claude_batch.run.results import results_sql
from dbt_claude_batch.base.settings import Settings
from dbt_claude_batch.state.state import State


def empty_requested() -> bool:
    """True when this dbt invocation was given `--empty`."""
    try:
        from dbt.flags import get_flags

        return bool(getattr(get_flags(), "EMPTY", False))
    except Exception:  # noqa: BLE001 - outside a dbt invocation there is no --empty
        return False


def empty_results(session, cfg: Settings, key_types: dict[str, str], model_id: str):
    """A relation with the results table's columns and types, and zero rows."""
    alias = f"cb_empty_{uuid.uuid4().hex[:12]}"
    cursor = session.cursor()
    home = cursor.execute("select current_database()").fetchall()[0][0]
    cursor.execute(f"attach ':memory:' as {alias}")
    try:
        cursor.execute(f"use {alias}")
        state = State(cursor, cfg.state_schema, model_id)
        state.ensure()
        relation = cursor.sql(results_sql(state, cfg, key_types, None))
        columns = list(zip(relation.columns, (str(t) for t in relation.types)))
    finally:
        cursor.execute(f"use {quote(home)}")
        cursor.execute(f"detach {alias}")
        cursor.close()
    return session.sql("select " + ", ".join(f"null::{type_} as {quote(name)}" for name, type_ in columns)
                       + " limit 0")


def check_empty_fits(session, relation, this) -> None:
    """An incremental `--empty` build merges into the existing table: a column it returns that the
    table lacks, or has with another type, or one the table has that it no longer returns (a changed
    key, changed output columns) would fail in dbt's merge with a binder error, or pass and fail the
    next real run."""
    cursor = session.cursor()
    try:
        have = {c.lower(): t for c, t in table_types(cursor, this).items()}
    finally:
        cursor.close()
    if not have:
        return
    returned = {c.lower(): str(t) for c, t in zip(relation.columns, relation.types)}
    problems = [f"no column {c}" for c in returned if c not in have]
    problems += [f"column {c} of type {have[c]}, where the model now returns {t}" for c, t in returned.items()
                 if c in have and have[c] != t]
    problems += [f"column {c}, which the model no longer returns" for c in have if c not in returned]
    if problems:
        raise ConfigError(
            f"Results table {this.schema}.{this.identifier} has {'; '.join(problems)} (its key or output_columns "
            f"changed): rebuild it with `dbt run --full-refresh -s {this.identifier}`; --empty made no API call."
        )
