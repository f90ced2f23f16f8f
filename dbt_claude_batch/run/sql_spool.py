"""The spool pass done by DuckDB, for runs where SQL renders every candidate row.

It gives the verdicts, the request bytes and the batches the row pass of spool.py gives (a test holds
the two to it), without a Python object per row. DuckDB renders each candidate's request twice and
never keeps its text: the first time for its hash and size, from which it judges the line against the
last attempt's request hash, lets identical requests share one line, prices it and cuts the batches
(the leaders of groups of identical inputs are rendered once more beforehand, a few rows, so that each
row is judged as it is rendered, with no table of rendered rows); the second time, only for the lines sent, streamed
to Python, which appends each Arrow batch of lines to its batch's file and records where each line
landed. Both renders join the candidates to the source with the hash table on the candidates
(`planning.source_probed`), _SLICE_ROWS of them at a time, so the source's text streams past a table
of bounded size instead of being held. Holding every line (hundreds of bytes each) until the batches
were cut spilled gigabytes to disk at millions of rows. The second render must give
what the first measured (its length and a 64-bit hash of it), or nothing is sent. Python also cuts
batches where the byte limit could bind before the count limit, reading line sizes as a stream. A run
with any row SQL cannot build exactly (a control character DuckDB escapes its own way, an escalated
`max_tokens`) takes the row pass instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Mapping

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dbt_claude_batch.base.errors import SourceDataError, StateError
from dbt_claude_batch.base.identifiers import literal
from dbt_claude_batch.run.planning import PENDING, RENDERED, source_probed
from dbt_claude_batch.base.pricing import list_price
from dbt_claude_batch.base.prompts import blank_sql, empty_prompt_message_sql

_LEADERS = "cb_spool_leaders"
_LINES = "cb_spool_lines"
_STARTS = "cb_chunk_starts"
_POS = "cb_spool_positions"
_CUT = "cb_spool_cut"
_STREAM_ROWS = 100_000
_WRITE_ROWS = 25_000
# Candidates joined to the source at a time (both renders): the join's hash table holds this many
# pending rows, well under a 1GB memory_limit, and each slice reads the source once more.
_SLICE_ROWS = 2_000_000
# A request line: '{"custom_id":"' || custom_id || '","params":' || params || '}', and a newline.
_LINE_OPEN, _LINE_MID, _LINE_CLOSE = '{"custom_id":"', '","params":', "}"
_LINE_FIXED = len(_LINE_OPEN) + len(_LINE_MID) + len(_LINE_CLOSE) + 1
# What the first render keeps of a line and the second must find again: its size, and a 64-bit hash.
_SIZE_SQL = f"strlen(__cb_custom_id) + strlen(__cb_params) + {_LINE_FIXED}"
_CHECK_SQL = "hash(__cb_params)"


@dataclass
class Rendered:
    """What the pass made: per batch (index, lane, lines, bytes, first model), each in `chunk_path(index)`."""

    chunks: list[tuple[int, str, int, int, str]]
    n_deduplicated: int
    unpriced_models: set[str]


def build_in_sql(state, settings, candidates: Callable[[str], str], chunk_path: Callable[[int], str],
                 limit_requests: int, limit_bytes: int, fixed_tokens: int) -> Rendered | None:
    """Render the pending rows into one spool file per batch and the verdicts table.

    `candidates(rows)` is the query of the rows of `rows` (a query over the pending table) joined to
    their source columns, with `__cb_prompt`, `__cb_params` and `__cb_request_hash`. Returns None,
    having written nothing, when some row needs the row pass.
    """
    base = int(settings.max_tokens)

    def rows(pending: str) -> str:  # what judging needs of each row of `pending`, rendered
        return f"""select __cb_ordinal, __cb_custom_id, __cb_key_json, __cb_reason, __cb_leader, __cb_group_size,
               __cb_rerun, __cb_prev_request_hash, __cb_would_retry, __cb_model, __cb_request_hash, __cb_input_hash,
               {blank_sql('__cb_prompt')} as __cb_blank,
               coalesce(nullif(__cb_max_tokens, 0), {base}) as __cb_max_tokens,
               (strlen(__cb_prompt) + 3) // 4 as __cb_prompt_tokens,
               {_SIZE_SQL} as __cb_size,
               {_CHECK_SQL} as __cb_check
        from ({candidates(pending)})"""

    try:
        prices = _judge(state, settings, fixed_tokens, rows, base)
        if state.run(f"select exists (select 1 from {_LINES} where row_pass)")[0][0]:
            return None
        _check_sizes(state, settings, limit_bytes)
        _cut(state, limit_requests, limit_bytes)
        return _write(state, prices, candidates, chunk_path)
    finally:
        for table in (_LEADERS, _LINES, _POS, _STARTS, _CUT):
            state.run(f"drop table if exists {table}")


def _reason_sql(request_hash: str) -> str:
    """A candidate's reason once its request is rendered: `maybe_changed` becomes `changed` when the
    request differs from the last attempt's, else `retry` when that attempt's failure is worth
    another try, else `unchanged` (not sent)."""
    return (f"case when __cb_reason <> 'maybe_changed' then __cb_reason "
            f"when {request_hash} is distinct from __cb_prev_request_hash then 'changed' "
            "when __cb_would_retry then 'retry' else 'unchanged' end")


def _judge(state, settings, fixed_tokens: int, rows: Callable[[str], str], base: int) -> dict[str, tuple[float, float]]:
    """One row per candidate: its verdict, and the size of the line it sends (streamed: no sort), in one
    render of the pending rows; `row_pass` marks a row SQL cannot build exactly (see build_in_sql).
    Returns the list prices of the models that have one."""
    models = [m for (m,) in state.run(f"select distinct __cb_model from {PENDING}")]
    prices = {m: p for m in models if (p := list_price(m, settings.prices)) is not None}
    cost = ("case __cb_model " + " ".join(
        f"when {literal(m)} then (((__cb_prompt_tokens + {int(fixed_tokens)}) * {float(p[0])!r}::double)"
        f" + (__cb_max_tokens * {float(p[1])!r}::double)) / 1e6" for m, p in prices.items())
        + " else 0.0 end") if prices else "0.0"
    dedupe = "true" if settings.dedupe else "false"
    # a blank prompt is not sent: the row is a failure of kind empty_prompt (see spool.py)
    own = f"case when __cb_blank then 'empty_prompt' else {_reason_sql('__cb_request_hash')} end"
    # The leaders of groups of identical inputs, rendered on their own (few rows) so that every row
    # is judged in one pass, without a table of the rendered rows beside the verdicts.
    with source_probed(state):
        state.run(
            f"""create or replace temp table {_LEADERS} as
            select __cb_custom_id, {own} as __cb_own_reason, __cb_request_hash
            from ({rows(f"select * from {PENDING} where __cb_group_size > 1 and __cb_leader = __cb_custom_id")})"""
        )
        for i, (low, high) in enumerate(_slices(state)):
            pending = f"select * from {PENDING} where __cb_ordinal between {low} and {high}"
            into = f"create or replace temp table {_LINES} as" if i == 0 else f"insert into {_LINES}"
            _lines(state, into, rows(pending), own, dedupe, cost, base)
    state.run(f"drop table {_LEADERS}")
    return prices


def _slices(state) -> list[tuple[int, int]]:
    """Ordinal ranges of at most _SLICE_ROWS pending rows each, in order (one, empty, when none)."""
    low, high = state.run(f"select min(__cb_ordinal), max(__cb_ordinal) from {PENDING}")[0]
    if low is None:
        return [(0, -1)]
    return [(start, min(start + _SLICE_ROWS - 1, high)) for start in range(low, high + 1, _SLICE_ROWS)]


def _lines(state, into: str, rendered: str, own: str, dedupe: str, cost: str, base: int) -> None:
    state.run(
        f"""{into}
        with own as (select *, {own} as __cb_own_reason from ({rendered})),
        -- a row shares the line of its group's first row when that row sends one
        shares as (
            select o.*, coalesce({dedupe} and o.__cb_leader <> o.__cb_custom_id
                                 and l.__cb_own_reason not in ('unchanged', 'empty_prompt'), false) as __cb_shared,
                   l.__cb_request_hash as __cb_leader_hash
            from own o left join {_LEADERS} l on l.__cb_custom_id = o.__cb_leader),
        judged as (
            select *, case when __cb_shared then {_reason_sql("__cb_leader_hash")} else __cb_own_reason end
                          as __cb_final
            from shares),
        sized as (
            select *, __cb_final not in ('unchanged', 'empty_prompt') as include,
                   __cb_final not in ('unchanged', 'empty_prompt') and not __cb_shared as sends,
                   case when __cb_rerun then 'sync' else 'batch' end as own_lane,
                   __cb_size as size
            from judged)
        select __cb_ordinal as ordinal, __cb_custom_id as custom_id,
               case when __cb_final = 'empty_prompt' then 'empty_prompt:' || __cb_input_hash
                    when __cb_shared then __cb_leader_hash else __cb_request_hash end as request_hash,
               case when include then __cb_max_tokens end as max_tokens,
               case when include and __cb_shared then __cb_leader end as dedup_of,
               __cb_final as reason, include, sends, __cb_model as model, __cb_key_json as key_json,
               __cb_group_size > 1 as grouped,
               case when sends then own_lane end as lane,
               case when sends then {cost} else 0.0 end as cost,
               case when sends then size end as line_length,
               case when sends then __cb_check end as line_check,
               case when __cb_final = 'empty_prompt' then {empty_prompt_message_sql('__cb_key_json')} end as error,
               __cb_size is null or __cb_max_tokens <> {int(base)} as row_pass
        from sized"""
    )


def _check_sizes(state, settings, limit_bytes: int) -> None:
    over = state.run(f"select key_json, line_length from {_LINES} where sends and line_length > {int(limit_bytes)} "
                     "order by ordinal limit 1")
    if over:
        raise request_too_large(*over[0], settings.max_batch_bytes)


def request_too_large(key_json: str, size: int, max_batch_bytes: int) -> SourceDataError:
    """The error for a request line too large for any batch (both passes raise it, before any create)."""
    return SourceDataError(
        f"The request for key {key_json} is {size} bytes, over the batch limit of {max_batch_bytes} bytes "
        "(`max_batch_bytes`): shorten that row's text (or set `split_column`); nothing was submitted."
    )


def _cut(state, limit_requests: int, limit_bytes: int) -> None:
    """Number each lane's batches: a new one when the current one is full by count or by bytes.

    Only the lines sent, and only what cutting needs of them, are sorted and kept (`_CUT`: ordinal,
    lane, size, check, batch): sorting the verdicts' full rows spilled gigabytes at millions of rows."""
    state.run(
        f"""create or replace temp table {_POS} as
        select ordinal, lane, line_length, line_check, row_number() over (partition by lane order by ordinal) as pos
        from {_LINES} where sends"""
    )
    longest = state.run(f"select coalesce(max(line_length), 0) from {_POS}")[0][0]
    # When the count binds first, every batch but a lane's last holds exactly `limit_requests` lines.
    if longest * limit_requests > limit_bytes:
        starts = []
        for lane in ("batch", "sync"):
            n = size = 0
            local_index = -1
            reader = state.cursor.sql(
                f"select pos, line_length from {_POS} where lane = {literal(lane)} order by pos"
            ).to_arrow_reader(_STREAM_ROWS)
            for record_batch in reader:
                positions, sizes = record_batch.column(0).to_pylist(), record_batch.column(1).to_pylist()
                for pos, length in zip(positions, sizes):
                    if local_index < 0 or n >= limit_requests or size + length > limit_bytes:
                        local_index += 1
                        starts.append((lane, pos, local_index))
                        n = size = 0
                    n += 1
                    size += length
        state.run(f"create or replace temp table {_STARTS} (lane varchar, pos bigint, local_chunk bigint)")
        if starts:
            state.cursor.executemany(f"insert into {_STARTS} values (?, ?, ?)", starts)
        local, join = "c.local_chunk", f"asof left join {_STARTS} c on c.lane = p.lane and p.pos >= c.pos"
    else:
        local, join = f"(p.pos - 1) // {int(limit_requests)}", ""
    # Batches are numbered in the order their first line comes, across lanes, as the row pass does;
    # each is a file of its own (where a line lands is recorded as `_write_lines` writes it).
    state.run(
        f"""create or replace temp table {_CUT} as
        with located as (select p.ordinal, p.lane, p.line_length, p.line_check, {local} as local_chunk
                         from {_POS} p {join}),
        numbered as (select lane, local_chunk, (row_number() over (order by min(ordinal)) - 1)::integer as chunk
                     from located group by lane, local_chunk)
        select l.ordinal, l.lane, l.line_length, l.line_check, n.chunk
        from located l join numbered n on n.lane = l.lane and n.local_chunk = l.local_chunk"""
    )
    state.run(f"drop table {_POS}")


def _write(state, prices: Mapping[str, tuple[float, float]], candidates: Callable[[str], str],
           chunk_path: Callable[[int], str]) -> Rendered:
    expected = {index: (lane, n, int(n_bytes), model) for index, lane, n, n_bytes, model in state.run(
        f"""select c.chunk, c.lane, c.n, c.n_bytes, l.model
        from (select chunk, lane, count(*) as n, sum(line_length) as n_bytes, min(ordinal) as first_ordinal
              from {_CUT} group by chunk, lane) c
        join {_LINES} l on l.ordinal = c.first_ordinal order by c.chunk""")}
    offsets_path = os.path.join(os.path.dirname(chunk_path(0)), "line-offsets.parquet")
    try:
        written = _write_lines(state, candidates, chunk_path, offsets_path)
        for index, (lane, n, n_bytes, _model) in expected.items():
            if written.get(index) != (n, n_bytes):
                raise StateError(
                    f"The spool file of batch {index} got {written.get(index)} (lines, bytes) where {(n, n_bytes)} "
                    "were cut: nothing was submitted; run again, and report it if it happens again."
                )
        state.run(f"drop table {_CUT}")
        _load_rendered(state, offsets_path)
    finally:
        if os.path.exists(offsets_path):
            os.remove(offsets_path)
    sent_models = {m for (m,) in state.run(f"select distinct model from {_LINES} where sends")}
    return Rendered(
        chunks=[(index, lane, n, n_bytes, model) for index, (lane, n, n_bytes, model) in expected.items()],
        n_deduplicated=state.run(f"select count(*) from {_LINES} where dedup_of is not null")[0][0],
        unpriced_models=sent_models - set(prices),
    )


def _load_rendered(state, offsets_path: str) -> None:
    """The verdicts table: a row per candidate, each line sent where `_write_lines` put it (its batch and
    offset come from `offsets_path`; a row sharing a line takes its leader's batch and lane)."""
    placed = f"read_parquet({literal(offsets_path)})"
    state.run(
        f"""create or replace temp table {RENDERED} as
        select l.ordinal, l.custom_id, 1::integer as part, 1::integer as parts, l.request_hash,
               l.max_tokens::integer as max_tokens, l.dedup_of, l.reason,
               coalesce(o.chunk, d.chunk)::integer as chunk, l.include,
               case when l.include then coalesce(l.lane, d.lane) end as lane, l.cost::double as cost,
               o.line_offset::bigint as line_offset, l.line_length::bigint as line_length, l.error,
               null::varchar as part_hash, null::integer as first_page, null::integer as last_page
        from {_LINES} l
        left join (select g.custom_id, p.chunk, g.lane from {_LINES} g join {placed} p on p.ordinal = g.ordinal
                   where g.grouped and g.sends) d on d.custom_id = l.dedup_of
        left join {placed} o on o.ordinal = l.ordinal"""
    )


def _write_lines(state, candidates: Callable[[str], str], chunk_path: Callable[[int], str],
                 offsets_path: str) -> dict[int, tuple[int, int]]:
    """Render the lines sent again and append each to its batch's file, in the order DuckDB streams them;
    where each landed goes to `offsets_path` (ordinal, chunk, line_offset). Returns (lines, bytes) per batch."""
    def query(low: int, high: int) -> str:
        sent = (f"select p.*, c.chunk as __cb_chunk, c.line_length as __cb_size, c.line_check as __cb_check "
                f"from {PENDING} p join {_CUT} c on c.ordinal = p.__cb_ordinal "
                f"where p.__cb_ordinal between {low} and {high}")
        return (f"select __cb_chunk::integer as chunk, __cb_ordinal::bigint as ordinal, __cb_key_json as key_json, "
                f"{literal(_LINE_OPEN)} || __cb_custom_id || {literal(_LINE_MID)} || __cb_params || "
                f"{literal(_LINE_CLOSE)} || chr(10) as line, "
                f"{_SIZE_SQL} = __cb_size and {_CHECK_SQL} = __cb_check as same "
                f"from ({candidates(sent)})")

    files: dict[int, object] = {}
    written: dict[int, tuple[int, int]] = {}
    schema = pa.schema([("ordinal", pa.int64()), ("chunk", pa.int32()), ("line_offset", pa.int64())])
    pool = pa.default_memory_pool()

    def append(record_batch: pa.RecordBatch, offsets: pq.ParquetWriter) -> None:
        if not pc.all(record_batch.column("same")).as_py():
            changed = pc.filter(record_batch.column("key_json"), pc.invert(record_batch.column("same")))
            raise SourceDataError(
                f"The source changed while this run rendered its requests (the request for key "
                f"{changed[0].as_py()} came out different the second time): run again once nothing "
                "writes to the source during the run; nothing was submitted."
            )
        # Grouped by batch: each group's lines are one contiguous buffer, written with one call.
        order = pc.sort_indices(record_batch.column("chunk"))
        chunks, ordinals = record_batch.column("chunk").take(order), record_batch.column("ordinal").take(order)
        lines = record_batch.column("line").take(order)
        if lines.type == pa.string_view():
            lines = lines.cast(pa.large_string())
        width = pa.int32() if lines.type == pa.string() else pa.int64()
        runs = pc.run_end_encode(chunks)
        start, landed = 0, []
        for index, end in zip(runs.values.to_pylist(), runs.run_ends.to_pylist()):
            n = end - start
            group = lines.slice(start, n)
            handle = files.get(index)
            if handle is None:
                handle = files[index] = open(chunk_path(index), "wb")
            at = handle.tell()
            lengths = pc.cast(pc.binary_length(group), pa.int64())
            landed.append(pc.add(pc.subtract(pc.cumulative_sum(lengths), lengths), at))
            bounds = pa.Array.from_buffers(width, n + 1, [None, group.buffers()[1]], offset=group.offset)
            first, last = bounds[0].as_py(), bounds[n].as_py()
            handle.write(memoryview(group.buffers()[2])[first:last])
            lines_so_far, bytes_so_far = written.get(index, (0, 0))
            written[index] = (lines_so_far + n, bytes_so_far + last - first)
            start += n
        offsets.write_batch(pa.record_batch([ordinals, chunks, pa.concat_arrays(landed)], schema=schema))

    try:
        with source_probed(state), pq.ParquetWriter(offsets_path, schema) as offsets:
            for low, high in _slices(state):
                reader = state.cursor.sql(query(low, high)).to_arrow_reader(_WRITE_ROWS)
                try:
                    for record_batch in reader:
                        append(record_batch, offsets)
                        del record_batch
                        pool.release_unused()  # Arrow's allocator keeps freed batches: RSS beside DuckDB's limit
                finally:
                    reader.close()  # before anything else runs on the cursor, the setting's restore included
    finally:
        for handle in files.values():
            handle.close()
    return written
