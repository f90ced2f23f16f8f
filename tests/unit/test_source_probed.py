"""planning.source_probed (pure DuckDB): the join of the candidates back to the source builds its hash table
on the candidates, so the source's text streams past it; the connection's setting is restored after.

Without it DuckDB builds on the source when both sides have as many rows (at 10M rows that held every
prompt's text, and spilled gigabytes to disk): the first assertion holds that this test can fail.
"""

from __future__ import annotations

import json

import duckdb
import pytest

from dbt_claude_batch.run import planning
from dbt_claude_batch.state.state import State


@pytest.fixture
def state():
    con = duckdb.connect()
    con.execute("create table items as select i as id, repeat('x', 300) || i as body from range(1000) t(i)")
    # as wide as the pending rows are (hashes, key JSON), with as many rows as the source
    con.execute("""create temp table cb_pending as select i::varchar as __cb_custom_id, i as __cb_ordinal,
                   md5(i::varchar) as a, md5(i::varchar || 'b') as b, '{"id":' || i || '}' as k
                   from range(1000) t(i)""")
    yield State(con, "dbt_claude_batch", "db.main.items_batch")
    con.close()


def _built_on(state: State) -> str:
    query = planning.candidate_rows_sql("select * from items", ["id"], ["body"], "select * from cb_pending",
                                        ordered=False)
    plan = json.loads(state.cursor.execute(f"explain (format json) {query}").fetchall()[0][1])

    def join(node):
        if node.get("name") == "HASH_JOIN":
            return node
        return next((found for child in node.get("children", []) if (found := join(child))), None)

    build = json.dumps(join(plan[0])["children"][1])
    return "cb_pending" if "cb_pending" in build else "items" if "items" in build else build


def test_the_hash_table_is_built_on_the_candidates_only_under_source_probed(state):
    assert _built_on(state) == "items"
    with planning.source_probed(state):
        assert _built_on(state) == "cb_pending"
    assert _built_on(state) == "items"


def test_the_connections_own_disabled_optimizers_are_kept_and_restored(state):
    state.run("set disabled_optimizers = 'top_n'")
    with planning.source_probed(state):
        (inside,) = state.run("select current_setting('disabled_optimizers')")[0]
        assert set(inside.split(",")) == {"top_n", "build_side_probe_side"}
    assert state.run("select current_setting('disabled_optimizers')")[0][0] == "top_n"
    with pytest.raises(duckdb.Error), planning.source_probed(state):
        state.run("select * from no_such_table")
    assert state.run("select current_setting('disabled_optimizers')")[0][0] == "top_n"
