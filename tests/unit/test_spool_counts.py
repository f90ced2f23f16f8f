"""spool_files.Spool.refresh_counts: after answers reused from state, the counts the run logs are of what is sent."""

from __future__ import annotations

import duckdb

from dbt_claude_batch.run.planning import RENDERED
from dbt_claude_batch.run.spool_files import Chunk, Spool
from dbt_claude_batch.state.state import State


def test_rows_sharing_a_line_answered_from_state_no_longer_count_as_sharing():
    con = duckdb.connect()
    state = State(con, "dbt_claude_batch", "main.m")
    # Row 1 sends a line that rows 2-5 share; rows 2-5 were then answered from state (include false), and
    # row 6 sends its own line.
    con.execute(f"create temp table {RENDERED} as select * from (values "
                "(1, 0, true, null, 100), (2, 0, false, '1', null), (3, 0, false, '1', null), "
                "(4, 0, false, '1', null), (5, 0, false, '1', null), (6, 0, true, null, 80)) "
                "t(ordinal, chunk, include, dedup_of, line_length)")
    spool = Spool("/nonexistent", state, chunks=[Chunk(0, "batch", "/nonexistent/0.jsonl", n=2, n_bytes=180)],
                  n_lines=2, n_deduplicated=4)
    spool.refresh_counts()
    assert (spool.n_lines, spool.n_deduplicated) == (2, 0)
