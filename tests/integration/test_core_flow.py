"""The main job across dbt runs: submit, harvest, join by custom_id, do nothing when nothing changed."""

from __future__ import annotations

import re

from dbt_harness import create_calls, created_batches, expected_answer, items, marker_cost, row_requests

FAST = {"wait_seconds": 60, "poll_interval_seconds": 0.05}


def test_results_joined_by_custom_id_from_shuffled_file(project, emulator):
    rows = items(150)
    project.load_table("items", rows)
    project.configure(replace=False, **FAST)

    project.run()

    results = project.results()
    assert len(results) == 150
    for row in rows:
        got = results[row["id"]]
        # The emulator's answer is a digest of the exact prompt: a row joined to another row's result fails here.
        assert got["output_text"] == expected_answer(row["id"], row["body"])
        assert got["custom_id"] == str(row["id"])
        assert got["attempt"] == 1
        assert got["stop_reason"] == "end_turn"
        assert got["answered_model"] == "claude-haiku-4-5"
        assert got["input_tokens"] > 0 and got["output_tokens"] > 0
    batches = created_batches(emulator)
    assert len(batches) == 1 and batches[0]["request_count"] == 150
    assert project.query("select count(*) from main.items_batch__failures") == [(0,)]
    assert project.query(
        "select n_submitted, n_succeeded, result_lines, reconciled from main.items_batch__batches"
    ) == [(150, 150, 150, True)]


def test_cost_matches_emulator_bill(project, emulator):
    project.load_table("items", items(40))
    project.configure(replace=False, **FAST)
    project.run()
    ours = project.query("select sum(cost_usd) from main.items_batch")[0][0]
    billed = emulator.ledger(requests=False)["bill"]["total_usd"]
    markers = marker_cost(project)
    assert ours > 0 and 0 < markers < ours / 100  # the proof of ownership costs a fraction of a row
    assert abs(ours + markers - billed) < 1e-9


def test_nothing_to_do_run_makes_no_create_call(project, emulator):
    project.load_table("items", items(30))
    project.configure(replace=False, **FAST)
    project.run()
    assert create_calls(emulator) == 1
    calls_before = emulator.ledger(requests=False)["calls"]

    out = project.run().stdout

    # Nothing in flight and nothing changed: not even a poll reaches the API.
    assert emulator.ledger(requests=False)["calls"] == calls_before
    assert "nothing to submit" in out
    assert len(project.results()) == 30


def test_changed_row_is_resubmitted_alone(project, emulator):
    rows = items(20)
    project.load_table("items", rows)
    project.configure(replace=False, **FAST)
    project.run()

    rows[4]["body"] = "a corrected body"
    project.load_table("items", rows)
    project.run()

    batches = created_batches(emulator)
    assert [b["request_count"] for b in batches] == [20, 1] or [b["request_count"] for b in batches] == [1, 20]
    second = [r for r in row_requests(emulator) if r["batch_id"] != batches[-1]["id"]] or []
    resubmitted = {r["custom_id"] for r in row_requests(emulator)
                   if r["batch_id"] == next(b["id"] for b in batches if b["request_count"] == 1)}
    assert resubmitted == {"5"}
    results = project.results()
    assert results[5]["output_text"] == expected_answer(5, "a corrected body")
    assert results[5]["attempt"] == 2
    assert results[4]["attempt"] == 1
    assert second is not None


def test_new_rows_only_are_submitted(project, emulator):
    project.load_table("items", items(10))
    project.configure(replace=False, **FAST)
    project.run()
    project.load_table("items", items(10) + items(5, start=11))
    project.run()
    counts = sorted(b["request_count"] for b in created_batches(emulator))
    assert counts == [5, 10]
    assert len(project.results()) == 15


def test_submit_and_return_then_next_run_collects(project, emulator):
    emulator.configure(processing_delay=3600)
    project.load_table("items", items(12))
    project.configure(replace=False, wait_seconds=0)

    project.run()
    assert project.results() == {}
    assert project.query("select processing_status, n_processing from main.items_batch__batches") == [("in_progress", 12)]

    project.run()  # still processing: no new create, nothing harvested
    assert create_calls(emulator) == 1 and project.results() == {}

    emulator.advance_clock(3601)
    project.run()
    assert create_calls(emulator) == 1
    results = project.results()
    assert len(results) == 12
    assert results[3]["output_text"] == expected_answer(3, "body number 3 with some text")


def test_row_text_is_data_not_template(project, emulator):
    body = "Hello {{ customer_name }} {% if admin %}secret{% endif %} {# note #}"
    project.load_table("items", [{"id": 1, "body": body}])
    project.configure(replace=False, **FAST)
    project.run()
    assert project.results()[1]["output_text"] == expected_answer(1, body)


def test_no_leaked_dbt_tmp_tables(project, emulator):
    project.load_table("items", items(5))
    project.configure(replace=False, **FAST)
    for n in (5, 7, 9):
        project.load_table("items", items(n))
        project.run()
    leaked = project.query("select table_name from information_schema.tables where table_name like '%dbt_tmp%'")
    assert leaked == []
    assert len(project.results()) == 9


def test_leaked_tmp_tables_are_dropped_even_without_the_post_hook(project, emulator):
    project.post_hook = False
    project.load_table("items", items(3))
    project.configure(replace=False, **FAST)
    project.run()
    project.load_table("items", items(4))
    project.run()
    leaked = project.query("select table_name from information_schema.tables where table_name like '%dbt_tmp%'")
    assert len(leaked) == 1  # the last run's own leftover (dbt-duckdb creates it after the model returns)
    project.run()
    assert project.query(
        "select table_name from information_schema.tables where table_name like '%dbt_tmp%'"
    ) != leaked


def test_full_refresh_keeps_results_without_buying_again(project, emulator):
    project.load_table("items", items(8))
    project.configure(replace=False, **FAST)
    project.run()
    project.dbt("run", "-s", "items_batch", "--full-refresh")
    assert create_calls(emulator) == 1
    assert len(project.results()) == 8


def test_batches_split_by_count_and_bytes(project, emulator):
    project.load_table("items", items(70))
    project.configure(replace=False, max_requests_per_batch=30, **FAST)
    project.run()
    # The limit counts API requests: each batch also carries its marker request.
    assert sorted(b["request_count"] for b in created_batches(emulator)) == [12, 29, 29]
    assert all(b["marker"] for b in created_batches(emulator))

    project.load_table("items", items(70) + items(20, start=71, prefix="x" * 400))
    project.configure(replace=False, max_batch_bytes=4000)
    project.run()
    sizes = [b["request_count"] for b in created_batches(emulator)][3:]
    assert sum(sizes) == 20 and len(sizes) >= 3 and max(sizes) < 10
    assert len(project.results()) == 90


def test_progress_is_logged_to_dbt_log(project, emulator):
    project.load_table("items", items(3))
    project.configure(replace=False, **FAST)
    project.run()
    log = (project.root / "logs" / "dbt.log").read_text()
    assert re.search(r"batch msgbatch_\w+ ended: 0 processing, 3 succeeded", log)


def test_reset_batch_state_starts_over_but_refuses_with_batches_in_flight(project, emulator):
    emulator.configure(processing_delay=3600)
    project.load_table("items", items(4))
    project.configure(replace=False, wait_seconds=0)
    project.run()
    out = project.dbt("run-operation", "dbt_claude_batch.reset_batch_state", "--args", "{model: items_batch}",
                      expect_ok=False).stdout
    assert "has 1 batch(es) in flight: cancel them first" in out

    emulator.advance_clock(3601)
    emulator.configure(processing_delay=0)
    project.configure(replace=False, **FAST)
    project.run()
    assert len(project.results()) == 4
    out = project.dbt("run-operation", "dbt_claude_batch.reset_batch_state", "--args", "{model: items_btach}",
                      expect_ok=False).stdout
    assert "No state for model main.items_btach in dbt_claude_batch: check the model name" in out
    assert "main.items_batch" in out  # the models that do have state are listed
    project.dbt("run-operation", "dbt_claude_batch.reset_batch_state", "--args", "{model: items_batch}")
    assert project.query("select count(*) from dbt_claude_batch.requests") == [(0,)]
    project.run()
    assert create_calls(emulator) == 2


def test_batches_view_names_models(project, emulator):
    rows = [{"id": 1, "body": "a", "model": "claude-sonnet-4-6"}, {"id": 2, "body": "b", "model": None}]
    project.load_table("items", rows, types={"id": "BIGINT", "body": "VARCHAR", "model": "VARCHAR"})
    project.configure(replace=False, model_column="model", **FAST)
    project.run()
    (row,) = project.query("select dbt_model, claude_models, n_submitted from main.items_batch__batches")
    assert row[0] == "main.items_batch"  # no catalog name: a copied or renamed file keeps its state
    assert row[1] == ["claude-haiku-4-5", "claude-sonnet-4-6"] and row[2] == 2


def test_two_batch_models_in_parallel_threads_share_the_state_schema(project, emulator):
    import yaml

    project.load_table("items", items(20))
    project.write("models/items_batch_b.py", (project.root / "models/items_batch.py").read_text())
    project.configure(replace=False, **FAST)
    project.write("models/items_batch_b.yml", yaml.safe_dump({"version": 2, "models": [
        {"name": "items_batch_b", "config": {"meta": {"claude_batch": project.written_settings()}}}]}))
    profiles = yaml.safe_load((project.root / "profiles.yml").read_text())
    profiles["test_project"]["outputs"]["dev"]["threads"] = 2
    project.write("profiles.yml", yaml.safe_dump(profiles))

    project.dbt("run")
    project.dbt("run")

    assert create_calls(emulator) == 2
    for table in ("items_batch", "items_batch_b"):
        rows = project.query(f"select id, output_text from main.{table}")
        assert len(rows) == 20
        assert all(text == expected_answer(i, f"body number {i} with some text") for i, text in rows)


def test_unchanged_source_skips_planning_until_something_changes(project, emulator):
    emulator.add_scenario({"name": "result_outcome", "custom_ids": ["2"], "outcome": "api_error", "times": 10})
    rows = items(6)
    project.load_table("items", rows)
    project.configure(replace=False, max_attempts=1, **FAST)
    project.run()  # submits; key 2 fails and has used its one attempt
    assert "unchanged since the last run" not in project.run().stdout  # plans, finds nothing: remembers that
    calls = emulator.ledger(requests=False)["calls"]

    out = project.run().stdout
    assert "unchanged since the last run: nothing to submit" in out
    assert emulator.ledger(requests=False)["calls"] == calls

    project.configure(replace=False, max_attempts=2)  # changes no input hash, but changes what is retried
    out = project.run().stdout
    assert "unchanged since the last run" not in out
    assert [b["request_count"] for b in created_batches(emulator)] == [6, 1]

    rows[0]["body"] = "changed"
    project.load_table("items", rows)
    project.run()
    assert [b["request_count"] for b in created_batches(emulator)] == [6, 1, 1]
    assert project.results()[1]["output_text"] == expected_answer(1, "changed")
