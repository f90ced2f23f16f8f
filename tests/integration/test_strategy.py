"""Strategy and cost: sample preview, routing, budget guard, caching, structured output, recovery, de-duplication."""

from __future__ import annotations

import json

from dbt_claude_batch.base.pricing import usd
from dbt_harness import create_calls, created_batches, emulator_answer, expected_answer, items, marker_cost, row_requests

FAST = {"wait_seconds": 60, "poll_interval_seconds": 0.05}



def sync_calls(emulator) -> int:
    return len(emulator.ledger()["messages"])


def test_sample_preview_sends_a_spread_sample_synchronously_and_touches_no_state(project, emulator):
    project.load_table("items", items(60))
    project.configure(replace=False, **FAST)

    project.run(vars={"claude_batch_sample": 6})

    assert created_batches(emulator) == [] and sync_calls(emulator) == 6
    sample = project.query("select id, output_text, cost_usd, cost_usd_at_batch_prices, source_rows, "
                           "estimated_full_run_batch_usd from main.items_batch__sample order by id")
    assert len(sample) == 6
    ids = [r[0] for r in sample]
    assert ids != [1, 2, 3, 4, 5, 6] and max(ids) - min(ids) > 20  # spread over the data
    for item_id, text, cost, batch_cost, rows, estimate in sample:
        assert text == expected_answer(item_id, f"body number {item_id} with some text")
        assert abs(batch_cost - cost / 2) < 1e-12 and rows == 60
    mean_batch = sum(r[3] for r in sample) / 6
    assert abs(sample[0][5] - mean_batch * 60) < 1e-9
    assert project.query("select count(*) from dbt_claude_batch.requests") == [(0,)]
    assert project.results() == {}

    project.run(vars={"claude_batch_sample": 6})  # deterministic choice
    assert [r[0] for r in project.query("select id from main.items_batch__sample order by id")] == ids


def test_budget_guard_refuses_before_anything_is_submitted(project, emulator):
    project.load_table("items", items(40))
    project.configure(replace=False, max_cost_usd=0.0001, **FAST)
    # The plan says so first, with the guard's own figure (found by a user test: only a range was shown).
    planned = project.run(vars={"claude_batch_plan": True}).stdout
    budget = json.loads(project.query("select plan from dbt_claude_batch.plans")[0][0])["budget"]
    assert budget["limits"]["max_cost_usd"]["stops"] and "the run would stop before any create" in planned
    out = project.run(expect_ok=False).stdout
    assert f"Estimated cost {usd(budget['estimate_usd'])} of 40 pending requests" in out, out[-2000:]
    assert "over the limit max_cost_usd = $0.000100: nothing was submitted" in out
    assert "Raise `max_cost_usd`" in out
    assert emulator.ledger(requests=False)["calls"] == {}
    assert project.query("select count(*) from dbt_claude_batch.submissions") == [(0,)]
    # A sample preview's calls are bought too (at full price): the same guard refuses them.
    out = project.run(vars={"claude_batch_sample": 30}, expect_ok=False).stdout
    assert "of 30 sample requests at full price, plus $0.0000 committed in flight for this model, is over the " \
           "limit max_cost_usd = $0.000100" in out and "ask for a smaller sample (`claude_batch_sample`)" in out
    assert emulator.ledger(requests=False)["calls"] == {}

    project.configure(replace=False, max_cost_usd=1.0)
    project.run()
    assert len(project.results()) == 40
    # So are a prompt comparison's.
    project.write("prompts/item.j2", "Item {{ id }}, edited: {{ body }}")
    project.configure(replace=False, max_cost_usd=0.0001)
    calls = emulator.ledger(requests=False)["calls"]
    out = project.run(vars={"claude_batch_compare": 10}, expect_ok=False).stdout
    assert "of 10 comparison requests at full price, plus $0.0000 committed in flight" in out
    assert "compare fewer keys (`claude_batch_compare`)" in out
    assert emulator.ledger(requests=False)["calls"] == calls


def test_auto_routes_small_work_to_sync_and_large_work_to_batch(project, emulator):
    project.load_table("items", items(5))
    project.configure(replace=False, mode="auto", auto_sync_max_requests=10, **FAST)
    out = project.run().stdout
    assert "route: sync (5 requests <= auto_sync_max_requests 10)" in out
    assert created_batches(emulator) == [] and sync_calls(emulator) == 5
    results = project.results()
    assert all(r["service_tier"] == "standard" for r in results.values())
    assert abs(sum(r["cost_usd"] for r in results.values()) - emulator.ledger()["bill"]["sync_usd"]) < 1e-9

    project.load_table("items", items(30))
    out = project.run().stdout
    assert "route: batch (25 requests > auto_sync_max_requests 10)" in out
    assert [b["request_count"] for b in created_batches(emulator)] == [25]
    assert len(project.results()) == 30


def test_auto_goes_sync_when_the_deadline_beats_the_batch_window(project, emulator):
    project.load_table("items", items(12))
    project.configure(replace=False, mode="auto", auto_sync_max_requests=10, deadline_hours=6, **FAST)
    out = project.run().stdout
    assert "route: sync (deadline 6h is shorter than the batch window (24h + 1h margin))" in out
    assert sync_calls(emulator) == 12 and created_batches(emulator) == []


def test_sync_mode_survives_rate_limits_and_keeps_failure_semantics(project, emulator):
    emulator.add_scenario({"name": "http_error", "status": 429, "route": "messages", "times": 3, "retry_after": 0.01})
    rows = [{"id": i, "body": f"b{i}", "model": m} for i, m in enumerate(
        ["claude-haiku-4-5", "claude-haiku-4-5", "no-such-model", "claude-haiku-4-5"], start=1)]
    project.load_table("items", rows, types={"id": "BIGINT", "body": "VARCHAR", "model": "VARCHAR"})
    # let the unknown model through the Models API check on purpose, to see its failure semantics
    project.configure(replace=False, mode="sync", model_column="model", sync_concurrency=2,
                      extra_models=["no-such-model"])
    project.run()
    calls = emulator.ledger(requests=False)["calls"]["POST /v1/messages"]
    assert calls["429"] == 3
    assert set(project.results()) == {1, 2, 4}
    f = project.failures()[3]
    assert (f["kind"], f["error_type"], f["retried_automatically"]) == ("errored", "invalid_request_error", False)
    assert project.query("select kind, n_submitted, n_succeeded, n_errored, reconciled from main.items_batch__batches") == [
        ("sync", 4, 3, 1, True)]
    project.run()
    assert sync_calls(emulator) == 4  # the invalid request is not resubmitted
    assert emulator.ledger(requests=False)["calls"]["POST /v1/messages"]["429"] == 3


def test_rerun_keys_go_synchronously_at_once(project, emulator):
    emulator.configure(processing_delay=3600)
    project.load_table("items", items(6))
    project.configure(replace=False, wait_seconds=0)
    project.run()
    assert project.results() == {}

    project.run(vars={"claude_batch_rerun_keys": [2, 5]})
    results = project.results()
    assert set(results) == {2, 5}
    assert all(r["service_tier"] == "standard" and r["attempt"] == 2 for r in results.values())
    assert create_calls(emulator) == 1

    emulator.advance_clock(3601)
    project.run()
    results = project.results()
    assert len(results) == 6
    assert results[2]["attempt"] == 2 and results[1]["attempt"] == 1  # the late batch result did not overwrite


def test_prompt_caching_writes_once_then_reads_and_costs_match_the_bill(project, emulator):
    project.load_table("items", items(8))
    system = "You label things. " + "Context sentence for the shared prefix. " * 200
    project.configure(replace=False, system=system, prompt_caching=True, **FAST)
    project.run()
    rows = project.query("select cache_creation_input_tokens, cache_read_input_tokens, cost_usd from main.items_batch")
    writes = [r for r in rows if (r[0] or 0) > 0]
    reads = [r for r in rows if (r[1] or 0) > 0]
    assert len(writes) == 1 and len(reads) == 7
    assert writes[0][0] == reads[0][1]
    bill = emulator.ledger()["bill"]
    assert bill["tokens"]["cache_creation_input_tokens"] == writes[0][0]
    assert abs(sum(r[2] for r in rows) + marker_cost(project) - bill["total_usd"]) < 1e-9


SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "string", "enum": ["alpha", "beta"]}, "score": {"type": "number"}},
    "required": ["label", "score"],
    "additionalProperties": False,
}


def test_structured_output_is_parsed_flattened_and_invalid_json_retried(project, emulator):
    rows = items(4)
    rows[1]["body"] = "[[emulator:bad_json]] broken"
    project.load_table("items", rows)
    project.write("prompts/item.j2", "Labels: alpha, beta\nItem {{ id }}: {{ body }}")
    project.configure(replace=False, output_schema=SCHEMA, output_columns={"label": "VARCHAR", "score": "DOUBLE"},
                      max_attempts=2, **FAST)
    project.run()
    got = project.query("select id, output_json, label, score from main.items_batch order by id")
    assert [g[0] for g in got] == [1, 3, 4]
    for _, parsed, label, score in got:
        assert json.loads(parsed)["label"] == label and label in ("alpha", "beta") and score == 0.0
    types = dict(project.query("select column_name, data_type from information_schema.columns where table_name = 'items_batch'"))
    assert types["label"] == "VARCHAR" and types["score"] == "DOUBLE" and types["output_json"] == "JSON"
    f = project.failures()[2]
    assert f["kind"] == "invalid_output" and f["retried_automatically"] and "not JSON" in f["error_message"]

    project.run()  # retried once more, then the attempts limit stops it
    assert [b["request_count"] for b in created_batches(emulator)] == [4, 1]
    assert not project.failures()[2]["retried_automatically"]


def test_an_answer_is_checked_against_the_output_schema_it_was_asked_with(project, emulator):
    # The schema changed while the batch was in flight: its answers are valid for the requests that
    # were sent, are kept (not invalid_output), and are reused when the schema is set back.
    project.load_table("items", items(3))
    project.write("prompts/item.j2", "Labels: alpha, beta\nItem {{ id }}: {{ body }}")
    project.configure(replace=False, output_schema=SCHEMA, **{**FAST, "wait_seconds": 0})
    emulator.configure(processing_delay=3600)
    project.run()
    stricter = {**SCHEMA, "properties": {**SCHEMA["properties"], "note": {"type": "string"}},
                "required": ["label", "score", "note"]}
    project.configure(replace=False, output_schema=stricter)
    first = created_batches(emulator)[0]["id"]
    emulator.client().messages.batches.retrieve(first)  # a fresh batch's first view is in progress
    emulator.advance_clock(3601)
    project.run(vars={"claude_batch_allow_rebuy": True})
    assert project.query("select result_type, count(*) from dbt_claude_batch.outcomes where batch_id = ? "
                         "and custom_id not like 'dbt_claude_batch-proof-%' group by all", [first]) == [("succeeded", 3)]
    project.configure(replace=False, output_schema=SCHEMA)
    emulator.configure(processing_delay=0)
    project.run(vars={"claude_batch_allow_rebuy": True})
    assert create_calls(emulator) == 2  # the first answers are held again: nothing bought for them


def test_changed_output_columns_stop_an_incremental_run_until_a_free_full_refresh(project, emulator):
    # dbt would drop a new output column's values, and keep a removed one's old values, without a word.
    project.load_table("items", items(3))
    project.write("prompts/item.j2", "Labels: alpha, beta\nItem {{ id }}: {{ body }}")
    project.configure(replace=False, output_schema=SCHEMA, output_columns={"label": "VARCHAR"}, **FAST)
    project.run()
    project.configure(replace=False, output_columns={"label": "VARCHAR", "score": "DOUBLE"})
    project.load_table("items", items(4))

    out = project.run(expect_ok=False).stdout

    line = next(line for line in out.splitlines() if "Results table" in line and "Error" not in line[:8])
    assert "Results table " in line and "has no column score, which output_columns names: rebuild it with " \
        "`dbt run --full-refresh -s items_batch`" in line, line
    assert create_calls(emulator) == 1  # the new row waits: nothing was submitted

    project.dbt("run", "--full-refresh", "-s", "+items_batch")

    got = project.query("select id, label, score from main.items_batch order by id")
    assert [g[0] for g in got] == [1, 2, 3, 4] and all(g[1] in ("alpha", "beta") and g[2] == 0.0 for g in got)
    assert create_calls(emulator) == 2  # the rebuild bought only the new row
    project.configure(replace=False, output_columns={"score": "DOUBLE"})

    out = project.run(expect_ok=False).stdout

    assert "has column label, which output_columns no longer names: rebuild it with `dbt run --full-refresh" in out
    assert create_calls(emulator) == 2
    # A column whose type changed: dbt would keep the old type and cast (or NULL) new values silently.
    project.configure(replace=False, output_columns={"label": "VARCHAR", "score": "integer"})

    out = project.run(expect_ok=False).stdout

    assert "has column score of type DOUBLE, which output_columns now declares INTEGER: rebuild it with " \
        "`dbt run --full-refresh -s items_batch`" in out, out
    assert create_calls(emulator) == 2


def test_truncated_answers_are_retried_with_a_larger_max_tokens(project, emulator):
    """Doubled up to max_tokens_cap (8x max_tokens by default): each max_tokens is a request of its own for
    max_attempts, so four sizes are tried though max_attempts is 3."""
    rows = items(3)
    rows[0]["body"] = "[[emulator:words=50]] please write a lot"
    project.load_table("items", rows)
    project.configure(replace=False, max_tokens=16, **FAST)
    project.run()
    f = project.failures()[1]
    assert f["kind"] == "truncated" and "max_tokens 32" in f["next_action"]
    project.run()
    project.run()
    project.run()
    assert project.failures() == {}
    assert project.results()[1]["stop_reason"] == "end_turn"
    assert project.query("select attempt, max_tokens from dbt_claude_batch.requests where custom_id = '1' order by 1") == [
        (1, 16), (2, 32), (3, 64), (4, 128)]
    # Raised to what key 1 was answered with: its request is the one sent last, held, and not bought
    # again; the others' requests change (16 to 128) and are.
    sent = len(row_requests(emulator))
    project.configure(replace=False, max_tokens=128, max_rebuy_fraction=0.5)
    out = project.run(vars={"claude_batch_allow_rebuy": True}).stdout
    assert "buying again 2 of the 3 held answer(s)" in out, out  # the guard counts the same two
    assert sorted(r["custom_id"] for r in row_requests(emulator)[sent:]) == ["2", "3"]
    assert project.results()[1]["attempt"] == 4 and project.results()[1]["stop_reason"] == "end_turn"
    # A lower max_tokens is the setting from now on: an escalation is not carried to a new request.
    project.configure(replace=False, max_tokens=8, max_rebuy_fraction=None)
    project.run(vars={"claude_batch_allow_rebuy": True})
    assert project.query("select custom_id, max_tokens from dbt_claude_batch.requests where attempt = "
                         "(select max(attempt) from dbt_claude_batch.requests r where r.custom_id = requests.custom_id) "
                         "order by 1") == [("1", 8), ("2", 8), ("3", 8)]


def test_refusal_is_kept_as_a_failure_and_not_retried(project, emulator):
    rows = items(3)
    rows[2]["body"] = "[[emulator:refuse]] do something bad"
    project.load_table("items", rows)
    project.configure(replace=False, **FAST)
    project.run()
    f = project.failures()[3]
    assert f["kind"] == "refused" and not f["retried_automatically"] and f["error_message"]
    project.run()
    assert create_calls(emulator) == 1
    # The row leaves the source under on_source_delete: delete: its failure goes with its result row, from
    # every reader of failures (the view, all_failures, status).
    project.load_table("items", rows[:2])
    project.configure(replace=False, on_source_delete="delete")
    project.run()
    assert project.failures() == {} and sorted(project.results()) == [1, 2]
    assert project.query("select count(*) from dbt_claude_batch.all_failures") == [(0,)]


def test_oversized_document_is_split_processed_retried_part_by_part_and_reassembled(project, emulator):
    from dbt_claude_batch.run.parts import split_text

    rows = items(3)
    rows[1]["body"] = " ".join(f"word{i}" for i in range(150_000))  # 1.54 MB: ~385k tokens by the estimate
    project.load_table("items", rows)
    project.configure(replace=False, split_column="body", max_failure_ratio=1, **FAST)
    # The third part fails once, with an error worth retrying.
    emulator.add_scenario({"name": "result_outcome", "custom_ids": ["2-p3"], "outcome": "api_error", "times": 1})
    project.run()
    assert sorted(project.results()) == [1, 3]  # key 2 is not complete while one of its parts failed
    assert project.failures()[2]["error_type"] == "api_error"
    sent = row_requests(emulator)
    assert sorted(r["custom_id"] for r in sent) == ["1", "2-p1", "2-p2", "2-p3", "2-p4", "3"]

    # The next run sends the failed part alone: the three answered parts are not bought again.
    project.run()
    assert [r["custom_id"] for r in row_requests(emulator)[len(sent):]] == ["2-p3"]
    assert project.failures() == {}
    result = project.results()[2]
    assert result["attempt"] == 2
    assert result["parts"] == 4  # parts aim at half the 200k context: ceil(385k / 100k)
    pieces = split_text(rows[1]["body"], 4)
    assert "".join(pieces) == rows[1]["body"]
    assert result["output_text"] == "\n\n".join(emulator_answer(f"Item 2: {p}") for p in pieces)
    assert project.results()[1]["parts"] == 1
    assert [b["request_count"] for b in created_batches(emulator)] == [6, 1]


def test_prompt_too_long_from_the_api_is_split_on_the_next_run(project, emulator):
    rows = items(2)
    rows[0]["body"] = "x " * 450_000  # ~225k tokens: over the emulator's limit, under our (raised) estimate limit
    project.load_table("items", rows)
    project.configure(replace=False, split_column="body", context_tokens=1_000_000, split_join="json_array",
                      max_failure_ratio=1, **FAST)
    project.run()
    f = project.failures()[1]
    assert "prompt is too long" in f["error_message"] and "split on `body`" in f["next_action"]
    # The split's second part fails once, with an error worth retrying.
    emulator.add_scenario({"name": "result_outcome", "custom_ids": ["1-p2"], "outcome": "api_error", "times": 1})
    project.run()
    assert project.failures()[1]["error_type"] == "api_error"
    sent = row_requests(emulator)
    assert sorted(r["custom_id"] for r in sent) == ["1", "1-p1", "1-p2", "2"]
    # The retry keeps the split the API asked for (not the whole prompt again) and sends the failed part alone.
    project.run()
    assert [r["custom_id"] for r in row_requests(emulator)[len(sent):]] == ["1-p2"]
    result = project.results()[1]
    assert result["parts"] == 2 and len(json.loads(result["output_text"])) == 2
    assert project.failures() == {}


def test_identical_requests_are_sent_once_and_shared(project, emulator):
    bodies = ["same text", "same text", "same text", "other", "other", "unique"]
    project.load_table("items", [{"id": i, "body": b} for i, b in enumerate(bodies, start=1)])
    project.write("prompts/item.j2", "Text: {{ body }}")
    project.configure(replace=False, **FAST)
    project.run()
    results = project.results()
    assert len(results) == 6
    for i, body in enumerate(bodies, start=1):
        assert results[i]["output_text"] == emulator_answer(f"Text: {body}")
    assert [b["request_count"] for b in created_batches(emulator)] == [3]
    assert project.query("select n_submitted, n_deduplicated from main.items_batch__batches") == [(3, 3)]
    billed = emulator.ledger()["bill"]["total_usd"]
    assert abs(sum(r["cost_usd"] for r in results.values()) + marker_cost(project) - billed) < 1e-9
    assert sum(1 for r in results.values() if r["shared_from"]) == 3


def test_de_duplication_can_be_turned_off(project, emulator):
    project.load_table("items", [{"id": i, "body": "same"} for i in range(1, 5)])
    project.write("prompts/item.j2", "Text: {{ body }}")
    project.configure(replace=False, dedupe=False, **FAST)
    project.run()
    assert [b["request_count"] for b in created_batches(emulator)] == [4]


def test_full_message_json_is_kept_only_on_request(project, emulator):
    project.load_table("items", items(2))
    project.configure(replace=False, **FAST)
    project.run()
    assert project.query("select count(message) from dbt_claude_batch.outcomes") == [(0,)]
    project.load_table("items", items(3))
    project.configure(replace=False, keep_message=True)
    project.run()
    (message,) = project.query("select message from dbt_claude_batch.outcomes where message is not null "
                               "and custom_id not like 'dbt_claude_batch-proof-%'")[0]
    assert json.loads(message)["content"][0]["text"] == expected_answer(3, "body number 3 with some text")


def test_sync_pass_killed_midway_loses_no_row(project, emulator):
    rows = items(300)  # enough calls that the pass outlives its first half-second flush
    project.load_table("items", rows)
    project.configure(replace=False, mode="sync", sync_concurrency=1)
    found = project.run_and_kill(line=r"recorded ([0-9]|[1-9][0-9]|[12][0-9][0-9]) of 300 answers")
    recorded = int(found.group(1))
    assert 0 < recorded < 300
    answered_before = sync_calls(emulator)

    project.configure(replace=False, sync_concurrency=8)  # the rest at once: the kill is what is tested
    out = project.run().stdout
    assert "was interrupted" in out
    results = project.results()
    assert len(results) == 300
    assert all(results[r["id"]]["output_text"] == expected_answer(r["id"], r["body"]) for r in rows)
    assert project.failures() == {}
    # Answers recorded before the kill were not bought again.
    assert sync_calls(emulator) - answered_before <= 300 - recorded


def test_a_part_id_that_equals_another_key_is_refused(project, emulator):
    types = {"id": "VARCHAR", "body": "VARCHAR"}
    held = {"id": "a", "body": "answered before"}  # the run plans the other rows only: their ordinals differ
    doc = {"id": "doc", "body": " ".join(f"word{i}" for i in range(12_000))}  # ~24k tokens: in parts at 20k
    project.load_table("items", [held], types=types)
    project.configure(replace=False, split_column="body", context_tokens=20_000, **FAST)
    project.run()
    creates = create_calls(emulator)
    project.load_table("items", [held, doc, {"id": "doc-p1", "body": "short"}], types=types)
    out = project.run(expect_ok=False).stdout
    assert ('Key {"id":"doc"} is sent in parts (a split prompt or a cut document), and its part would get the id '
            """'doc-p1', which is already the custom_id of another key, {"id":"doc-p1"}: rename one""") in out
    assert create_calls(emulator) == creates
    # The same clash the other way round, across runs: a new key named as a part sent before.
    project.load_table("items", [held, doc], types=types)
    project.run()
    creates = create_calls(emulator)
    project.load_table("items", [held, doc, {"id": "doc-p2", "body": "short"}], types=types)
    out = project.run(expect_ok=False).stdout
    assert ("""Key {"id":"doc-p2"} would be sent as custom_id 'doc-p2', which is already the id of a part of key """
            """{"id":"doc"} (sent in parts before): rename the key""") in out, out
    assert create_calls(emulator) == creates
