"""The batch files of the SQL spool pass: lines cut into batches as DuckDB streams them, and the verdicts.

DuckDB renders each candidate once (sql_spool.py) and streams, per row, its verdict and, for a line
sent, the line itself. Here the lines are cut into batches in the order they come, by the row pass's
rule (a new batch when its lane's current one is full by count, or the line would take it past the
byte limit), each run of lines is appended to its batch's file with one write, and every verdict is
written, with its line's batch and offset, to a Parquet file that the run's verdicts view reads.
The cutting and the writes run on a thread of their own, so that DuckDB renders the next rows
meanwhile; memory holds a few Arrow batches of rows. Rows that share another row's line (followers)
are written to a file of their own: their leader may come later in the stream, so they are placed
when it ends.
"""

from __future__ import annotations

import os
from bisect import bisect_right
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import accumulate
from typing import BinaryIO, Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dbt_claude_batch.base.errors import StateError

# What the stream carries of each row and the verdicts file does not keep.
_STREAM_ONLY = ("model", "key_json", "line", "row_pass")
_LANES = ("batch", "sync")
# Arrow batches whose writes may wait behind the one being written (memory: a few Arrow batches).
_QUEUED = 2


@dataclass
class Batch:
    """One batch's file as it fills: its index (numbered in the order first lines come), lane, lines, bytes
    and the first line's model."""

    index: int
    lane: str
    model: str
    n: int = 0
    n_bytes: int = 0


class BatchFiles:
    """Cuts the streamed lines into batch files and writes the verdicts (see the module docstring)."""

    def __init__(self, directory: str, chunk_path: Callable[[int], str], limit_requests: int, limit_bytes: int,
                 too_large: Callable[[str, int], Exception]):
        self.chunk_path = chunk_path
        self.limit_requests = limit_requests
        self.limit_bytes = limit_bytes
        self.too_large = too_large
        self.verdicts_path = os.path.join(directory, "verdicts.parquet")
        self.followers_path = os.path.join(directory, "verdicts-followers.parquet")
        self.placed_path = os.path.join(directory, "verdicts-followers-placed.parquet")  # see sql_spool.py
        self.batches: list[Batch] = []
        self.n_followers = 0
        self.sent_models: set[str] = set()
        self._current: dict[str, Batch] = {}
        self._full: list[Batch] = []  # batches no line goes to any more: their files close once written
        self._handles: dict[int, BinaryIO] = {}
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._schema: pa.Schema | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="dbt_claude_batch-spool")
        self._queued: deque[Future] = deque()

    def start(self, stream_schema: pa.Schema) -> None:
        """Open the verdicts file for a stream of this schema (a stream of no rows still leaves one)."""
        if self._schema is None:
            kept = [f for f in stream_schema if f.name not in _STREAM_ONLY]
            self._schema = pa.schema([*kept, pa.field("chunk", pa.int32()), pa.field("line_offset", pa.int64())])
            self._writers[self.verdicts_path] = self._writer(self.verdicts_path)

    def _writer(self, path: str) -> pq.ParquetWriter:
        # Read a few times per batch created, and removed with the run's directory: neither compressed
        # nor dictionary-encoded (hashes and ids are unique), which halves the time to write it.
        return pq.ParquetWriter(path, self._schema, compression="none", use_dictionary=["reason", "lane"])

    def add(self, rows: pa.RecordBatch) -> None:
        """Cut, write and record one Arrow batch of the stream (`start` first), on the writing thread while
        DuckDB renders the next; an error there (a line over the limit, a failed write) is raised by a
        later `add` or by `close`."""
        self._queue(self._add, rows)

    def _add(self, rows: pa.RecordBatch) -> None:
        n = rows.num_rows
        length = rows.column("line_length")
        sends = pc.is_valid(length)
        if n and pc.any(sends).as_py():
            too = pc.fill_null(pc.greater(length, self.limit_bytes), False)
            if pc.any(too).as_py():
                i = pc.index(too, True).as_py()
                raise self.too_large(rows.column("key_json")[i].as_py(), length[i].as_py())
            chunk, offset = self._place(rows, sends)
            self.sent_models.update(pc.unique(pc.filter(rows.column("model"), sends)).to_pylist())
        else:
            chunk, offset = pa.nulls(n, pa.int32()), pa.nulls(n, pa.int64())
        kept = [rows.column(f.name) for f in self._schema if f.name not in ("chunk", "line_offset")]
        verdicts = pa.record_batch([*kept, chunk, offset], schema=self._schema)
        followers = pc.is_valid(rows.column("dedup_of"))
        n_followers = pc.sum(followers).as_py() or 0
        tables = [(self.verdicts_path, verdicts)]
        if n_followers:
            self.n_followers += n_followers
            tables = [(self.verdicts_path, verdicts.filter(pc.invert(followers))),
                      (self.followers_path, verdicts.filter(followers))]
        self._writes(tables)

    def _queue(self, job: Callable, *args) -> None:
        """Run `job` on the writing thread, in order; wait while _QUEUED jobs are ahead of it (an error
        there is raised here)."""
        while len(self._queued) >= _QUEUED:
            self._queued.popleft().result()
        self._queued.append(self._thread.submit(job, *args))

    def _writes(self, tables: list[tuple[str, pa.RecordBatch]]) -> None:
        for path, verdicts in tables:
            if not verdicts.num_rows:
                continue
            if path not in self._writers:
                self._writers[path] = self._writer(path)
            self._writers[path].write_batch(verdicts)

    def _place(self, rows: pa.RecordBatch, sends: pa.Array) -> tuple[pa.Array, pa.Array]:
        """Each line sent: its batch, appended to that batch's file; returns (chunk, line_offset) per row."""
        length, lanes, models = rows.column("line_length"), rows.column("lane"), rows.column("model")
        opened: list[tuple[int, Batch]] = []
        per_lane = []
        for lane in _LANES:
            where = pc.indices_nonzero(pc.fill_null(pc.equal(lanes, lane), False))
            if len(where):
                sizes = length.take(where).to_pylist()
                per_lane.append((where, sizes, self._cut(lane, sizes, where, models, opened)))
        # Batches are numbered in the order their first line comes, across lanes, as the row pass numbers them.
        for _, batch in sorted(opened, key=lambda t: t[0]):
            batch.index = len(self.batches)
            self.batches.append(batch)
        lines = rows.column("line")
        if lines.type == pa.string_view():
            lines = lines.cast(pa.large_string())
        chunks, offsets, positions, appends = [], [], [], []
        for where, sizes, runs in per_lane:
            lane_lines = lines.take(where)
            for start, end, batch, at in runs:
                appends.append((batch.index, _contiguous(lane_lines.slice(start, end - start), sum(sizes[start:end]))))
                lengths = pa.array(sizes[start:end], pa.int64())
                offsets.append(pc.add(pc.subtract(pc.cumulative_sum(lengths), lengths), at))
                chunks.append(pc.fill_null(pa.nulls(end - start, pa.int32()), batch.index))
            positions.append(where)
        self._append(appends, [b.index for b in self._full])
        self._full.clear()
        chunk, offset = pa.concat_arrays(chunks), pa.concat_arrays(offsets)
        if len(positions) > 1:  # back into the stream's order
            order = pc.sort_indices(pa.concat_arrays(positions))
            chunk, offset = chunk.take(order), offset.take(order)
        n = rows.num_rows
        return (pc.replace_with_mask(pa.nulls(n, pa.int32()), sends, chunk),
                pc.replace_with_mask(pa.nulls(n, pa.int64()), sends, offset))

    def _cut(self, lane: str, sizes: list[int], where: pa.Array, models: pa.Array,
             opened: list[tuple[int, Batch]]) -> list[tuple[int, int, Batch, int]]:
        """Runs (start, end, batch, offset in its file) of the lane's lines `sizes`, in order; a batch opened
        goes to `opened` with the stream position of its first line."""
        total = list(accumulate(sizes))
        runs, start = [], 0
        while start < len(sizes):
            batch = self._current.get(lane)
            before = total[start - 1] if start else 0
            if batch is None or batch.n >= self.limit_requests or batch.n_bytes + sizes[start] > self.limit_bytes:
                first = where[start].as_py()
                batch = Batch(-1, lane, models[first].as_py())
                if lane in self._current:
                    self._full.append(self._current[lane])
                self._current[lane] = batch
                opened.append((first, batch))
            # as many lines as fit by count and by bytes (the first always does: no line is over the limit)
            end = min(start + self.limit_requests - batch.n,
                      bisect_right(total, before + self.limit_bytes - batch.n_bytes, lo=start))
            runs.append((start, end, batch, batch.n_bytes))
            batch.n += end - start
            batch.n_bytes += total[end - 1] - before
            start = end
        return runs

    def _append(self, appends: list[tuple[int, memoryview]], full: list[int]) -> None:
        """Append each run of lines to its batch's file, one write each; then close the files of `full`."""
        for index, data in appends:
            handle = self._handles.get(index)
            if handle is None:
                handle = self._handles[index] = open(self.chunk_path(index), "ab")
            handle.write(data)
        for index in full:
            handle = self._handles.pop(index, None)
            if handle is not None:
                handle.close()

    def close(self) -> None:
        """Wait for the writes, close every file: the batch files and the verdicts are complete."""
        try:
            while self._queued:
                self._queued.popleft().result()
        finally:
            self._thread.shutdown(wait=True, cancel_futures=True)
            self._close_files()

    def _close_files(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def discard(self) -> None:
        """Close and remove everything written (a run that stops here sends nothing)."""
        self._thread.shutdown(wait=True, cancel_futures=True)  # a write's own error is not the one to see
        self._queued.clear()
        self._close_files()
        paths = [self.chunk_path(b.index) for b in self.batches] + [self.verdicts_path, self.followers_path,
                                                                   self.placed_path]
        for path in paths:
            if os.path.exists(path):
                os.remove(path)

    def verdict_files(self) -> list[str]:
        """The verdicts file, and the followers' when any (sql_spool places them in `placed_path`)."""
        return [self.verdicts_path] + ([self.followers_path] if self.n_followers else [])


def _contiguous(lines: pa.Array, expected: int) -> memoryview:
    """The bytes of `lines` (one buffer): what one write appends. Their size must be `expected`, the sum
    of the sizes the verdicts record, which is what reads them back (spool.lines_of)."""
    n = len(lines)
    width = pa.int32() if lines.type == pa.string() else pa.int64()
    bounds = pa.Array.from_buffers(width, n + 1, [None, lines.buffers()[1]], offset=lines.offset)
    first, last = bounds[0].as_py(), bounds[n].as_py()
    if last - first != expected:
        raise StateError(
            f"The lines of a batch came to {last - first} bytes where their sizes add up to {expected}: "
            "nothing was submitted; run again, and report it if it happens again."
        )
    return memoryview(lines.buffers()[2])[first:last]
