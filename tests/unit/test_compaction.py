"""compaction.py over hand-made state: old attempts go, each key's latest answer and what planning reads
stay, the bill survives in daily_spend, and a model is compacted at most once a day."""

from __future__ import annotations

import datetime as dt

import duckdb

from dbt_claude_batch.run import answers
from dbt_claude_batch.state import compaction, inspect, spend
from dbt_claude_batch.state.queries import latest_outcomes_sql
from dbt_claude_batch.state.state import State

MODEL = "main.items_batch"
NOW = dt.datetime(2026, 3, 1, 12)
OLD = NOW - dt.timedelta(days=40)
RECENT = NOW - dt.timedelta(days=2)


def _state():
    con = duckdb.connect()
    state = State(con, "dbt_claude_batch", MODEL)
    state.ensure()
    state.record_model(["id"], {"id": "VARCHAR"})
    return con, state


def _batch(state, n, at, marker=False):
    sub, batch = f"s{n}", f"b{n}"
    state.run(f"insert into {state.table('submissions')} (submission_id, model_id, status, batch_id, n_requests, "
              "n_bytes, intent_at, settled_at, marker_id) values (?, ?, 'submitted', ?, 1, 10, ?, ?, ?)",
              [sub, MODEL, batch, at, at, f"marker-{n}" if marker else None])
    state.run(f"insert into {state.table('batches')} (batch_id, model_id, submission_id, n_submitted, ended_at, "
              "harvested_at) values (?, ?, ?, 1, ?, ?)", [batch, MODEL, sub, at, at])
    if marker:
        _outcome(state, batch, f"marker-{n}", "succeeded", None, at, 0)
    return sub, batch


def _outcome(state, batch, custom_id, result, text, at, seq):
    state.run(f"insert into {state.table('outcomes')} (batch_id, custom_id, model_id, result_type, output_text, "
              "answered_model, input_tokens, output_tokens, harvested_at, harvest_seq) "
              "values (?, ?, ?, ?, ?, 'claude-haiku-4-5', ?, ?, ?, ?)",
              [batch, custom_id, MODEL, result, text, 1000 if result == "succeeded" else None,
               100 if result == "succeeded" else None, at, seq])


def _request(state, n, key, attempt, result, text, at, seq, marker=False):
    sub, batch = _batch(state, n, at, marker)
    state.run(f"insert into {state.table('requests')} (submission_id, model_id, custom_id, key_custom_id, key_json, "
              "input_hash, request_hash, attempt, model) values (?, ?, ?, ?, ?, ?, ?, ?, 'claude-haiku-4-5')",
              [sub, MODEL, key, key, f'{{"id":"{key}"}}', f"in-{key}-{attempt}", f"rq-{key}-{attempt}", attempt])
    _outcome(state, batch, key, result, text, at, seq)


def _history(state):
    _request(state, 1, "replaced", 1, "succeeded", "first answer", OLD, 1, marker=True)
    _request(state, 2, "replaced", 2, "succeeded", "second answer", OLD, 2)
    _request(state, 3, "never", 1, "errored", None, OLD, 3)
    _request(state, 4, "newer_fail", 1, "succeeded", "kept answer", OLD, 4)
    _request(state, 5, "newer_fail", 2, "expired", None, OLD, 5)
    _request(state, 6, "recent", 1, "succeeded", "old answer", OLD, 6)
    _request(state, 7, "recent", 2, "succeeded", "recent answer", RECENT, 7)
    answers.rebuild(state)


def _table(con, state, name, order="all"):
    return con.execute(f"select * from {state.table(name)} order by {order}").fetchall()


def _bill(con, state):
    return con.execute(f"select day, dbt_model, answered_model, requests_billed, input_tokens, output_tokens, "
                       f"round(billed_usd, 12) from ({spend.spend_view_sql(state.schema)}) order by all").fetchall()


def test_compaction_keeps_each_keys_latest_answer_and_what_planning_reads():
    con, state = _state()
    _history(state)
    held = _table(con, state, "answers")
    latest = con.execute(f"select * from ({latest_outcomes_sql(state)}) order by custom_id").fetchall()
    bill = _bill(con, state)
    status_spend = inspect.spend(con, state.schema)[MODEL]
    report_billed = inspect.savings(con, state.schema)[0]["billed_usd"]
    removed = compaction.compact(state, 30, NOW)
    assert removed["requests"] == 2 and removed["submissions"] == 2 and removed["batches"] == 2
    assert removed["outcomes"] == 3  # two answers replaced, and the marker of a batch that went
    assert con.execute(f"select submission_id from {state.table('requests')} order by 1").fetchall() == [
        ("s2",), ("s3",), ("s4",), ("s5",), ("s7",)]
    assert _table(con, state, "answers") == held
    assert con.execute(f"select * from ({latest_outcomes_sql(state)}) order by custom_id").fetchall() == latest
    answers.rebuild(state)  # what state still holds gives the same answers
    assert _table(con, state, "answers") == held
    assert _bill(con, state) == bill
    assert con.execute(f"select count(*), sum(requests_billed) from {state.table('daily_spend')}").fetchone() == (1, 2)
    assert compaction.answers_removed_at(state) == NOW
    totals = inspect.spend(con, state.schema)[MODEL]
    assert totals["billed_requests"] == status_spend["billed_requests"] == 7
    assert abs(totals["billed_usd"] - status_spend["billed_usd"]) < 1e-12
    assert abs(inspect.savings(con, state.schema)[0]["billed_usd"] - report_billed) < 1e-12
    assert inspect.spend_per_day(con, state.schema) != [] and abs(
        sum(r["usd"] for r in inspect.spend_per_day(con, state.schema)) - status_spend["billed_usd"]) < 1e-12


def test_a_second_compaction_removes_nothing_and_a_window_of_null_never_compacts():
    con, state = _state()
    _history(state)
    assert compaction.due(state, 30, NOW)
    compaction.compact(state, 30, NOW)
    assert not compaction.due(state, 30, NOW + dt.timedelta(hours=23))
    assert compaction.due(state, 30, NOW + dt.timedelta(hours=24))
    assert compaction.due(state, 0, NOW + dt.timedelta(seconds=1))
    assert not compaction.due(state, None, NOW + dt.timedelta(days=400))
    before = [_table(con, state, t) for t in ("requests", "outcomes", "submissions", "batches", "daily_spend")]
    removed = compaction.compact(state, 30, NOW)
    assert set(removed.values()) == {0}
    assert [_table(con, state, t) for t in ("requests", "outcomes", "submissions", "batches")] == before[:4]
    assert len(_table(con, state, "daily_spend")) == len(before[4])  # nothing added, nothing counted twice


def test_a_window_of_zero_days_compacts_everything_but_the_latest_answers():
    con, state = _state()
    _history(state)
    bill = _bill(con, state)
    compaction.compact(state, 0, NOW)
    assert con.execute(f"select submission_id from {state.table('requests')} order by 1").fetchall() == [
        ("s2",), ("s3",), ("s4",), ("s5",), ("s7",)]
    assert _bill(con, state) == bill


def _runs(state, *starts):
    for i, at in enumerate(starts):
        state.run(f"insert into {state.table('runs')} (run_id, model_id, started_at) values (?, ?, ?)",
                  [f"run-{i}", MODEL, at])


def test_a_runs_window_keeps_the_history_of_the_latest_runs_and_either_window_keeps_what_it_holds():
    con, state = _state()
    _history(state)
    # Three runs: one before the old attempts, two since; the latest two start after them.
    _runs(state, OLD - dt.timedelta(hours=1), OLD + dt.timedelta(hours=1), RECENT + dt.timedelta(hours=1))
    assert not compaction.due(state, None, NOW, None)
    assert compaction.due(state, None, NOW, 2)
    assert compaction.window_start(state, None, NOW, 4) is None  # fewer runs than the window: keep everything
    assert compaction.compact(state, None, NOW, 4) == {}
    assert compaction.window_start(state, None, NOW, 3) == OLD - dt.timedelta(hours=1)
    assert compaction.window_start(state, 0, NOW, 3) == OLD - dt.timedelta(hours=1)  # the earlier start wins
    assert compaction.window_start(state, 30, NOW, 2) == OLD + dt.timedelta(hours=1)
    assert compaction.window_start(state, 30, NOW, 1) == NOW - dt.timedelta(days=30)
    bill = _bill(con, state)
    assert compaction.compact(state, 50, NOW, 3) == {}  # both windows reach back past the old attempts
    removed = compaction.compact(state, None, NOW, 2, min_runs=1)  # the latest two runs start after them
    assert removed["requests"] == 2 and removed["runs"] == 1
    assert con.execute(f"select submission_id from {state.table('requests')} order by 1").fetchall() == [
        ("s2",), ("s3",), ("s4",), ("s5",), ("s7",)]
    assert con.execute(f"select run_id from {state.table('runs')} order by 1").fetchall() == [("run-1",), ("run-2",)]
    assert _bill(con, state) == bill
    assert not compaction.due(state, None, NOW + dt.timedelta(hours=23), 2)


def test_the_snapshots_spend_from_runs_survives_the_runs_compaction_removes():
    con, state = _state()
    _history(state)
    _runs(state, OLD - dt.timedelta(hours=1), OLD + dt.timedelta(hours=1), RECENT + dt.timedelta(hours=1))
    for i, usd in enumerate((0.25, 0.5, 0.125)):
        state.run(f"update {state.table('runs')} set cost_usd = ? where run_id = ?", [usd, f"run-{i}"])
    before = inspect.runs_spend(con, state.schema)
    removed = compaction.compact(state, 30, NOW, min_runs=1)
    assert removed["runs"] == 2
    assert inspect.runs_spend(con, state.schema) == before == {MODEL: 0.875}
    assert compaction.compact(state, 30, NOW, min_runs=1)["runs"] == 0  # counted once
    assert inspect.runs_spend(con, state.schema) == before


def test_failed_only_prompts_go_once_their_key_is_answered_and_all_go_once_switched_off():
    from dbt_claude_batch.base.settings import Settings
    from dbt_claude_batch.run.retention import prune_prompts

    con, state = _state()
    _history(state)
    for key in ("replaced", "never", "newer_fail"):
        state.run(f"insert into {state.table('prompts')} values (?, ?, ?, 'rq', '{{}}', now())", [MODEL, key, key])
    base = {"key": "id", "prompt_column": "p", "model": "claude-haiku-4-5"}
    prune_prompts(state, Settings.build(base, {"store_prompts": True}))
    assert len(_table(con, state, "prompts")) == 3
    prune_prompts(state, Settings.build(base, {"store_prompts": "failed_only"}))
    # "replaced" is answered at its latest attempt; "never" has no answer; "newer_fail" failed after its answer
    assert [r[1] for r in _table(con, state, "prompts", "custom_id")] == ["never", "newer_fail"]
    prune_prompts(state, Settings.build(base, {"store_prompts": False}))
    assert _table(con, state, "prompts") == []


def test_a_state_with_nothing_older_than_the_window_is_only_stamped():
    con, state = _state()
    _request(state, 1, "recent", 1, "succeeded", "answer", RECENT, 1)
    answers.rebuild(state)
    assert compaction.compact(state, 30, NOW) == {}
    assert con.execute(f"select compacted_at from {state.table('models')}").fetchall() == [(NOW,)]
    # compacted, but no answer removed: the re-buy guard must not say compaction removed any (a user test)
    assert compaction.last_compacted(state) == NOW and compaction.answers_removed_at(state) is None
    assert len(_table(con, state, "requests")) == 1
