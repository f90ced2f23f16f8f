"""Results pick the newest attempt, whatever order batches were harvested in (pure DuckDB)."""

from __future__ import annotations

import datetime as dt

import duckdb

from dbt_claude_batch.run import answers
from dbt_claude_batch.run.results import results_sql
from dbt_claude_batch.base.settings import Settings
from dbt_claude_batch.state.state import State

MODEL = "db.main.items_batch"
SETTINGS = Settings.build(None, {"key": "id", "prompt_column": "p", "model": "claude-haiku-4-5"})


def _results_sql(state, *args, **kwargs):
    """Results as a run reads them: from the answers table, brought up to date with the outcomes."""
    answers.rebuild(state)
    return results_sql(state, *args, **kwargs)


def _state():
    con = duckdb.connect()
    state = State(con, "dbt_claude_batch", MODEL)
    state.ensure()
    return con, state


def _attempt(state, attempt, batch_id, text, harvested_at):
    sub = f"sub-{attempt}"
    state.run(f"insert into {state.table('submissions')} (submission_id, model_id, status, batch_id, n_requests, "
              "n_bytes, intent_at, settled_at) values (?, ?, 'submitted', ?, 1, 10, ?, ?)",
              [sub, MODEL, batch_id, harvested_at, harvested_at])
    state.run(f"insert into {state.table('requests')} (submission_id, model_id, custom_id, key_custom_id, key_json, "
              "input_hash, request_hash, attempt, model) values (?, ?, 'k1', 'k1', '{\"id\":1}', 'in', ?, ?, 'claude-haiku-4-5')",
              [sub, MODEL, f"hash-{attempt}", attempt])
    state.run(f"insert into {state.table('batches')} (batch_id, model_id, submission_id, n_submitted, ended_at, "
              "harvested_at) values (?, ?, ?, 1, ?, ?)", [batch_id, MODEL, sub, harvested_at, harvested_at])
    if text is None:  # still in flight: no outcome, batch not harvested
        state.run(f"update {state.table('batches')} set ended_at = null, harvested_at = null where batch_id = ?",
                  [batch_id])
        return
    state.run(f"insert into {state.table('outcomes')} (batch_id, custom_id, model_id, result_type, output_text, "
              "answered_model, input_tokens, output_tokens, harvested_at) "
              "values (?, 'k1', ?, 'succeeded', ?, 'claude-haiku-4-5', 10, 2, ?)",
              [batch_id, MODEL, text, harvested_at])


def test_late_result_of_an_older_attempt_never_wins():
    con, state = _state()
    t0 = dt.datetime(2026, 1, 1)
    _attempt(state, 2, "batch-new", "new answer", t0)
    _attempt(state, 1, "batch-old", "old answer", t0 + dt.timedelta(hours=1))  # harvested later

    rows = con.sql(_results_sql(state, SETTINGS, {"id": "BIGINT"}, None)).fetchall()
    assert len(rows) == 1
    assert rows[0][0] == 1 and rows[0][2] == "new answer"


def test_incremental_rows_skip_what_the_table_already_has_at_a_newer_attempt():
    con, state = _state()
    t0 = dt.datetime(2026, 1, 1)
    _attempt(state, 1, "batch-old", "old answer", t0)
    con.execute("create table existing as select 1 as id, 'k1' as custom_id, 3 as attempt")
    assert con.sql(_results_sql(state, SETTINGS, {"id": "BIGINT"}, "existing")).fetchall() == []
    con.execute("update existing set attempt = 0")
    assert len(con.sql(_results_sql(state, SETTINGS, {"id": "BIGINT"}, "existing")).fetchall()) == 1


def test_cost_uses_batch_prices_and_cache_multipliers():
    con, state = _state()
    _attempt(state, 1, "b", "x", dt.datetime(2026, 1, 1))
    state.run(f"update {state.table('outcomes')} set input_tokens = 1000000, output_tokens = 1000000, "
              "cache_creation_input_tokens = 1000000, cache_creation_1h_input_tokens = 400000, "
              "cache_read_input_tokens = 1000000")
    cost = con.sql(f"select cost_usd from ({_results_sql(state, SETTINGS, {'id': 'BIGINT'}, None)})").fetchall()[0][0]
    # haiku: input 1, output 5, 5m write 1.25, 1h write 2, read 0.1 -- all halved for batches
    expected = 0.5 * (1 + 5 + 0.6 * 1.25 + 0.4 * 2 + 0.1)
    assert abs(cost - expected) < 1e-12


def test_watermark_reads_only_outcomes_the_table_has_not_seen():
    con, state = _state()
    t0 = dt.datetime(2026, 1, 1)
    _attempt(state, 1, "batch-a", "answer a", t0)
    state.run(f"update {state.table('outcomes')} set harvest_seq = 3")
    # a second key, recorded later
    state.run(f"insert into {state.table('submissions')} (submission_id, model_id, status, batch_id, n_requests, "
              "n_bytes, intent_at, settled_at) values ('sub-k2', ?, 'submitted', 'batch-b', 1, 10, ?, ?)", [MODEL, t0, t0])
    state.run(f"insert into {state.table('requests')} (submission_id, model_id, custom_id, key_custom_id, key_json, "
              "input_hash, request_hash, attempt, model) values ('sub-k2', ?, 'k2', 'k2', '{\"id\":2}', 'in', 'h', 1, "
              "'claude-haiku-4-5')", [MODEL])
    state.run(f"insert into {state.table('batches')} (batch_id, model_id, submission_id, n_submitted, ended_at) "
              "values ('batch-b', ?, 'sub-k2', 1, ?)", [MODEL, t0])
    state.run(f"insert into {state.table('outcomes')} (batch_id, custom_id, model_id, result_type, output_text, "
              "answered_model, input_tokens, output_tokens, harvested_at, harvest_seq) "
              "values ('batch-b', 'k2', ?, 'succeeded', 'answer b', 'claude-haiku-4-5', 1, 1, ?, 7)", [MODEL, t0])

    # The table saw everything up to seq 3 (key 1): only key 2 is read again.
    con.execute("create table seen as select 'k1' as custom_id, 1 as attempt, 3 as harvest_seq, "
                "false as newer_request_in_flight")
    rows = con.sql(_results_sql(state, SETTINGS, {"id": "BIGINT"}, "seen", watermark=True)).fetchall()
    assert [r[2] for r in rows] == ["answer b"]
    # A merge that never happened leaves the table behind: the next run catches up on everything.
    con.execute("create table behind as select * from seen where false")
    rows = con.sql(_results_sql(state, SETTINGS, {"id": "BIGINT"}, "behind", watermark=True)).fetchall()
    assert sorted(r[2] for r in rows) == ["answer a", "answer b"]


def test_a_row_whose_key_has_a_newer_request_in_flight_says_so_until_the_answer_lands():
    con, state = _state()
    t0 = dt.datetime(2026, 1, 1)
    _attempt(state, 1, "batch-a", "answer a", t0)
    state.run(f"update {state.table('outcomes')} set harvest_seq = 3")
    con.execute("create table seen as select 'k1' as custom_id, 1 as attempt, 3 as harvest_seq, "
                "false as newer_request_in_flight")
    _attempt(state, 2, "batch-b", None, t0)  # the row changed: attempt 2 is in flight

    rows = con.sql(_results_sql(state, SETTINGS, {"id": "BIGINT"}, "seen", watermark=True)).fetchall()
    assert [(r[2], r[-1]) for r in rows] == [("answer a", True)]  # the old answer, marked as about to change

    con.execute("update seen set newer_request_in_flight = true")  # what dbt's merge did
    assert con.sql(_results_sql(state, SETTINGS, {"id": "BIGINT"}, "seen", watermark=True)).fetchall() == []

    # The newer request is abandoned (an unanswered create nobody could prove): the flag is cleared.
    state.run(f"update {state.table('submissions')} set status = 'abandoned' where submission_id = 'sub-2'")
    rows = con.sql(_results_sql(state, SETTINGS, {"id": "BIGINT"}, "seen", watermark=True)).fetchall()
    assert [(r[2], r[-1]) for r in rows] == [("answer a", False)]
    con.execute("update seen set newer_request_in_flight = false")
    assert con.sql(_results_sql(state, SETTINGS, {"id": "BIGINT"}, "seen", watermark=True)).fetchall() == []


def test_refreshing_the_batches_harvested_gives_what_a_rebuild_gives():
    """The answers kept up to date batch by batch equal those recomputed from every outcome."""
    con, state = _state()
    t0 = dt.datetime(2026, 1, 1)
    _attempt(state, 1, "batch-1", "first", t0)
    answers.refresh(state, ["batch-1"])
    _attempt(state, 2, "batch-2", None, t0)  # a newer attempt in flight, then failed
    state.run(f"update {state.table('batches')} set ended_at = ?, harvested_at = ? where batch_id = 'batch-2'", [t0, t0])
    state.run(f"insert into {state.table('outcomes')} (batch_id, custom_id, model_id, result_type, harvested_at, "
              f"harvest_seq) values ('batch-2', 'k1', ?, 'errored', ?, 7)", [MODEL, t0])
    answers.refresh(state, ["batch-2"])
    kept = con.execute(f"select attempt, output_text, seq from {state.table('answers')}").fetchall()
    assert kept == [(1, "first", 7)]  # the earlier answer stays; its key's newest outcome moved on
    answers.rebuild(state)
    assert con.execute(f"select attempt, output_text, seq from {state.table('answers')}").fetchall() == kept


def test_answers_are_brought_up_to_date_in_steps_of_bounded_size():
    batches = [("a", 100_000), ("b", 60_000), ("c", 40_000), ("d", 150_000), ("e", None), ("f", 1)]
    assert answers.steps(batches, 100_000) == [["a"], ["b", "c"], ["d"], ["e", "f"]]
    assert answers.steps([], 100_000) == []


def _request(state, sub, batch_id, custom_id, key, attempt, result, text, part=None, parts=None, seq=None):
    """One request line of submission `sub` (created with its batch when first named) and its outcome."""
    if not state.run(f"select count(*) from {state.table('submissions')} where submission_id = ?", [sub])[0][0]:
        t0 = dt.datetime(2026, 1, 1)
        state.run(f"insert into {state.table('submissions')} (submission_id, model_id, status, batch_id, n_requests, "
                  "n_bytes, intent_at, settled_at) values (?, ?, 'submitted', ?, 1, 10, ?, ?)",
                  [sub, MODEL, batch_id, t0, t0])
        state.run(f"insert into {state.table('batches')} (batch_id, model_id, submission_id, n_submitted, ended_at, "
                  "harvested_at) values (?, ?, ?, 1, ?, ?)", [batch_id, MODEL, sub, t0, t0])
    state.run(f"insert into {state.table('requests')} (submission_id, model_id, custom_id, key_custom_id, key_json, "
              "input_hash, request_hash, attempt, model, part, parts) values (?, ?, ?, ?, ?, 'in', ?, ?, 'claude-haiku-4-5', ?, ?)",
              [sub, MODEL, custom_id, key, f'{{"id":"{key}"}}', f"hash-{key}-{attempt}", attempt, part, parts])
    state.run(f"insert into {state.table('outcomes')} (batch_id, custom_id, model_id, result_type, output_text, "
              "answered_model, input_tokens, output_tokens, harvested_at, harvest_seq) "
              "values (?, ?, ?, ?, ?, 'claude-haiku-4-5', 10, 2, ?, ?)",
              [batch_id, custom_id, MODEL, result, text, dt.datetime(2026, 1, 1), seq])


def test_every_kind_of_key_refreshed_in_one_step_gives_what_a_rebuild_gives():
    """Keys with one request take a plain join; split keys, keys with two attempts in the step and keys
    with older requests elsewhere take the aggregation: every kind must come out as a rebuild has it."""
    con, state = _state()
    _request(state, "s0", "b0", "old", "old", 1, "succeeded", "old answer", seq=1)  # history elsewhere
    answers.refresh(state, ["b0"])
    _request(state, "s1", "b1", "one", "one", 1, "succeeded", "single", seq=2)
    _request(state, "s1", "b1", "bad", "bad", 1, "errored", None, seq=3)
    _request(state, "s1", "b1", "split-p1", "split", 1, "succeeded", "first half", part=1, parts=2, seq=4)
    _request(state, "s1", "b1", "split-p2", "split", 1, "succeeded", "second half", part=2, parts=2, seq=5)
    _request(state, "s1", "b1", "twice", "twice", 1, "expired", None, seq=6)
    _request(state, "s2", "b2", "twice", "twice", 2, "succeeded", "second try", seq=7)
    _request(state, "s2", "b2", "old", "old", 2, "errored", None, seq=8)
    answers.refresh(state, ["b1", "b2"])
    columns = ", ".join(answers.ANSWER_COLUMNS)
    kept = con.execute(f"select {columns} from {state.table('answers')} order by custom_id").fetchall()
    assert [(r[1], r[2], r[7], r[8], r[21]) for r in kept] == [
        ("old", 1, "old answer", None, 8), ("one", 1, "single", None, 2),
        ("split", 1, None, ["first half", "second half"], 5), ("twice", 2, "second try", None, 7)]
    answers.rebuild(state)
    assert con.execute(f"select {columns} from {state.table('answers')} order by custom_id").fetchall() == kept


def test_held_answers_missing_from_the_table_come_back_for_source_keys_only():
    """A row deleted from the results table is returned again while its key is in the source; a key
    gone from both stays gone, and once a check found nothing missing, unchanged counts skip it."""
    con, state = _state()
    state.record_model(["id"], {"id": "VARCHAR"})
    for seq, key in enumerate(["k1", "k2", "k3"], start=1):
        _request(state, f"s{seq}", f"b{seq}", key, key, 1, "succeeded", f"answer {key}", seq=seq)
    con.execute("create table src as select unnest(['k1', 'k2', 'k3']) as id")
    con.execute("create table seen as select custom_id, attempt, seq as harvest_seq, false as newer_request_in_flight "
                f"from {state.table('answers')} where false")
    answers.rebuild(state)
    con.execute(f"insert into seen select custom_id, attempt, seq, false from {state.table('answers')} "
                "where custom_id <> 'k2'")  # k2's row was deleted by hand; k3 (the newest) is still there

    def results(source_keys="select id from src"):
        return sorted(r[1] for r in con.sql(results_sql(state, SETTINGS, {"id": "VARCHAR"}, "seen", watermark=True,
                                                        source_keys=source_keys)).fetchall())

    assert results() == ["k2"]
    # Restored: the counts the merge will leave are remembered (3 answers, 3 rows), so the run after it
    # needs no anti-join; a merge that never happened leaves other counts, and the check runs again.
    assert state.results_gap() == 0
    assert results() == ["k2"]  # dbt's merge failed: still missing, found again
    con.execute("insert into seen values ('k2', 1, 2, false)")  # what dbt's merge did
    assert results(source_keys="select id from no_such_table") == []  # the counts agree: no check
    assert state.results_gap() == 0

    # A harvest: k4 answered and returned; the counts after its merge are remembered with it.
    _request(state, "s4", "b4", "k4", "k4", 1, "succeeded", "answer k4", seq=4)
    answers.refresh(state, ["b4"])
    con.execute("insert into src values ('k4')")
    state.set_quiet_digest(None)
    assert results() == ["k4"]
    assert state.results_gap() == 0
    con.execute("insert into seen values ('k4', 1, 4, false)")
    assert results(source_keys="select id from no_such_table") == []

    # k2 leaves the source and its row is deleted (on purpose): it stays deleted.
    con.execute("delete from src where id = 'k2'")
    state.set_quiet_digest(None)  # a run whose source changed
    con.execute("delete from seen where custom_id = 'k2'")
    assert results() == []
    assert state.results_gap() == 1
    # The same counts on a later run with nothing to do: no anti-join, no read of the source.
    assert results(source_keys="select id from no_such_table") == []
