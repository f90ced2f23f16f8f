"""The spool on disk: request lines in JSONL files, cut into chunks that each fit one batch.

A chunk is a run of lines of one file (the row pass writes one file per lane, the SQL pass one per
batch); a create's body is built from its raw bytes, never from Python objects per request. Every
batch carries one marker request that names its submission (see submission.py).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from dbt_claude_batch.base.keys import MARKER_PREFIX
from dbt_claude_batch.run import uploads
from dbt_claude_batch.run.planning import RENDERED
from dbt_claude_batch.state.state import State


@dataclass
class Chunk:
    """A run of request lines that fits one batch (or one synchronous pass), and where they are in the spool."""

    index: int
    lane: str  # "batch" (routed by mode) or "sync" (re-run keys: always synchronous)
    path: str
    n: int = 0
    n_bytes: int = 0
    offset: int = 0
    length: int = 0
    model: str = ""  # the first line's model, also used by the marker request
    filtered: bool = False  # some lines were answered from state and are left out when sending


def marker_id(submission_id: str) -> str:
    """The custom_id of a submission's marker request: it names the submission, and nothing else."""
    return MARKER_PREFIX + submission_id.replace("-", "")


def marker_line(custom_id: str, model: str) -> bytes:
    """The marker request: one line, ~10 input tokens and 1 output token."""
    params = {"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": "ok"}]}
    return json.dumps({"custom_id": custom_id, "params": params}, separators=(",", ":")).encode()


@dataclass
class Spool:
    directory: str
    state: State | None = None
    chunks: list[Chunk] = field(default_factory=list)
    unpriced_models: set[str] = field(default_factory=set)
    n_lines: int = 0
    n_deduplicated: int = 0
    n_template_errors: int = 0
    uploads: uploads.Stash | None = None  # contents for the Files API (`upload: files_api`), see uploads.py
    file_ids: dict[str, str] = field(default_factory=dict)  # their ids once uploaded: swapped in as lines are read

    def lane_path(self, lane: str) -> str:
        return os.path.join(self.directory, f"requests-{lane}.jsonl")

    def chunk_path(self, index: int) -> str:
        """A batch's own spool file (the SQL pass writes one per batch; the row pass one per lane)."""
        return os.path.join(self.directory, f"requests-batch-{index}.jsonl")

    @property
    def verdicts(self) -> str:
        return os.path.join(self.directory, "verdicts.csv")

    def lines_of(self, chunk: Chunk) -> bytes:
        """The chunk's request lines, without those answered from state (see local_outcomes.py)."""
        with open(chunk.path, "rb") as spool:
            spool.seek(chunk.offset)
            data = spool.read(chunk.length)
        if chunk.filtered:
            ranges = self.state.run(
                f"select line_offset, line_length from {RENDERED} where chunk = ? and include and dedup_of is null "
                "order by line_offset", [chunk.index])
            data = b"".join(data[o - chunk.offset:o - chunk.offset + n] for o, n in ranges)
        return uploads.swap(data, self.file_ids) if self.uploads is not None else data

    def body_of(self, chunk: Chunk, marker: bytes | None = None) -> bytes:
        """The create body for a chunk, built from raw bytes (no Python objects per request)."""
        lines = self.lines_of(chunk)[:-1].replace(b"\n", b",")
        # One join: a batch body is up to 256 MB, and every concatenation would copy it again.
        return b"".join([b'{"requests":[', lines, b"," if lines and marker is not None else b"", marker or b"", b"]}"])

    def list_price_usd(self) -> dict[str, float]:
        """Estimated list-price cost per lane of the lines still to send."""
        return dict(self.state.run(
            f"select lane, sum(cost) from {RENDERED} where include and dedup_of is null group by lane"))

    def chunk_cost(self, chunk: Chunk) -> float:
        """Estimated list-price cost of the lines a chunk still sends."""
        return float(self.state.run(
            f"select coalesce(sum(cost), 0) from {RENDERED} where chunk = ? and include and dedup_of is null",
            [chunk.index])[0][0])

    def refresh_counts(self) -> None:
        """After some lines were answered from state: recount lines per chunk (and the rows sharing one),
        drop empty chunks."""
        rows = dict((c, (n, b)) for c, n, b in self.state.run(
            f"select chunk, count(*), sum(line_length) from {RENDERED} where include and dedup_of is null "
            "group by chunk"))
        for chunk in self.chunks:
            n, n_bytes = rows.get(chunk.index, (0, 0))
            if n != chunk.n:
                chunk.n, chunk.n_bytes, chunk.filtered = n, int(n_bytes), True
        self.chunks = [c for c in self.chunks if c.n]
        self.n_lines = sum(c.n for c in self.chunks)
        self.n_deduplicated = self.state.run(
            f"select count(distinct ordinal) from {RENDERED} where include and dedup_of is not null")[0][0]
