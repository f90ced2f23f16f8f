"""inspect.py over hand-made state: progress, ETA, expiry, spend billed and committed, last runs, the snapshot."""

from __future__ import annotations

import datetime as dt
import json
import os

import duckdb
import pytest

from dbt_claude_batch.state import inspect
from dbt_claude_batch.base.pricing import BATCH_DISCOUNT, LIST_PRICES
from dbt_claude_batch.state.snapshot import read_snapshot, snapshot_path, write_snapshot
from dbt_claude_batch.state.state import State

S = "dbt_claude_batch"
NOW = dt.datetime(2026, 3, 1, 12, 0, 0)
MODEL = "main.tickets"


def _state(con=None):
    con = con or duckdb.connect()
    State(con, S, MODEL).ensure()
    return con


def _model(con, model_id=MODEL, updated_at=NOW - dt.timedelta(minutes=5)):
    con.execute(f'insert into "{S}".models (model_id, key_columns, key_types, updated_at) values (?, ?, ?, ?)',
                [model_id, '["id"]', '{"id": "BIGINT"}', updated_at])


def _batch(con, batch_id, model_id=MODEL, kind="batch", harvested=True, created=NOW - dt.timedelta(hours=1),
           polled=None, status="ended", n=10, succeeded=10, errored=0, processing=0):
    con.execute(
        f"""insert into "{S}".batches (batch_id, model_id, submission_id, processing_status, created_at, expires_at,
            polled_at, n_submitted, n_processing, n_succeeded, n_errored, n_canceled, n_expired, kind, harvested_at)
        values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, ?, ?)""",
        [batch_id, model_id, "sub-" + batch_id, status, created, created + dt.timedelta(hours=24), polled, n,
         processing, succeeded, errored, kind, NOW - dt.timedelta(minutes=30) if harvested else None])


def _outcome(con, batch_id, custom_id, result="succeeded", model_id=MODEL, input_tokens=1000, output_tokens=100,
             shared_from=None, error_type=None):
    con.execute(
        f"""insert into "{S}".outcomes (batch_id, custom_id, model_id, result_type, error_type, answered_model,
            input_tokens, output_tokens, service_tier, shared_from, harvested_at)
        values (?, ?, ?, ?, ?, 'claude-haiku-4-5-20251001', ?, ?, 'batch', ?, ?)""",
        [batch_id, custom_id, model_id, result, error_type, input_tokens if result == "succeeded" else None,
         output_tokens if result == "succeeded" else None, shared_from, NOW - dt.timedelta(minutes=30)])


HAIKU_IN, HAIKU_OUT = LIST_PRICES["claude-haiku-4-5"]
ONE_ANSWER = BATCH_DISCOUNT * (1000 * HAIKU_IN + 100 * HAIKU_OUT) / 1e6


def test_batch_in_flight_shows_progress_age_expiry_and_eta_from_the_observed_rate():
    con = _state()
    _model(con)
    created = NOW - dt.timedelta(seconds=600)
    _batch(con, "b1", harvested=False, created=created, polled=NOW - dt.timedelta(seconds=60), status="in_progress",
           n=90, succeeded=30, errored=6, processing=54)

    (m,) = inspect.status_document(con, S, now=NOW)["models"]
    (b,) = m["batches_in_flight"]
    assert (b["n_succeeded"], b["n_errored"], b["n_processing"], b["n_submitted"]) == (30, 6, 54, 90)
    assert b["age_seconds"] == 600
    assert b["expires_in_seconds"] == 24 * 3600 - 600
    # 36 requests finished in the 540 s before the last poll: the other 54 need 810 s from that poll
    assert b["eta_seconds"] == pytest.approx(810 - 60)
    assert b["eta_at"] == "2026-03-01T12:12:30Z"
    assert m["in_flight"] == {"batches": 1, "requests": 90, "creates_in_doubt": 0}


def test_eta_is_unknown_until_a_request_finishes_and_ended_batches_wait_for_the_next_run():
    con = _state()
    _model(con)
    _batch(con, "b1", harvested=False, polled=NOW, status="in_progress", succeeded=0, processing=10)
    _batch(con, "b2", harvested=False, polled=NOW, status="ended", succeeded=10, processing=0,
           created=NOW - dt.timedelta(minutes=30))
    flying = {b["batch_id"]: b for b in inspect.status_document(con, S, now=NOW)["models"][0]["batches_in_flight"]}
    assert flying["b1"]["eta_seconds"] is None and flying["b1"]["eta_note"] == "no request finished yet"
    assert flying["b2"]["eta_seconds"] == 0 and "next dbt run collects" in flying["b2"]["eta_note"]


def test_spend_counts_every_attempt_and_commits_in_flight_requests_at_the_average_cost():
    con = _state()
    _model(con)
    _batch(con, "b1", n=4)
    for cid in ("1", "2", "3"):
        _outcome(con, "b1", cid)
    _outcome(con, "b1", "4", result="errored", error_type="api_error")  # not billed, but part of the average
    _outcome(con, "b1", "5", shared_from="1")  # de-duplicated: a copy of 1's answer, not bought
    _batch(con, "b2", n=1)
    _outcome(con, "b2", "1")  # a later attempt that replaced 1's answer: billed as well
    _batch(con, "b3", harvested=False, status="in_progress", n=8, succeeded=0, processing=8)

    s = inspect.status_document(con, S, now=NOW)["models"][0]["spend"]
    assert s["billed_usd"] == pytest.approx(4 * ONE_ANSWER)
    assert s["billed_requests"] == 5
    assert s["avg_request_usd"] == pytest.approx(4 * ONE_ANSWER / 5)
    assert s["committed_usd"] == pytest.approx(8 * 4 * ONE_ANSWER / 5)


def test_committed_is_unknown_before_any_batch_was_harvested():
    con = _state()
    _model(con)
    _batch(con, "b1", harvested=False, status="in_progress", n=8, succeeded=0, processing=8)
    s = inspect.status_document(con, S, now=NOW)["models"][0]["spend"]
    assert s["billed_usd"] == 0 and s["committed_usd"] is None and s["requests_in_flight"] == 8


def test_failures_without_the_model_view_are_grouped_from_state():
    con = _state()
    _model(con)
    con.execute(f"""insert into "{S}".submissions (submission_id, model_id, status, batch_id, n_requests, n_bytes,
                    intent_at) values ('sub-b1', ?, 'submitted', 'b1', 3, 0, ?)""", [MODEL, NOW])
    for cid in ("1", "2", "3"):
        con.execute(f"""insert into "{S}".requests (submission_id, model_id, custom_id, key_json, input_hash,
                        request_hash, attempt, key_custom_id) values ('sub-b1', ?, ?, '{{}}', 'i', 'r' || ?, 1, ?)""",
                    [MODEL, cid, cid, cid])
    _batch(con, "b1", n=3)
    _outcome(con, "b1", "1")
    _outcome(con, "b1", "2", result="errored", error_type="api_error")
    _outcome(con, "b1", "3", result="errored", error_type="api_error")
    f = inspect.status_document(con, S, now=NOW)["models"][0]["failures"]
    assert f["from"] == "state" and f["total"] == 2
    assert [(g["kind"], g["error_type"], g["count"]) for g in f["by_kind"]] == [("errored", "api_error", 2)]


def test_last_run_comes_from_runs_when_state_has_them_and_from_models_otherwise():
    con = _state()
    _model(con)
    _model(con, "main.other")
    con.execute(f'create table if not exists "{S}".runs (run_id varchar, model_id varchar, started_at timestamp, '
                "finished_at timestamp, n_source_rows bigint, n_submitted bigint, n_harvested bigint, n_failed bigint, "
                "n_reused bigint, cost_usd double, outcome varchar, note varchar)")
    con.execute(f'delete from "{S}".runs')
    for i, minutes in enumerate((50, 20)):
        con.execute(f'insert into "{S}".runs (run_id, model_id, started_at, finished_at, n_submitted, cost_usd, outcome) '
                    "values (?, ?, ?, ?, ?, 0.5, 'ok')",
                    [f"r{i}", MODEL, NOW - dt.timedelta(minutes=minutes), NOW - dt.timedelta(minutes=minutes - 1), i])
    runs = {m["model_id"]: m["last_run"] for m in inspect.status_document(con, S, now=NOW)["models"]}
    assert runs[MODEL]["from"] == "runs" and runs[MODEL]["run_id"] == "r1" and runs[MODEL]["at"] == "2026-03-01T11:41:00Z"
    assert runs["main.other"] == {"at": "2026-03-01T11:55:00Z", "from": "models.updated_at"}

    con.execute(f'drop table "{S}".runs')
    assert inspect.status_document(con, S, now=NOW)["models"][0]["last_run"]["from"] == "models.updated_at"


def test_the_snapshot_reads_per_batch_tables_only():
    con = _state()
    _model(con)
    _batch(con, "b1", harvested=False, status="in_progress", n=8, succeeded=2, processing=6, polled=NOW)
    for table in ("outcomes", "requests", "input_aliases"):  # a snapshot that touched these would fail here
        con.execute(f'drop table "{S}".{table}')
    doc = inspect.status_document(con, S, per_row=False, now=NOW)
    (m,) = doc["models"]
    assert m["batches_in_flight"][0]["n_processing"] == 6
    assert m["failures"] is None and m["spend"]["committed_usd"] is None


def test_write_snapshot_next_to_the_database_file(tmp_path):
    db = tmp_path / "warehouse.duckdb"
    con = _state(duckdb.connect(str(db)))
    _model(con)
    _batch(con, "b1", harvested=False, status="in_progress", n=8, succeeded=2, processing=6, polled=NOW)

    path = write_snapshot(con, S)

    assert path == snapshot_path(str(db)) == str(db) + ".dbt_claude_batch.json"
    doc = read_snapshot(path)
    assert doc == json.loads(json.dumps(doc)) and doc["per_row"] is False
    assert doc["models"][0]["batches_in_flight"][0]["batch_id"] == "b1"
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".snapshot-")]  # no temp file left
    assert write_snapshot(duckdb.connect(), S) is None  # an in-memory database has no file to sit next to
    assert read_snapshot(str(tmp_path / "absent.json")) is None


def _runs_table(con):
    con.execute(f'create table if not exists "{S}".runs (run_id varchar, model_id varchar, started_at timestamp, '
                "finished_at timestamp, n_source_rows bigint, n_submitted bigint, n_harvested bigint, n_failed bigint, "
                "n_reused bigint, cost_usd double, outcome varchar, note varchar)")
    con.execute(f'delete from "{S}".runs')


def test_report_series_outcomes_per_run_savings_and_turnaround():
    con = _state()
    _model(con)
    _batch(con, "b1", n=3, created=NOW - dt.timedelta(hours=2))
    con.execute(f"update \"{S}\".batches set ended_at = created_at + interval 90 minute where batch_id = 'b1'")
    _outcome(con, "b1", "1")
    _outcome(con, "b1", "2", result="errored", error_type="api_error")
    _outcome(con, "b1", "3", shared_from="1")  # de-duplicated copy: worth one answer
    _batch(con, "reuse_1", kind="reuse", n=1)
    _outcome(con, "reuse_1", "4", shared_from="1")  # reused from state: worth one answer
    _batch(con, "b2", harvested=False, status="in_progress", created=NOW - dt.timedelta(minutes=30), n=5)
    _runs_table(con)
    con.execute(f"""insert into "{S}".runs (run_id, model_id, started_at, finished_at) values
        ('early', ?, ?, ?), ('late', ?, ?, null)""",
                [MODEL, NOW - dt.timedelta(hours=3), NOW - dt.timedelta(hours=2), MODEL, NOW - dt.timedelta(minutes=40)])

    mix = inspect.outcome_mix(con, S, now=NOW)
    assert mix["per"] == "run"
    assert sorted((r["unit"], r["category"], r["n"]) for r in mix["rows"]) == [
        ("late", "de-duplicated", 1), ("late", "errored", 1), ("late", "reused", 1), ("late", "succeeded", 1)]
    (saved,) = inspect.savings(con, S)
    assert (saved["n_deduplicated"], saved["n_reused"]) == (1, 1)
    assert saved["billed_usd"] == pytest.approx(ONE_ANSWER)
    assert saved["deduplicated_usd"] == pytest.approx(ONE_ANSWER) and saved["reused_usd"] == pytest.approx(ONE_ANSWER)
    turn = {t["batch_id"]: t for t in inspect.turnaround(con, S, now=NOW)}
    assert set(turn) == {"b1", "b2"}  # Message Batches only, not the reuse pseudo-batch
    assert turn["b1"]["hours"] == pytest.approx(1.5) and not turn["b1"]["in_flight"]
    assert turn["b2"]["hours"] == pytest.approx(0.5) and turn["b2"]["in_flight"]
    assert [(r["message"], r["n"]) for r in inspect.top_failure_messages(con, S)] == [("(no message)", 1)]
    (day,) = inspect.tokens_per_day(con, S)
    assert (day["input"], day["output"]) == (1000, 100)  # the copies were not bought

    con.execute(f'drop table "{S}".runs')
    assert inspect.outcome_mix(con, S, now=NOW)["per"] == "batch"


def test_marker_requests_are_billed_but_no_row_failure_or_request_count():
    con = _state()
    _model(con)
    _batch(con, "b1", n=2)
    _outcome(con, "b1", "1")
    _outcome(con, "b1", "2", result="errored", error_type="api_error")
    # each batch's marker: answered with one token (cut off at max_tokens 1), billed
    marker = "dbt_claude_batch-proof-0123456789abcdef0123456789abcdef"
    _outcome(con, "b1", marker, result="truncated", error_type="max_tokens")
    con.execute(f"""update "{S}".outcomes set input_tokens = 10, output_tokens = 1, error_message = 'cut off'
                    where custom_id = ?""", [marker])
    # Recognised by the exact marker id recorded for the batch's submission, not by its prefix.
    con.execute(f"""insert into "{S}".submissions (submission_id, model_id, status, batch_id, n_requests, n_bytes,
                    intent_at, marker_id) values ('sub-b1', ?, 'submitted', 'b1', 2, 10, ?, ?)""", [MODEL, NOW, marker])

    s = inspect.status_document(con, S, now=NOW)["models"][0]["spend"]
    marker_usd = BATCH_DISCOUNT * (10 * HAIKU_IN + 1 * HAIKU_OUT) / 1e6
    assert s["billed_usd"] == pytest.approx(ONE_ANSWER + marker_usd)
    assert s["billed_requests"] == 2
    assert [r["kind"] for r in inspect.top_failure_messages(con, S)] == ["errored"]


def test_failures_cancelled_on_purpose_are_not_counted_as_needing_you():
    """As `no_failure_needs_you` leaves them out: cancelling was the user's decision."""
    con = _state()
    con.execute("create table main.tickets__failures as select * from (values "
                "(1, 'canceled', null, true, false, 'canceled on purpose: ...', null), "
                "(2, 'errored', 'invalid_request_error', false, false, 'fix the request', 'bad'), "
                "(3, 'errored', 'api_error', false, true, 'resubmitted', 'oops')) "
                "t(id, kind, error_type, canceled_by_user, retried_automatically, next_action, error_message)")
    found = inspect.failures_by_kind(con, S, MODEL)
    assert (found["total"], found["needs_you"]) == (3, 1)
