"""Answers and failures stay true to the table: rows deleted from the results table come back at no
cost, the failures table has one row per key, and a user key that looks like a marker is a user key."""

from __future__ import annotations

import duckdb
import yaml

from dbt_harness import create_calls, expected_answer, items

FAST = {"wait_seconds": 60, "poll_interval_seconds": 0.05}


def _tests_yaml(project, tests: list) -> None:
    project.write(f"models/{project.model}.yml", yaml.safe_dump(
        {"version": 2, "models": [{"name": project.model, "data_tests": tests}]}, sort_keys=False))


def _execute(project, sql: str) -> None:
    con = duckdb.connect(str(project.db_path))
    try:
        con.execute(sql)
    finally:
        con.close()


def test_rows_deleted_from_the_results_table_fail_no_key_dropped_and_come_back_for_free(project, emulator):
    project.load_table("items", items(6))
    project.configure(replace=False, **FAST)
    _tests_yaml(project, ["dbt_claude_batch.no_key_dropped"])
    project.run()
    project.run()  # nothing to do: the next run takes the quiet path (source digest unchanged)
    bill = emulator.ledger(requests=False)["bill"]
    assert create_calls(emulator) == 1

    # Not the newest answer: a table's newest `harvest_seq` is its watermark, which a delete would move.
    deleted = sorted(r[0] for r in project.query("select id from main.items_batch order by harvest_seq limit 2"))
    _execute(project, f"delete from main.items_batch where id in {tuple(deleted)}")

    red = project.dbt("test", expect_ok=False)
    assert "Failure in test dbt_claude_batch_no_key_dropped_items_batch" in red.stdout
    assert "Got 2 results" in red.stdout

    out = project.run().stdout

    assert "unchanged since the last run" in out  # the quiet path restores too
    assert "restoring 2 result row(s) missing from main.items_batch" in out
    results = project.results()
    assert sorted(results) == [1, 2, 3, 4, 5, 6]
    for i in deleted:
        assert results[i]["output_text"] == expected_answer(i, f"body number {i} with some text")
    assert emulator.ledger(requests=False)["bill"] == bill and create_calls(emulator) == 1
    project.dbt("test")
