"""The source digest of a run reads the source beside the run's other work, and never outlives the run."""

from __future__ import annotations

import threading

import duckdb
import pyarrow as pa
import pytest

from dbt_claude_batch.run.planning import SourceDigest, source_digest

SOURCE = "select * from items"


@pytest.fixture
def con():
    con = duckdb.connect()
    con.execute("create table items as select i as id, 'body ' || i as body from range(1000) t(i)")
    yield con
    con.close()


def _gated_source(gate: threading.Event, seen: list[bool]):
    """A connection whose table `gated` yields its rows only once `gate` is set (or 30 s passed)."""

    def batches():
        seen.append(gate.wait(timeout=30))
        yield pa.record_batch({"id": [1, 2], "body": ["a", "b"]})

    con = duckdb.connect()
    con.register("gated", pa.RecordBatchReader.from_batches(
        pa.schema([("id", pa.int64()), ("body", pa.string())]), batches()))
    return con


def test_the_digest_is_the_one_computed_in_line_and_sees_a_changed_row(con):
    with SourceDigest(con.cursor(), SOURCE, ["id"], ["body"], None, "seed") as job:
        before = job.result()
    assert before == source_digest(con.cursor(), SOURCE, ["id"], ["body"], None, "seed")
    assert before[1] == 1000
    con.execute("update items set body = 'changed' where id = 500")
    with SourceDigest(con.cursor(), SOURCE, ["id"], ["body"], None, "seed") as job:
        assert job.result()[0] != before[0]


def test_the_caller_goes_on_while_the_source_is_read():
    caller_went_on, seen = threading.Event(), []
    # Were the source read in the constructor, nothing would set the event before the read timed out.
    with SourceDigest(_gated_source(caller_went_on, seen), "select * from gated", ["id"], ["body"], None, "s") as job:
        caller_went_on.set()
        assert job.result()[1] == 2
    assert seen == [True]


def test_an_error_in_the_scan_is_raised_by_result(con):
    with SourceDigest(con.cursor(), "select * from no_such_table", ["id"], ["body"], None, "s") as job:
        with pytest.raises(duckdb.CatalogException, match="no_such_table"):
            job.result()


def test_leaving_the_block_by_an_error_waits_for_the_scan_and_closes_its_cursor():
    release, seen = threading.Event(), []
    cursor = _gated_source(release, seen)
    with pytest.raises(RuntimeError, match="the run failed"):
        with SourceDigest(cursor, "select * from gated", ["id"], ["body"], None, "s"):
            release.set()
            raise RuntimeError("the run failed before it asked for the digest")
    assert seen == [True]
    assert not any(t.name.startswith("dbt_claude_batch-digest") for t in threading.enumerate())
    with pytest.raises(duckdb.ConnectionException):
        cursor.execute("select 1")
