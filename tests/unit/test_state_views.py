"""The views the package's dbt tests and sources read, over hand-made state (pure DuckDB)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import yaml

from dbt_claude_batch.run.results import write_state_views, write_views
from dbt_claude_batch.base.settings import Settings
from dbt_claude_batch.state.state import State
from dbt_claude_batch.state.views import STATE_VIEWS

S = "dbt_claude_batch"
NOW = dt.datetime(2026, 3, 1, 12, 0, 0)
SETTINGS = Settings.build(None, {"key": "id", "prompt_column": "p", "model": "claude-haiku-4-5"})
PACKAGE_YAML = Path(__file__).resolve().parents[2] / "models" / "dbt_claude_batch_state.yml"


def _submission(state, sub, keys, status="submitted", outcome=None, attempt=1, error_type=None):
    """One create of `keys` (ids) at `attempt`; `outcome` is every key's result_type, None while in flight."""
    batch_id = f"b-{sub}" if status == "submitted" else None
    state.run(f"insert into {state.table('submissions')} (submission_id, model_id, status, batch_id, n_requests, "
              "n_bytes, intent_at) values (?, ?, ?, ?, ?, 10, ?)", [sub, state.model_id, status, batch_id, len(keys), NOW])
    if batch_id:
        state.run(f"insert into {state.table('batches')} (batch_id, model_id, submission_id, n_submitted) "
                  "values (?, ?, ?, ?)", [batch_id, state.model_id, sub, len(keys)])
    for k in keys:
        state.run(f"insert into {state.table('requests')} (submission_id, model_id, custom_id, key_custom_id, key_json, "
                  "input_hash, request_hash, attempt) values (?, ?, ?, ?, ?, 'in', ?, ?)",
                  [sub, state.model_id, str(k), str(k), f'{{"id":{k}}}', f"h{k}-{attempt}", attempt])
        if outcome:
            state.run(f"insert into {state.table('outcomes')} (batch_id, custom_id, model_id, result_type, error_type, "
                      "harvested_at) values (?, ?, ?, ?, ?, ?)", [batch_id, str(k), state.model_id, outcome, error_type, NOW])


def _state(con, model_id="main.items"):
    state = State(con, S, model_id)
    state.ensure()
    state.record_model(["id"], {"id": "BIGINT"})
    return state


def test_keys_view_gives_each_source_key_the_status_of_its_latest_attempt():
    con = duckdb.connect()
    con.execute("create table main.src as select range as id from range(1, 9) where range <> 6")
    state = _state(con)
    _submission(state, "s1", [1, 2, 6], outcome="succeeded")
    _submission(state, "s2", [2], attempt=2)                                    # a retry in flight
    _submission(state, "s3", [3], outcome="errored", error_type="api_error")
    _submission(state, "s4", [4], outcome="errored", error_type="invalid_request_error")
    _submission(state, "s5", [7], status="in_doubt")                            # create unanswered: waits
    _submission(state, "s6", [8], status="abandoned")                           # never reached the API

    names = write_views(state, SETTINGS, "memory", "main", "items", {"id": "BIGINT"}, source_sql="select * from main.src")

    assert names[-1] == '"memory"."main"."items__keys"'
    got = {r[0]: r[1:] for r in con.execute(
        "select id, status, kind, error_type, retried_automatically, has_result from main.items__keys").fetchall()}
    assert got == {
        1: ("result", None, None, None, True),
        2: ("in_flight", None, None, None, True),
        3: ("failure", "errored", "api_error", True, False),
        4: ("failure", "errored", "invalid_request_error", False, False),
        5: ("none", None, None, None, False),
        7: ("in_flight", None, None, None, False),
        8: ("none", None, None, None, False),
    }  # 6 has state but is no longer in the source


def test_without_source_sql_no_keys_view_is_written():
    con = duckdb.connect()
    state = _state(con)
    assert write_views(state, SETTINGS, "memory", "main", "items", {"id": "BIGINT"}) == [
        '"memory"."main"."items__failures"', '"memory"."main"."items__batches"', '"memory"."main"."items__health"']


def test_all_failures_reads_each_models_view_and_falls_back_to_state_without_one():
    con = duckdb.connect()
    a = _state(con, "main.a")
    _submission(a, "a1", [1, 2], outcome="errored", error_type="invalid_request_error")
    write_views(a, SETTINGS, "memory", "main", "a", {"id": "BIGINT"})
    b = _state(con, "other.b")  # no view of its own in this database
    _submission(b, "b1", [9], outcome="expired")

    write_state_views(b)

    got = con.execute(f"select dbt_model, key_json::varchar, kind, retried_automatically, next_action is not null "
                      f"from {S}.all_failures order by all").fetchall()
    assert got == [("main.a", '{"id":1}', "errored", False, True), ("main.a", '{"id":2}', "errored", False, True),
                   ("other.b", '{"id":9}', "expired", None, False)]
    assert con.execute(f"select dbt_model, count(*) from {S}.all_batches group by all order by all").fetchall() == [
        ("main.a", 1), ("other.b", 1)]


def test_the_failures_view_has_one_row_per_key_of_the_current_key_columns():
    con = duckdb.connect()
    a = _state(con, "main.a")
    _submission(a, "a1", [1, 2], outcome="errored", error_type="invalid_request_error")
    # Key 2 failed again under a second custom_id (as after a change of custom_id rules), an hour later.
    a.run(f"insert into {a.table('requests')} (submission_id, model_id, custom_id, key_custom_id, key_json, "
          "input_hash, request_hash, attempt) values ('a1', 'main.a', '2-x', '2-x', '{\"id\":2}', 'in', 'h', 1)")
    a.run(f"insert into {a.table('outcomes')} (batch_id, custom_id, model_id, result_type, harvested_at) "
          "values ('b-a1', '2-x', 'main.a', 'expired', ?)", [NOW + dt.timedelta(hours=1)])
    write_views(a, SETTINGS, "memory", "main", "a", {"id": "BIGINT"})
    assert con.execute("select id, custom_id, kind from main.a__failures order by all").fetchall() == [
        (1, "1", "errored"), (2, "2-x", "expired")]
    # After a key change the old key's custom_ids are no key of the model: not in its view, nor in
    # all_failures when the model's view is in another database file.
    a.record_model(["id", "tenant"], {"id": "BIGINT", "tenant": "VARCHAR"})
    write_views(a, SETTINGS, "memory", "main", "a", {"id": "BIGINT", "tenant": "VARCHAR"})
    assert con.execute("select count(*) from main.a__failures").fetchall() == [(0,)]
    b = _state(con, "other.b")
    _submission(b, "b1", [9], outcome="expired")
    b.record_model(["id", "tenant"], {"id": "BIGINT", "tenant": "VARCHAR"})
    write_state_views(b)
    assert con.execute(f"select count(*) from {S}.all_failures").fetchall() == [(0,)]


def test_state_views_have_exactly_the_columns_the_package_documents():
    con = duckdb.connect()
    write_state_views(_state(con))  # no failures at all: all_failures is still typed
    documented = {t["name"]: [c["name"] for c in t["columns"]]
                  for t in yaml.safe_load(PACKAGE_YAML.read_text())["sources"][0]["tables"]}
    assert set(documented) == set(STATE_VIEWS)
    for name in STATE_VIEWS:
        columns = [r[0] for r in con.execute(
            "select column_name from information_schema.columns where table_schema = ? and table_name = ? "
            "order by ordinal_position", [S, name]).fetchall()]
        assert columns == documented[name], name


def test_a_table_in_the_way_of_a_state_view_leaves_the_run_alone():
    con = duckdb.connect()
    state = _state(con)
    con.execute(f"create table {S}.all_runs (x int)")

    write_state_views(state)  # logs a warning, raises nothing

    assert con.execute(f"select count(*) from {S}.all_runs").fetchone() == (0,)
    assert con.execute(f"select count(*) from {S}.all_batches").fetchone() == (0,)


def _run_with(state, run_id, started, outcomes, outcome="ok", kind="batch", marker=None):
    """A run started at `started` that harvested `outcomes` (custom_id, result_type, error_type) in one batch
    (with `outcome` None, only the batch: one more of the run before)."""
    batch_id, sub = f"b-{run_id}", f"s-{run_id}"
    if outcome:
        state.run(f"insert into {state.table('runs')} (run_id, model_id, started_at, finished_at, outcome) "
                  "values (?, ?, ?, ?, ?)", [run_id, state.model_id, started, started + dt.timedelta(minutes=5), outcome])
    state.run(f"insert into {state.table('submissions')} (submission_id, model_id, status, batch_id, n_requests, "
              "n_bytes, intent_at, marker_id) values (?, ?, 'submitted', ?, ?, 10, ?, ?)",
              [sub, state.model_id, batch_id, len(outcomes), started, marker])
    state.run(f"insert into {state.table('batches')} (batch_id, model_id, submission_id, n_submitted, kind) "
              "values (?, ?, ?, ?, ?)", [batch_id, state.model_id, sub, len(outcomes), kind])
    for custom_id, result_type, error_type, *reused in outcomes:
        state.run(f"insert into {state.table('outcomes')} (batch_id, custom_id, model_id, result_type, error_type, "
                  "reused_from, harvested_at) values (?, ?, ?, ?, ?, ?, ?)",
                  [batch_id, custom_id, state.model_id, result_type, error_type, (reused or [None])[0],
                   started + dt.timedelta(minutes=1)])


def test_health_view_judges_the_failures_no_retry_fixes_over_the_last_runs_together():
    from dbt_claude_batch.state.state import utcnow

    con = duckdb.connect()
    state = _state(con)
    now = utcnow()
    ok = [(f"k{i}", "succeeded", None) for i in range(9)]
    # a run red on its own (8 of 10 invalid), then a retry that harvested nothing: green on its own
    _run_with(state, "r1", now - dt.timedelta(hours=4), [(f"k{i}", "errored", "invalid_request_error") for i in range(8)]
              + [("g1", "succeeded", None), ("g2", "succeeded", None)], outcome="error")
    _run_with(state, "r2", now - dt.timedelta(hours=3), [])
    # 1 template error in 10 rows; the marker (exact id, whatever its result), a reused answer: no row's harvest
    _run_with(state, "r3", now - dt.timedelta(hours=2), [("k9", "errored", "template_error"), *ok,
                                                         ("proof-r3", "errored", "invalid_request_error"),
                                                         ("k20", "succeeded", None, "b-r1")], marker="proof-r3")
    _run_with(state, "r3-sample", now - dt.timedelta(hours=2), [("k1", "errored", "invalid_request_error")],
              kind="sample", outcome=None)  # a sample preview's call: billed, but no row's harvest
    _run_with(state, "r4", now - dt.timedelta(hours=1), [("k9", "refused", "refusal"), *ok,
                                                         ("k10", "errored", "api_error")])

    def health(**settings):
        cfg = Settings.build(None, {"key": "id", "prompt_column": "p", "model": "claude-haiku-4-5", **settings})
        write_views(state, cfg, "memory", "main", "items", {"id": "BIGINT"})
        (row,) = con.execute("select window_runs, window_hours, n_runs, n_harvested, n_invalid_request, "
                             "n_template_error, n_refused, n_unfixable, round(failure_ratio, 4), "
                             "max_failure_ratio_window, over_limit from main.items__health").fetchall()
        return row

    # the last 2 runs: 2 of 21 harvested no retry fixes (the api_error is retried, so not counted)
    assert health(health_window_runs=2) == (2, None, 2, 21, 0, 1, 1, 2, round(2 / 21, 4), 0.1, False)
    assert health(health_window_runs=2, max_failure_ratio_window=0.05)[-1] is True
    # the last 4 runs reach back to the red run that the retry turned green: over
    assert health(health_window_runs=4) == (4, None, 4, 31, 8, 1, 1, 10, round(10 / 31, 4), 0.1, True)
    assert health()[:3] == (10, None, 4)  # default: the last 10 runs (4 so far)
    # a window in hours instead: the runs started in the last 2.5 hours
    assert health(health_window_hours=2.5)[:4] == (None, 2.5, 2, 21)


def test_a_files_api_id_the_api_does_not_know_asks_for_the_row_to_be_fixed_not_the_request():
    con = duckdb.connect()
    a = _state(con, "main.a")
    _submission(a, "a1", [1, 2], outcome="errored", error_type="invalid_request_error")
    a.run(f"update {a.table('outcomes')} set error_message = 'messages.0.content.0.source.file_id: File not found: "
          "file_abc123' where custom_id = '1'")
    write_views(a, SETTINGS, "memory", "main", "a", {"id": "BIGINT"})
    actions = dict(con.execute("select id, next_action from main.a__failures").fetchall())
    assert actions[1].startswith("the row names a Files API id (file_...) the API does not hold: give the row the "
                                 "file itself")
    assert actions[2].startswith("fix the request (prompt template, model or settings)")
