"""batch_files cuts a stream of lines into batches as the row pass cuts them, whatever the stream's
Arrow batches are (pure: no DuckDB)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings, strategies as st

from dbt_claude_batch.run.batch_files import BatchFiles


def _reference(rows, limit_requests, limit_bytes):
    """The row pass's rule (row_pass.RowPass.append), line by line: (chunk, offset) per row, and the batches."""
    current, chunks, placed, offsets = {}, [], [], {}
    for lane, size in rows:
        if lane is None:
            placed.append((None, None))
            continue
        chunk = current.get(lane)
        if chunk is None or chunk["n"] >= limit_requests or chunk["bytes"] + size > limit_bytes:
            chunk = current[lane] = {"index": len(chunks), "lane": lane, "n": 0, "bytes": 0}
            chunks.append(chunk)
        placed.append((chunk["index"], offsets.get(chunk["index"], 0)))
        offsets[chunk["index"]] = offsets.get(chunk["index"], 0) + size
        chunk["n"] += 1
        chunk["bytes"] += size
    return placed, [(c["index"], c["lane"], c["n"], c["bytes"]) for c in chunks]


def _record_batch(rows, start):
    lines = [None if lane is None else f"{start + i:06d}".ljust(size - 1, "x") + "\n"
             for i, (lane, size) in enumerate(rows)]
    return pa.record_batch({
        "ordinal": pa.array(range(start, start + len(rows)), pa.int64()),
        "custom_id": pa.array([str(start + i) for i in range(len(rows))]),
        "dedup_of": pa.nulls(len(rows), pa.string()),
        "lane": pa.array([lane for lane, _ in rows], pa.string()),
        "line_length": pa.array([None if lane is None else size for lane, size in rows], pa.int64()),
        "model": pa.array(["m"] * len(rows)),
        "key_json": pa.array(["{}"] * len(rows)),
        "line": pa.array(lines, pa.string()),
    })


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from(["batch", "batch", "sync", None]), st.integers(8, 40)),
                     max_size=60),
       cuts=st.lists(st.integers(1, 12), min_size=1, max_size=8),
       limit_requests=st.integers(1, 6), limit_bytes=st.integers(40, 120))
def test_the_stream_is_cut_as_the_row_pass_cuts_it(tmp_path_factory, rows, cuts, limit_requests, limit_bytes):
    directory = tmp_path_factory.mktemp("files")
    files = BatchFiles(str(directory), lambda i: str(directory / f"b{i}.jsonl"), limit_requests, limit_bytes,
                       lambda key, size: AssertionError("no line is over the limit here"))
    start, i = 0, 0
    while start < len(rows) or start == 0:
        part = rows[start:start + cuts[i % len(cuts)]]
        record_batch = _record_batch(part, start)
        files.start(record_batch.schema)
        files.add(record_batch)
        start, i = start + len(part), i + 1
        if not part:
            break
    files.close()

    placed, batches = _reference(rows, limit_requests, limit_bytes)
    assert [(b.index, b.lane, b.n, b.n_bytes) for b in files.batches] == batches
    written = pq.read_table(files.verdicts_path)
    assert list(zip(written.column("chunk").to_pylist(), written.column("line_offset").to_pylist())) == placed
    for ordinal, (chunk, offset), (lane, size) in zip(range(len(rows)), placed, rows):
        if chunk is not None:
            with open(directory / f"b{chunk}.jsonl", "rb") as f:
                f.seek(offset)
                assert f.read(size) == (f"{ordinal:06d}".ljust(size - 1, "x") + "\n").encode()
    for index, _, _, n_bytes in batches:
        assert (directory / f"b{index}.jsonl").stat().st_size == n_bytes
