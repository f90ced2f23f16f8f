"""Results read from the answers table (state v5): kept up to date as batches are harvested, and filled
from the outcomes when state written before it is upgraded."""

from __future__ import annotations

import duckdb

from dbt_claude_batch.migrations import SCHEMA_VERSION
from dbt_harness import create_calls, expected_answer, items

FAST = {"wait_seconds": 60, "poll_interval_seconds": 0.05}
STATE = '"dbt_claude_batch"'


def _as_if_written_by_v4(project) -> None:
    """Take the database back to state v4: no answers table, no answers_ready or answers_at column."""
    con = duckdb.connect(str(project.db_path))
    try:
        con.execute(f"drop table {STATE}.answers")
        con.execute(f"alter table {STATE}.models drop column answers_ready")
        con.execute(f"alter table {STATE}.batches drop column answers_at")
        con.execute(f"alter table {STATE}.models drop column results_gap")  # v6
        con.execute(f"delete from {STATE}.state_version where version >= 5")
    finally:
        con.close()


def test_state_from_before_the_answers_table_is_upgraded_and_loses_no_answer(project, emulator):
    rows = items(12)
    project.load_table("items", rows)
    project.configure(replace=False, **FAST)
    project.run()
    _as_if_written_by_v4(project)
    changed = [dict(r, body="changed text") if r["id"] == 5 else r for r in rows]
    project.load_table("items", changed)

    project.run()

    results = project.results()
    assert {k: v["output_text"] for k, v in results.items()} == {
        r["id"]: expected_answer(r["id"], r["body"]) for r in changed}
    assert results[5]["attempt"] == 2 and create_calls(emulator) == 2  # only the changed row was bought again
    assert project.query(f"select count(*), count(distinct custom_id) from {STATE}.answers") == [(12, 12)]
    assert project.query(f"select max(version) from {STATE}.state_version") == [(SCHEMA_VERSION,)]
    # A full refresh reads every answer back from the table, with nothing bought.
    project.dbt("run", "-s", project.model, "--full-refresh")
    assert {k: v["output_text"] for k, v in project.results().items()} == {
        k: v["output_text"] for k, v in results.items()}
    assert create_calls(emulator) == 2


def _answered_then_an_edit_fails(project, emulator) -> list[dict]:
    """Four rows answered; then row 2 is edited and its new request fails (invalid request). Returns the rows."""
    rows = items(4)
    project.load_table("items", rows)
    project.configure(replace=False, max_failure_ratio=1, **FAST)
    project.run()
    emulator.set_scenarios([{"name": "result_outcome", "custom_ids": ["2"], "outcome": "invalid_request_error"}])
    project.load_table("items", [dict(r, body="edited") if r["id"] == 2 else r for r in rows])
    project.run()
    return rows


def test_a_newer_attempt_that_fails_keeps_the_earlier_answer_and_clears_the_flag(project, emulator):
    rows = _answered_then_an_edit_fails(project, emulator)

    row = project.results()[2]
    assert row["output_text"] == expected_answer(2, rows[1]["body"]) and row["attempt"] == 1
    assert row["newer_request_in_flight"] is False
    assert project.failures()[2]["error_type"] == "invalid_request_error"


def test_a_reverted_edit_after_a_failed_newer_attempt_is_planned_again_and_clears_the_failure(project, emulator):
    """Planning skips only settled rows (newest attempt answered, same inputs); this row is not one."""
    rows = _answered_then_an_edit_fails(project, emulator)
    assert 2 in project.failures()
    emulator.clear_scenarios()
    creates = create_calls(emulator)

    project.load_table("items", rows)  # the edit is reverted
    project.run()

    assert project.failures() == {}
    row = project.results()[2]
    assert row["output_text"] == expected_answer(2, rows[1]["body"]) and row["attempt"] == 3
    assert create_calls(emulator) == creates  # answered from state, not bought again


def test_answers_left_behind_by_a_run_that_stopped_after_harvesting_are_caught_up(project, emulator):
    """Harvest commits each batch; the answers of a round follow in their own transaction. A run that
    stopped in between (simulated: the batches' answers_at cleared, their answers gone) is caught up."""
    rows = items(6)
    project.load_table("items", rows)
    project.configure(replace=False, **FAST)
    project.run()
    con = duckdb.connect(str(project.db_path))
    try:
        con.execute(f"update {STATE}.batches set answers_at = null")
        con.execute(f"delete from {STATE}.answers")
    finally:
        con.close()

    project.dbt("run", "-s", project.model, "--full-refresh")  # results are read from the answers table

    assert {k: v["output_text"] for k, v in project.results().items()} == {
        r["id"]: expected_answer(r["id"], r["body"]) for r in rows}
    assert project.query(f"select count(*) from {STATE}.batches where answers_at is null") == [(0,)]
    assert create_calls(emulator) == 1
