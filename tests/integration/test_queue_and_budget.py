"""The account's queue and spend: submit only what fits, count spend committed in flight."""

from __future__ import annotations

from dbt_harness import create_calls, created_batches, items

FAST = {"wait_seconds": 60, "poll_interval_seconds": 0.05}


def test_max_requests_in_flight_submits_what_fits_and_leaves_the_rest_pending(project, emulator):
    emulator.configure(processing_delay=3600)
    project.load_table("items", items(30))
    # batches of 9 rows + the marker (9, 9, 9, 3): what fits under 25 requests in flight goes
    project.configure(replace=False, max_requests_per_batch=10, max_requests_in_flight=25, wait_seconds=0)

    out = project.run().stdout  # green

    assert "9 requests wait for room in the queue (max_requests_in_flight 25)" in out
    assert sorted(b["request_count"] for b in created_batches(emulator)) == [3, 9, 9]
    project.run()  # still full: nothing more is sent, and the waiting rows are not forgotten
    assert create_calls(emulator) == 3

    emulator.advance_clock(3601)
    emulator.configure(processing_delay=0)
    project.configure(replace=False, **FAST)
    project.run()
    project.run()
    assert sorted(b["request_count"] for b in created_batches(emulator)) == [3, 9, 9, 9]
    assert len(project.results()) == 30
    # A queue limit under the batch size cuts batches to fit it: rows never wait for room that cannot come.
    project.load_table("items", items(42))
    project.configure(replace=False, max_requests_per_batch=100_000, max_requests_in_flight=6, wait_seconds=0)
    out = project.run().stdout
    assert [b["request_count"] for b in created_batches(emulator)][4:] == [5]
    assert "7 requests wait for room in the queue (max_requests_in_flight 6)" in out


def test_a_create_refused_because_the_queue_is_full_leaves_the_rows_pending(project, emulator):
    emulator.configure(processing_delay=3600)
    emulator.add_scenario({"name": "queue_limit", "max_requests": 15, "retry_after": 60})
    project.load_table("items", items(20))
    project.configure(replace=False, max_requests_per_batch=10, wait_seconds=0)

    out = project.run().stdout  # green, and no minute-long retry-after waits

    assert "the workspace's processing queue is full" in out and "11 requests wait" in out
    assert [b["request_count"] for b in created_batches(emulator)] == [9]
    assert project.query("select status from dbt_claude_batch.submissions where status in ('creating', 'in_doubt')") == []

    emulator.advance_clock(3601)
    emulator.clear_scenarios()
    emulator.configure(processing_delay=0)
    project.configure(replace=False, **FAST)
    project.run()
    project.run()
    assert len(project.results()) == 20


def test_the_budget_counts_spend_committed_in_flight(project, emulator):
    emulator.configure(processing_delay=3600)
    project.load_table("items", items(10))
    project.configure(replace=False, wait_seconds=0)
    project.run()
    committed = project.query("select sum(est_cost_usd) from dbt_claude_batch.submissions")[0][0]
    assert committed > 0

    project.load_table("items", items(20))  # ten more rows, costing about as much again
    project.configure(replace=False, max_cost_usd=round(committed * 1.5, 6))
    out = project.run(expect_ok=False).stdout
    assert "committed in flight for this model, is over the limit max_cost_usd" in out
    assert create_calls(emulator) == 1

    project.configure(replace=False, max_cost_usd=None, max_cost_usd_all_models=round(committed * 1.5, 6))
    out = project.run(expect_ok=False).stdout
    assert "committed in flight for every batch model of this state, is over the limit max_cost_usd_all_models" in out

    emulator.advance_clock(3601)  # the first batch ends: nothing is committed any more
    emulator.configure(processing_delay=0)
    project.configure(replace=False, **FAST)
    project.run()
    assert create_calls(emulator) == 2
