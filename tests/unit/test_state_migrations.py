"""State schema versions: older state is upgraded in place; newer or foreign state is refused."""

from __future__ import annotations

import datetime as dt

import duckdb
import pytest

from dbt_claude_batch.state import migrations as state_module
from dbt_claude_batch.base.errors import StateError
from dbt_claude_batch.state.state import SCHEMA_VERSION, State


def _database_at(version: int):
    con = duckdb.connect()
    con.execute('create schema "dbt_claude_batch"')
    con.execute('create table "dbt_claude_batch".state_version (version integer not null, applied_at timestamp not null)')
    for v in range(1, version + 1):
        for ddl in state_module.MIGRATIONS[v]:
            con.execute(ddl.format(s='"dbt_claude_batch"'))
        con.execute('insert into "dbt_claude_batch".state_version values (?, ?)', [v, dt.datetime(2026, 1, 1)])
    return con


def _v1_database():
    con = _database_at(1)
    con.execute("""insert into "dbt_claude_batch".requests (submission_id, model_id, custom_id, key_json, input_hash,
                   request_hash, attempt, model) values ('s', 'm', 'k1', '{"id":1}', 'i', 'r', 1, 'claude-haiku-4-5')""")
    return con


def test_v1_state_is_migrated_in_place_and_keeps_its_rows():
    con = _v1_database()
    State(con, "dbt_claude_batch", "m").ensure()
    assert con.execute('select max(version) from "dbt_claude_batch".state_version').fetchone()[0] == SCHEMA_VERSION == 17
    assert con.execute('select custom_id, key_custom_id, part, parts, part_hash, first_page, last_page '
                       'from "dbt_claude_batch".requests').fetchall() == [("k1", "k1", 1, 1, None, None, None)]
    State(con, "dbt_claude_batch", "m").ensure()  # idempotent
    assert con.execute('select count(*) from "dbt_claude_batch".state_version').fetchone()[0] == SCHEMA_VERSION
    assert con.execute('select quiet_digest from "dbt_claude_batch".models').fetchall() == []


def test_state_from_a_newer_version_is_refused():
    con = _v1_database()
    con.execute('insert into "dbt_claude_batch".state_version values (99, ?)', [dt.datetime(2026, 1, 1)])
    with pytest.raises(StateError, match="^State schema dbt_claude_batch is at version 99, newer than"):
        State(con, "dbt_claude_batch", "m").ensure()


def test_v3_state_loses_the_catalog_name_so_a_copied_or_renamed_file_keeps_its_state():
    con = _database_at(3)
    s = '"dbt_claude_batch"'
    for db in ("dev", "warehouse"):  # the same file seen under two names before the upgrade
        con.execute(f"insert into {s}.models values ('{db}.main.items', '[\"id\"]', '{{}}', ?, null)",
                    [dt.datetime(2026, 1, 2 if db == "warehouse" else 1)])
        con.execute(f"insert into {s}.input_aliases values ('{db}.main.items', 'k1', 'i', 'r')")
    con.execute(f"""insert into {s}.requests (submission_id, model_id, custom_id, key_json, input_hash, request_hash,
                    attempt, model) values ('s', 'warehouse.main.items', 'k1', '{{"id":1}}', 'i', 'r', 1, 'm')""")
    con.execute(f"insert into {s}.models values ('other.items', '[\"id\"]', '{{}}', ?, null)", [dt.datetime(2026, 1, 1)])
    State(con, "dbt_claude_batch", "main.items").ensure()
    assert con.execute(f"select model_id, updated_at from {s}.models order by 1").fetchall() == [
        ("main.items", dt.datetime(2026, 1, 2)), ("other.items", dt.datetime(2026, 1, 1))]
    assert con.execute(f"select model_id from {s}.requests").fetchall() == [("main.items",)]
    assert con.execute(f"select model_id, custom_id from {s}.input_aliases").fetchall() == [("main.items", "k1")]
    assert State(con, "dbt_claude_batch", "main.items").has_state()


def test_a_foreign_table_in_the_state_schema_is_refused_with_a_clear_error():
    con = duckdb.connect()
    con.execute('create schema "dbt_claude_batch"')
    con.execute('create table "dbt_claude_batch".requests (id integer, payload varchar)')
    with pytest.raises(StateError, match=r"^Table dbt_claude_batch.requests is not dbt-claude-batch state"):
        State(con, "dbt_claude_batch", "m").ensure()


def test_a_damaged_state_table_is_refused_with_a_clear_error():
    con = _database_at(state_module.SCHEMA_VERSION)
    con.execute('alter table "dbt_claude_batch".outcomes drop column harvest_seq')
    with pytest.raises(StateError, match=r"outcomes is not dbt-claude-batch state or was damaged \(missing column"):
        State(con, "dbt_claude_batch", "m").ensure()


def test_v6_state_gains_reused_source_and_an_empty_imported_answers_table():
    con = _database_at(6)
    s = '"dbt_claude_batch"'
    con.execute(f"""insert into {s}.outcomes (batch_id, custom_id, model_id, result_type, harvested_at)
                    values ('b', 'k1', 'm', 'succeeded', ?)""", [dt.datetime(2026, 1, 1)])
    State(con, "dbt_claude_batch", "m").ensure()
    assert con.execute(f"select custom_id, reused_source from {s}.outcomes").fetchall() == [("k1", None)]
    assert con.execute(f"select count(*) from {s}.imported_answers").fetchone()[0] == 0
    for ddl in state_module.MIGRATIONS[8]:  # idempotent
        con.execute(ddl.format(s=s))


def test_v6_state_gains_the_upload_tables_and_keeps_its_rows():
    con = _database_at(6)
    s = '"dbt_claude_batch"'
    con.execute(f"""insert into {s}.requests (submission_id, model_id, custom_id, key_json, input_hash, request_hash,
                    attempt, model) values ('s', 'm', 'k1', '{{"id":1}}', 'i', 'r', 1, 'm')""")
    State(con, "dbt_claude_batch", "m").ensure()
    State(con, "dbt_claude_batch", "m").ensure()  # idempotent
    assert con.execute(f"select count(*) from {s}.requests").fetchone()[0] == 1
    assert con.execute(f"select count(*) from {s}.uploaded_files").fetchone()[0] == 0
    assert con.execute(f"select count(*) from {s}.upload_uses").fetchone()[0] == 0


def test_v13_marks_every_earlier_submission_as_the_rows_own_and_adds_the_comparison_tables():
    con = _database_at(12)
    s = '"dbt_claude_batch"'
    con.execute(f"insert into {s}.submissions (submission_id, model_id, status, n_requests, n_bytes, intent_at) "
                "values ('s1', 'main.items', 'creating', 3, 10, ?)", [dt.datetime(2026, 1, 1)])
    State(con, "dbt_claude_batch", "main.items").ensure()
    assert con.execute(f"select submission_id, purpose from {s}.submissions").fetchall() == [("s1", "rows")]
    assert con.execute(f"select count(*) from {s}.comparisons").fetchone()[0] == 0
    assert con.execute(f"select count(*) from {s}.compare_requests").fetchone()[0] == 0
    State(con, "dbt_claude_batch", "main.items").ensure()  # idempotent


def test_v14_has_models_with_keys_in_parts_rebuild_their_answers_and_leaves_the_others():
    con = _database_at(13)
    s = '"dbt_claude_batch"'
    for model in ("main.docs", "main.tickets"):
        con.execute(f"insert into {s}.models (model_id, key_columns, key_types, updated_at, answers_ready) "
                    "values (?, '[\"id\"]', '{}', ?, true)", [model, dt.datetime(2026, 1, 1)])
    con.execute(f"""insert into {s}.answers (model_id, custom_id, attempt, key_json, parts) values
                   ('main.docs', '1', 2, '{{"id":1}}', 3), ('main.docs', '2', 1, '{{"id":2}}', 1),
                   ('main.tickets', '1', 1, '{{"id":1}}', 1)""")
    State(con, "dbt_claude_batch", "main.docs").ensure()
    assert con.execute(f"select model_id, answers_ready from {s}.models order by 1").fetchall() == [
        ("main.docs", False), ("main.tickets", True)]
    assert con.execute(f"select count(*) from {s}.answers where paid is null").fetchone()[0] == 3
    State(con, "dbt_claude_batch", "main.docs").ensure()  # idempotent
