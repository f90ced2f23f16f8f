"""State schema versions: v1 state is upgraded in place; newer state is refused."""

from __future__ import annotations

import datetime as dt

import duckdb
import pytest

from dbt_claude_batch import state as state_module
from dbt_claude_batch.errors import StateError
from dbt_claude_batch.state import SCHEMA_VERSION, State


def _v1_database():
    con = duckdb.connect()
    con.execute('create schema "dbt_claude_batch"')
    con.execute('create table "dbt_claude_batch".state_version (version integer not null, applied_at timestamp not null)')
    for ddl in state_module._MIGRATIONS[1]:
        con.execute(ddl.format(s='"dbt_claude_batch"'))
    con.execute('insert into "dbt_claude_batch".state_version values (1, ?)', [dt.datetime(2026, 1, 1)])
    con.execute("""insert into "dbt_claude_batch".requests (submission_id, model_id, custom_id, key_json, input_hash,
                   request_hash, attempt, model) values ('s', 'm', 'k1', '{"id":1}', 'i', 'r', 1, 'claude-haiku-4-5')""")
    return con


def test_v1_state_is_migrated_in_place_and_keeps_its_rows():
    con = _v1_database()
    State(con, "dbt_claude_batch", "m").ensure()
    assert con.execute('select max(version) from "dbt_claude_batch".state_version').fetchone()[0] == SCHEMA_VERSION == 3
    assert con.execute('select custom_id, key_custom_id, part, parts from "dbt_claude_batch".requests').fetchall() == [
        ("k1", "k1", 1, 1)]
    State(con, "dbt_claude_batch", "m").ensure()  # idempotent
    assert con.execute('select count(*) from "dbt_claude_batch".state_version').fetchone()[0] == 3
    assert con.execute('select quiet_digest from "dbt_claude_batch".models').fetchall() == []


def test_state_from_a_newer_version_is_refused():
    con = _v1_database()
    con.execute('insert into "dbt_claude_batch".state_version values (99, ?)', [dt.datetime(2026, 1, 1)])
    with pytest.raises(StateError, match="^State schema dbt_claude_batch is at version 99, newer than"):
        State(con, "dbt_claude_batch", "m").ensure()
