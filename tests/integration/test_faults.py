"""Crashes, lost answers and API faults: nothing paid twice, nothing lost, the next run continues."""

from __future__ import annotations

from dbt_harness import create_calls, created_batches, expected_answer, items, row_requests

FAST = {"wait_seconds": 60, "poll_interval_seconds": 0.05}


def _requests_of(emulator, batch_id):
    return {r["custom_id"] for r in row_requests(emulator) if r["batch_id"] == batch_id}


def _assert_all_answered(project, rows, attempt=None):
    results = project.results()
    assert len(results) == len(rows)
    for row in rows:
        assert results[row["id"]]["output_text"] == expected_answer(row["id"], row["body"])
        if attempt is not None:
            assert results[row["id"]]["attempt"] == attempt


def test_kill_9_right_after_create_keeps_the_batch_id(project, emulator):
    emulator.configure(processing_delay=3600)
    rows = items(25)
    project.load_table("items", rows)
    project.configure(replace=False, wait_seconds=300, poll_interval_seconds=0.05)

    project.run_and_kill(line="submitted batch")

    (batch,) = created_batches(emulator)
    assert project.query("select status, batch_id from dbt_claude_batch.submissions") == [("submitted", batch["id"])]

    emulator.advance_clock(3601)
    project.configure(replace=False, wait_seconds=60)
    project.run()
    assert create_calls(emulator) == 1
    _assert_all_answered(project, rows, attempt=1)


def test_kill_9_as_soon_as_the_server_has_the_batch(project, emulator):
    """Whether dbt died before or after recording the id, the next run submits nothing twice."""
    emulator.configure(processing_delay=3600)
    rows = items(40)
    project.load_table("items", rows)
    project.configure(replace=False, wait_seconds=300, poll_interval_seconds=0.05)

    project.run_and_kill(when=lambda: bool(created_batches(emulator)))

    emulator.advance_clock(3601)
    project.configure(replace=False, wait_seconds=60)
    project.run()
    assert create_calls(emulator) == 1
    assert len(created_batches(emulator)) == 1
    _assert_all_answered(project, rows, attempt=1)


def test_lost_create_response_is_settled_by_listing(project, emulator):
    emulator.add_scenario({"name": "lose_create_response", "times": 1})
    rows = items(20)
    project.load_table("items", rows)
    project.configure(replace=False, **FAST)

    out = project.run().stdout

    calls = emulator.ledger(requests=False)["calls"]["POST /v1/messages/batches"]
    assert calls == {"lost": 1}
    assert len(created_batches(emulator)) == 1
    assert "adopted batch" in out
    _assert_all_answered(project, rows)
    project.run()
    assert create_calls(emulator) == 1


def test_create_answered_500_stays_in_doubt_until_grace_then_resubmits(project, emulator):
    emulator.add_scenario({"name": "http_error", "status": 500, "route": "create", "times": 1})
    rows = items(6)
    project.load_table("items", rows)
    project.configure(replace=False, **FAST)

    out = project.run().stdout
    assert "in doubt" in out
    assert created_batches(emulator) == []
    assert project.query("select status from dbt_claude_batch.submissions") == [("in_doubt",)]

    project.run()  # within the grace period: still nothing submitted
    assert created_batches(emulator) == []

    project.configure(replace=False, in_doubt_grace_seconds=0)
    project.run()
    assert len(created_batches(emulator)) == 1
    assert sorted(s for (s,) in project.query("select status from dbt_claude_batch.submissions")) == [
        "abandoned", "submitted"]
    # The abandoned create made no batch, so it does not count as an attempt.
    _assert_all_answered(project, rows, attempt=1)


def test_create_refused_with_429_is_retried_after_retry_after(project, emulator):
    emulator.add_scenario({"name": "http_error", "status": 429, "route": "create", "times": 2, "retry_after": 0})
    rows = items(5)
    project.load_table("items", rows)
    project.configure(replace=False, **FAST)
    project.run()
    assert emulator.ledger(requests=False)["calls"]["POST /v1/messages/batches"] == {"429": 2, "200": 1}
    assert len(created_batches(emulator)) == 1
    _assert_all_answered(project, rows)


def test_sdk_retries_survive_transient_faults_on_poll_and_download(project, emulator):
    emulator.set_scenarios([
        {"name": "http_error", "status": 500, "route": "retrieve", "times": 2, "retry_after": 0.01},
        {"name": "http_error", "status": 529, "route": "results", "times": 1, "retry_after": 0.01},
    ])
    rows = items(5)
    project.load_table("items", rows)
    project.configure(replace=False, **FAST)
    project.run()
    calls = emulator.ledger(requests=False)["calls"]
    assert calls["GET /v1/messages/batches/{message_batch_id}"]["500"] == 2
    assert calls["GET /v1/messages/batches/{message_batch_id}/results"]["529"] == 1
    _assert_all_answered(project, rows)

    # Past the SDK's retries: the run stays green, says what it will do, and still submits new rows.
    emulator.configure(processing_delay=3600)
    project.load_table("items", items(7))
    project.configure(replace=False, wait_seconds=0)
    project.run()  # rows 6 and 7 in flight
    emulator.client().messages.batches.retrieve(created_batches(emulator)[-1]["id"])  # a fresh batch's first view
    emulator.advance_clock(3601)
    emulator.set_scenarios([{"name": "http_error", "status": 500, "route": "retrieve", "times": 30, "retry_after": 0.01}])
    project.load_table("items", items(8))
    out = project.run().stdout
    assert "retrieve answered HTTP 500; the next run polls it again" in out, out
    assert create_calls(emulator) == 3  # row 8 went out all the same
    emulator.set_scenarios([{"name": "http_error", "status": 500, "route": "results", "times": 30, "retry_after": 0.01}])
    out = project.run().stdout
    assert "results download answered HTTP 500; the next run downloads it again" in out, out
    emulator.clear_scenarios()
    emulator.advance_clock(3601)  # row 8's batch
    project.configure(replace=False, **FAST)
    project.run()
    _assert_all_answered(project, items(8))
    assert create_calls(emulator) == 3


def test_cut_download_is_fetched_again(project, emulator):
    emulator.add_scenario({"name": "cut_download", "after_bytes": 700, "times": 1})
    rows = items(30)
    project.load_table("items", rows)
    project.configure(replace=False, **FAST)
    out = project.run().stdout
    assert "broke off" in out or "mid-line" in out
    calls = emulator.ledger(requests=False)["calls"]["GET /v1/messages/batches/{message_batch_id}/results"]
    assert calls.get("cut") == 1 and calls.get("200") == 1
    _assert_all_answered(project, rows)
    assert project.query("select reconciled from main.items_batch__batches") == [(True,)]


def test_a_cut_download_among_several_ended_batches_holds_back_only_its_own_batch(project, emulator):
    """Downloads run one batch ahead of loading: the broken one is fetched again, the others land."""
    emulator.configure(processing_delay=3600)
    rows = items(27)
    project.load_table("items", rows)
    project.configure(replace=False, wait_seconds=0, max_requests_per_batch=10)
    project.run()
    batches = [b["id"] for b in created_batches(emulator)]
    assert len(batches) == 3

    emulator.advance_clock(3601)
    emulator.add_scenario({"name": "cut_download", "after_bytes": 700, "times": 1})
    project.configure(replace=False, **FAST, max_requests_per_batch=10)
    out = project.run().stdout
    assert f"results download of {batches[0]} broke off" in out
    calls = emulator.ledger(requests=False)["calls"]["GET /v1/messages/batches/{message_batch_id}/results"]
    assert calls.get("cut") == 1 and calls.get("200") == 3
    harvested = project.query("select batch_id from dbt_claude_batch.batches where kind = 'batch' "
                              "order by harvested_at")
    assert [b for (b,) in harvested] == [batches[1], batches[2], batches[0]]
    assert project.query("select bool_and(reconciled) from dbt_claude_batch.batches where kind = 'batch'") == [(True,)]
    assert create_calls(emulator) == 3
    _assert_all_answered(project, rows, attempt=1)


def test_missing_results_become_failures_and_are_resubmitted_alone(project, emulator):
    emulator.add_scenario({"name": "missing_results", "custom_ids": ["3", "7"], "times": 1})
    rows = items(12)
    project.load_table("items", rows)
    project.configure(replace=False, **FAST)

    project.run()
    failures = project.failures()
    assert set(failures) == {3, 7}
    assert all(f["kind"] == "missing" and f["retried_automatically"] for f in failures.values())
    assert project.query("select reconciled, result_lines from main.items_batch__batches") == [(False, 10)]
    assert len(project.results()) == 10

    project.run()
    second = created_batches(emulator)[-1]["id"]
    assert _requests_of(emulator, second) == {"3", "7"}
    assert project.failures() == {}
    _assert_all_answered(project, rows)
    assert project.results()[3]["attempt"] == 2 and project.results()[4]["attempt"] == 1


def test_archived_results_turn_into_resubmissions(project, emulator):
    emulator.configure(processing_delay=3600)
    rows = items(10)
    project.load_table("items", rows)
    project.configure(replace=False, wait_seconds=0)
    project.run()
    (first,) = created_batches(emulator)

    emulator.advance_clock(30 * 24 * 3600)
    project.run()

    assert project.query(
        "select result_type, error_type, count(*) from dbt_claude_batch.outcomes where batch_id = ? group by all",
        [first["id"]],
    ) == [("missing", "results_archived", 10)]
    assert len(created_batches(emulator)) == 2
    assert _requests_of(emulator, created_batches(emulator)[-1]["id"]) == {str(r["id"]) for r in rows}

    emulator.advance_clock(3601)
    project.configure(replace=False, **FAST)  # the first look at a fresh batch always finds it in progress
    project.run()
    _assert_all_answered(project, rows, attempt=2)


def test_expired_batch_is_resubmitted(project, emulator):
    emulator.add_scenario({"name": "never_end"})
    rows = items(8)
    project.load_table("items", rows)
    project.configure(replace=False, wait_seconds=0)
    project.run()

    emulator.clear_scenarios()
    emulator.advance_clock(25 * 3600)
    project.configure(replace=False, **FAST)
    project.run()

    first, second = created_batches(emulator)[-1], created_batches(emulator)[0]
    assert project.query(
        "select batch_id, result_type, count(*) from dbt_claude_batch.outcomes "
            "where custom_id not like 'dbt_claude_batch-proof-%' group by all order by 2"
    ) == [(first["id"], "expired", 8), (second["id"], "succeeded", 8)] or project.query(
        "select batch_id, result_type, count(*) from dbt_claude_batch.outcomes "
            "where custom_id not like 'dbt_claude_batch-proof-%' group by all order by 2"
    ) == [(second["id"], "expired", 8), (first["id"], "succeeded", 8)]
    assert [b["request_count"] for b in created_batches(emulator)] == [8, 8]
    _assert_all_answered(project, rows, attempt=2)


def test_server_error_retried_until_the_attempts_limit(project, emulator):
    emulator.add_scenario({"name": "result_outcome", "custom_ids": ["2"], "outcome": "api_error", "times": 10})
    project.load_table("items", items(4))
    project.configure(replace=False, max_attempts=2, **FAST)

    project.run()
    f = project.failures()[2]
    assert (f["kind"], f["error_type"], f["retried_automatically"]) == ("errored", "api_error", True)
    assert "next dbt run" in f["next_action"]

    project.run()
    f = project.failures()[2]
    assert f["attempt"] == 2 and not f["retried_automatically"]
    assert "gave up after 2 attempts" in f["next_action"]

    project.run()
    assert create_calls(emulator) == 2
    assert len(project.results()) == 3


def test_retry_success_leaves_failures(project, emulator):
    emulator.add_scenario({"name": "result_outcome", "custom_ids": ["1"], "outcome": "overloaded_error", "times": 1})
    rows = items(3)
    project.load_table("items", rows)
    project.configure(replace=False, **FAST)
    project.run()
    assert set(project.failures()) == {1}
    project.run()
    assert project.failures() == {}
    _assert_all_answered(project, rows)
    assert project.results()[1]["attempt"] == 2


def test_invalid_request_waits_for_a_fix_then_only_that_row_is_resubmitted(project, emulator):
    rows = items(5)
    rows[2]["body"] = "long " * 180_000  # ~225k tokens by the emulator's estimate: over the context limit
    project.load_table("items", rows)
    project.configure(replace=False, **FAST)

    project.run()
    f = project.failures()[3]
    assert (f["kind"], f["error_type"], f["retried_automatically"]) == ("errored", "invalid_request_error", False)
    assert "prompt is too long" in f["error_message"]
    assert "set split_column, or shorten the prompt" in f["next_action"]

    project.run()
    assert create_calls(emulator) == 1

    project.write("prompts/item.j2", "Item {{ id }}: {{ body[:2000] }}")
    project.run()
    assert create_calls(emulator) == 2
    assert _requests_of(emulator, created_batches(emulator)[-1]["id"]) == {"3"}
    assert project.failures() == {}
    results = project.results()
    assert results[3]["output_text"] == expected_answer(3, rows[2]["body"][:2000])
    assert results[1]["output_text"] == expected_answer(1, rows[0]["body"])


def test_cancel_var_keeps_finished_results_and_holds_the_rest(project, emulator):
    emulator.configure(processing_delay=3600)
    rows = items(10)
    project.load_table("items", rows)
    project.configure(replace=False, wait_seconds=0)
    project.run()

    emulator.advance_clock(1800)  # half of the batch is done when the cancel arrives
    project.configure(replace=False, **FAST)
    project.run(vars={"claude_batch_cancel": True})

    (batch,) = project.query("select processing_status, canceled_by_user, n_succeeded, n_canceled from main.items_batch__batches")
    assert batch[0] == "ended" and batch[1] is True and batch[2] + batch[3] == 10 and batch[2] > 0 and batch[3] > 0
    failures = project.failures()
    assert len(failures) == batch[3]
    assert all(f["kind"] == "canceled" and f["canceled_by_user"] and not f["retried_automatically"]
               for f in failures.values())
    assert all("claude_batch_resubmit_canceled" in f["next_action"] for f in failures.values())
    assert len(project.results()) == batch[2]
    # Keys cancelled on purpose are not failures to the health tests (no_failure_needs_you agrees).
    project.write(f"models/{project.model}.yml", "version: 2\nmodels:\n- name: items_batch\n  data_tests:\n"
                  "  - dbt_claude_batch.failure_ratio\n  - dbt_claude_batch.no_failure_needs_you\n")
    project.dbt("test", "-s", "items_batch")

    project.run()
    assert create_calls(emulator) == 1

    emulator.configure(processing_delay=0)
    project.run(vars={"claude_batch_resubmit_canceled": True})
    assert create_calls(emulator) == 2
    assert _requests_of(emulator, created_batches(emulator)[-1]["id"]) == {str(k) for k in failures}
    _assert_all_answered(project, rows)
    assert project.failures() == {}


def test_a_batch_the_api_does_not_know_is_not_bought_again_until_proved_gone(project, emulator, emulator_factory):
    """A 404 on retrieve is what another workspace's key or another base URL answers for a batch still
    running (and billed) here: its rows are not bought again until the user names it gone (found by an
    audit: one run against another endpoint bought every batch in flight again)."""
    emulator.configure(processing_delay=3600)
    project.load_table("items", items(3))
    project.configure(replace=False, wait_seconds=0)
    project.run()
    [batch] = created_batches(emulator)

    other = emulator_factory()
    project.emulator = other  # one run with the key of another workspace
    out = project.run().stdout
    assert f"batch {batch['id']}: the API answers 404 (not found): is ANTHROPIC_API_KEY" in out, out[-3000:]
    assert row_requests(other) == []
    assert project.query("select harvested_at is null from dbt_claude_batch.batches") == [(True,)]

    out = project.run(vars={"claude_batch_gone_batches": [batch["id"]]}).stdout  # deleted, says the user
    assert f"batch {batch['id']} no longer exists; its requests become failures to resubmit" in out, out[-3000:]
    assert sorted(r["custom_id"] for r in row_requests(other)) == ["1", "2", "3"]
