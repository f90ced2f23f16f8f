"""The status snapshot: what `status` shows while a running dbt holds the DuckDB file's lock.

While dbt runs, DuckDB locks the database file and no other process can open it, not even
read-only. So the run path writes the per-batch part of the status (`inspect.status_document` with
``per_row=False``: models, submissions, batches, runs; never the per-row tables) to a JSON file next
to the database, at the end of each run and while it waits for batches:

    <database file>.<state schema>.json          e.g. warehouse.duckdb.dbt_claude_batch.json

Written to a temporary file in the same directory and moved into place with `os.replace`, so a
reader sees the previous snapshot or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from dbt_claude_batch.state.inspect import status_document


def snapshot_path(database_path: str | os.PathLike, state_schema: str = "dbt_claude_batch") -> str:
    """Where the snapshot of `state_schema` in the DuckDB file `database_path` lives."""
    return f"{os.fspath(database_path)}.{state_schema}.json"


def database_path(cursor) -> str | None:
    """The file of the cursor's current database (absolute), or None for an in-memory database."""
    row = cursor.execute(
        "select path from duckdb_databases() where database_name = current_database()").fetchone()
    return row[0] if row and row[0] and row[0] != ":memory:" else None


def write_snapshot(cursor, state_schema: str, path: str | None = None) -> str | None:
    """Write the per-batch status of every batch model to the snapshot file; return its path.

    Reads only per-batch tables, so it is cheap enough for every run and every poll. `path` defaults
    to `snapshot_path` of the cursor's database file; an in-memory database has no snapshot (None).
    A failure to write (disk full, read-only directory) is logged, never raised: the snapshot is a
    convenience and must not fail the run.
    """
    path = path or _default_path(cursor, state_schema)
    if path is None:
        return None
    document = status_document(cursor, state_schema, per_row=False)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".snapshot-", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(document, f, indent=1, default=str)
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; others read it like the database
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as exc:
        from dbt_claude_batch.base.log import logger

        logger.warning(f"could not write the status snapshot {path}: {exc}")
        return None
    return path


def _default_path(cursor, state_schema: str) -> str | None:
    db = database_path(cursor)
    return snapshot_path(db, state_schema) if db else None


def read_snapshot(path: str) -> dict[str, Any] | None:
    """The snapshot document at `path`, or None when there is none (yet)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
