"""A first attempt's pending rows (pure DuckDB): planning.plan gives a model with no attempt a view of the
staged rows instead of a copy; the view must hold what the table would, column for column and type for type.

The table path is forced by a re-run filter that names no key (`false`): the same planning, no re-run.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings, strategies as st

from dbt_claude_batch.run import planning
from staging_builders import staged_items

rows = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c", None, "", "{{ x }}"]),
              st.sampled_from([None, "claude-haiku-4-5", "claude-sonnet-4-5"])),
    min_size=1, max_size=30)


def _pending(source_rows, rerun_filter: str | None) -> tuple[bool, list, list]:
    con, state = staged_items(source_rows)
    n = planning.plan(state, 3, False, 4096, 64, can_split=False, rerun_filter=rerun_filter)
    view = planning.pending_is_view(state)
    described = [r[:2] for r in con.execute(f"describe {planning.PENDING}").fetchall()]
    found = con.execute(f"select * from {planning.PENDING} order by __cb_ordinal").fetchall()
    assert n == len(found)
    planning.drop_pending(state)
    assert not con.execute(f"select count(*) from duckdb_tables() where table_name in "
                           f"('{planning.PENDING}', '{planning.GROUPS}')").fetchall()[0][0]
    assert not planning.pending_is_view(state)
    con.close()
    return view, described, found


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows)
def test_the_view_of_a_first_attempt_holds_what_the_table_would(source_rows):
    view, view_columns, view_rows = _pending(source_rows, None)
    table, table_columns, table_rows = _pending(source_rows, "false")
    assert (view, table) == (True, False)
    assert view_columns == table_columns
    assert view_rows == table_rows


def test_a_model_with_an_attempt_gets_the_table():
    con, state = staged_items([("a", None)])
    planning.plan(state, 3, False, 4096, 64, can_split=False)
    assert planning.pending_is_view(state)
    state.run(f"insert into {state.table('submissions')} (submission_id, model_id, status, n_requests, n_bytes, "
              "intent_at) values ('s1', 'db.main.items_batch', 'submitted', 1, 1, now())")
    state.run(f"insert into {state.table('requests')} (submission_id, model_id, custom_id, key_json, input_hash, "
              "request_hash, attempt) values ('s1', 'db.main.items_batch', '0', '{\"id\": 0}', 'i', 'h', 1)")
    planning.plan(state, 3, False, 4096, 64, can_split=False)
    assert not planning.pending_is_view(state)  # the key is in flight: planning reads its history
    assert con.execute(f"select count(*) from {planning.PENDING}").fetchall()[0][0] == 0
