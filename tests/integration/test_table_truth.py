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


LOOKALIKES = ["dbt_claude_batch-proof-abc", "dbt_claude_batch-proof-err"]


def test_a_user_key_that_looks_like_a_marker_is_submitted_harvested_counted_and_reported(project, emulator):
    from dbt_claude_batch import inspect

    rows = [{"id": k, "body": f"text of {k}"} for k in ["a", "b", *LOOKALIKES]]
    project.load_table("items", rows)
    project.configure(replace=False, max_failure_ratio=1, **FAST)
    emulator.set_scenarios([{"name": "result_outcome", "custom_ids": [LOOKALIKES[1]],
                             "outcome": "invalid_request_error"}])

    out = project.run().stdout

    sent = [r["custom_id"] for r in emulator.ledger()["requests"]]
    markers = [r[0] for r in project.query("select marker_id from dbt_claude_batch.submissions")]
    assert sorted(sent) == sorted(["a", "b", *LOOKALIKES, *markers]) and len(markers) == 1
    assert "submitted 4, harvested 4 (3 succeeded; failed: 1 invalid_request)" in out
    results = project.results()
    assert sorted(results) == ["a", "b", LOOKALIKES[0]]
    assert results[LOOKALIKES[0]]["output_text"] == expected_answer(LOOKALIKES[0], f"text of {LOOKALIKES[0]}")
    assert list(project.failures()) == [LOOKALIKES[1]]
    assert project.query("select n_submitted, n_harvested, n_failed from dbt_claude_batch.all_runs") == [(4, 4, 1)]
    assert project.query("select sum(requests_billed) from dbt_claude_batch.all_spend") == [(3,)]  # errors: no usage
    con = duckdb.connect(str(project.db_path), read_only=True)
    try:
        doc = inspect.status_document(con, "dbt_claude_batch")
        mix = inspect.outcome_mix(con, "dbt_claude_batch")
        top = inspect.top_failure_messages(con, "dbt_claude_batch")
    finally:
        con.close()
    assert doc["models"][0]["spend"]["billed_requests"] == 4
    assert sorted((r["category"], r["n"]) for r in mix["rows"]) == [("errored", 1), ("succeeded", 3)]
    assert [t["n"] for t in top] == [1]
