"""The spool pass done by DuckDB, for runs where SQL renders every candidate row.

It gives the verdicts, the request bytes and the batches the row pass of spool.py gives (a test holds
the two to it), without a Python object per row: DuckDB builds each line, judges it against the last
attempt's request hash, lets identical requests share one line, prices it and numbers it, then
writes each batch's lines to a file of its own with COPY, one batch at a time, so the join and the
sort behind each file stay the size of a batch however large the run. Python only cuts batches where
the byte limit could bind before the count limit, reading line sizes as a stream. A run with any row
SQL cannot build exactly (a control character DuckDB escapes its own way, an escalated `max_tokens`)
takes the row pass instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

from dbt_claude_batch.base.errors import SourceDataError
from dbt_claude_batch.base.identifiers import literal
from dbt_claude_batch.run.planning import RENDERED
from dbt_claude_batch.base.pricing import list_price
from dbt_claude_batch.base.prompts import blank_sql, empty_prompt_message_sql

_ROWS = "cb_spool_rows"
_LINES = "cb_spool_lines"
_STARTS = "cb_chunk_starts"
_CUT = "cb_spool_cut"
_STREAM_ROWS = 100_000


@dataclass
class Rendered:
    """What the pass made: per batch (index, lane, lines, bytes, first model), each in `chunk_path(index)`."""

    chunks: list[tuple[int, str, int, int, str]]
    n_deduplicated: int
    unpriced_models: set[str]


def build_in_sql(state, settings, rows_sql: str, chunk_path: Callable[[int], str], limit_requests: int,
                 limit_bytes: int, fixed_tokens: int) -> Rendered | None:
    """Render `rows_sql` (candidates with `__cb_params`) into one spool file per batch and the verdicts table.

    Returns None, having written nothing, when some row needs the row pass.
    """
    base = int(settings.max_tokens)
    state.run(
        f"""create or replace temp table {_ROWS} as
        select __cb_ordinal, __cb_custom_id, __cb_key_json, __cb_reason, __cb_leader, __cb_group_size, __cb_rerun,
               __cb_prev_request_hash, __cb_would_retry, __cb_model, __cb_request_hash, __cb_input_hash,
               {blank_sql('__cb_prompt')} as __cb_blank,
               coalesce(nullif(__cb_max_tokens, 0), {base}) as __cb_max_tokens,
               (strlen(__cb_prompt) + 3) // 4 as __cb_prompt_tokens,
               '{{"custom_id":"' || __cb_custom_id || '","params":' || __cb_params || '}}' as __cb_line
        from ({rows_sql})"""
    )
    if state.run(f"select count(*) from {_ROWS} where __cb_line is null or __cb_max_tokens <> {base}")[0][0]:
        state.run(f"drop table {_ROWS}")
        return None
    try:
        prices = _judge(state, settings, fixed_tokens)
        _check_sizes(state, settings, limit_bytes)
        _cut(state, limit_requests, limit_bytes)
        # Each of these is a row per candidate: dropped as soon as the next has what it needs, so that
        # at millions of rows DuckDB does not keep them all (spilled to disk) until the pass ends.
        state.run(f"drop table {_LINES}")
        return _write(state, prices, chunk_path)
    finally:
        for table in (_ROWS, _LINES, _STARTS, _CUT):
            state.run(f"drop table if exists {table}")


def _reason_sql(request_hash: str) -> str:
    """A candidate's reason once its request is rendered: `maybe_changed` becomes `changed` when the
    request differs from the last attempt's, else `retry` when that attempt's failure is worth
    another try, else `unchanged` (not sent)."""
    return (f"case when __cb_reason <> 'maybe_changed' then __cb_reason "
            f"when {request_hash} is distinct from __cb_prev_request_hash then 'changed' "
            "when __cb_would_retry then 'retry' else 'unchanged' end")


def _judge(state, settings, fixed_tokens: int) -> dict[str, tuple[float, float]]:
    """One row per candidate: its verdict, and the size and place in its lane of the line it sends.
    Returns the list prices of the models that have one."""
    models = [m for (m,) in state.run(f"select distinct __cb_model from {_ROWS}")]
    prices = {m: p for m in models if (p := list_price(m, settings.prices)) is not None}
    cost = ("case __cb_model " + " ".join(
        f"when {literal(m)} then (((__cb_prompt_tokens + {int(fixed_tokens)}) * {float(p[0])!r}::double)"
        f" + (__cb_max_tokens * {float(p[1])!r}::double)) / 1e6" for m, p in prices.items())
        + " else 0.0 end") if prices else "0.0"
    dedupe = "true" if settings.dedupe else "false"
    state.run(
        f"""create or replace temp table {_LINES} as
        -- a blank prompt is not sent: the row is a failure of kind empty_prompt (see spool.py)
        with own as (select *, case when __cb_blank then 'empty_prompt' else {_reason_sql("__cb_request_hash")} end
                                   as __cb_own_reason from {_ROWS}),
        -- a row shares the line of its group's first row when that row sends one
        shares as (
            select o.*, coalesce({dedupe} and o.__cb_leader <> o.__cb_custom_id
                                 and l.__cb_own_reason not in ('unchanged', 'empty_prompt'), false) as __cb_shared,
                   l.__cb_request_hash as __cb_leader_hash
            from own o left join (select __cb_custom_id, __cb_own_reason, __cb_request_hash from own
                                  where __cb_group_size > 1) l on l.__cb_custom_id = o.__cb_leader),
        judged as (
            select *, case when __cb_shared then {_reason_sql("__cb_leader_hash")} else __cb_own_reason end
                          as __cb_final
            from shares),
        sized as (
            select *, __cb_final not in ('unchanged', 'empty_prompt') as include,
                   __cb_final not in ('unchanged', 'empty_prompt') and not __cb_shared as sends,
                   case when __cb_rerun then 'sync' else 'batch' end as own_lane,
                   strlen(__cb_line) + 1 as size
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
               case when sends then sum(size) over w - size end as lane_offset,
               case when sends then row_number() over w end as pos,
               case when __cb_final = 'empty_prompt' then {empty_prompt_message_sql('__cb_key_json')} end as error
        from sized
        window w as (partition by sends, own_lane order by __cb_ordinal
                     rows between unbounded preceding and current row)"""
    )
    return prices


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
    """Number each lane's batches: a new one when the current one is full by count or by bytes."""
    longest = state.run(f"select coalesce(max(line_length), 0) from {_LINES} where sends")[0][0]
    # When the count binds first, every batch but a lane's last holds exactly `limit_requests` lines.
    if longest * limit_requests > limit_bytes:
        starts = []
        for lane in ("batch", "sync"):
            n = size = 0
            local_index = -1
            reader = state.cursor.sql(
                f"select pos, line_length from {_LINES} where lane = {literal(lane)} order by pos"
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
    if longest * limit_requests <= limit_bytes:
        local, join = f"(l.pos - 1) // {int(limit_requests)}", ""
    else:
        local, join = "c.local_chunk", f"asof left join {_STARTS} c on c.lane = l.lane and l.pos >= c.pos"
    # Batches are numbered in the order their first line comes, across lanes, as the row pass does;
    # each is a file of its own, where a line's offset counts from the batch's first line.
    state.run(
        f"""create or replace temp table {_CUT} as
        with located as (select l.*, case when l.sends then {local} end as local_chunk from {_LINES} l {join}),
        firsts as (select *, min(ordinal) over c as first_ordinal, min(lane_offset) over c as first_offset
                   from located window c as (partition by lane, local_chunk))
        select * exclude (first_ordinal, first_offset, lane_offset, key_json),
               case when sends then (dense_rank() over (partition by sends order by first_ordinal) - 1)::integer
               end as chunk,
               lane_offset - first_offset as line_offset
        from firsts
        order by ordinal"""
    )


def _write(state, prices: Mapping[str, tuple[float, float]], chunk_path: Callable[[int], str]) -> Rendered:
    state.run(
        f"""create or replace temp table {RENDERED} as
        select l.ordinal, l.custom_id, 1::integer as part, 1::integer as parts, l.request_hash,
               l.max_tokens::integer as max_tokens, l.dedup_of, l.reason,
               coalesce(l.chunk, d.chunk)::integer as chunk, l.include,
               case when l.include then coalesce(l.lane, d.lane) end as lane, l.cost::double as cost,
               l.line_offset::bigint as line_offset, l.line_length::bigint as line_length, l.error,
               null::varchar as part_hash, null::integer as first_page, null::integer as last_page
        from {_CUT} l left join (select * from {_CUT} where grouped) d on d.custom_id = l.dedup_of
        order by l.ordinal"""
    )
    chunks = []
    for index, lane, n, n_bytes, low, high, model in state.run(
            f"select chunk, lane, count(*), sum(line_length), min(ordinal), max(ordinal), arg_min(model, ordinal) "
            f"from {_CUT} where sends group by chunk, lane order by chunk"):
        # One batch at a time: the join and the sort stay the size of a batch, found by zone maps (both
        # tables are in, or close to, ordinal order), however many rows the run has.
        state.run(
            f"""copy (select r.__cb_line from {_ROWS} r join {_CUT} l on l.ordinal = r.__cb_ordinal
                     where l.chunk = {int(index)} and r.__cb_ordinal between {int(low)} and {int(high)}
                       and l.ordinal between {int(low)} and {int(high)}
                     order by r.__cb_ordinal)
            to {literal(chunk_path(index))}
               (format csv, header false, quote '', escape '', delimiter '\x1f', new_line '\n')"""
        )
        chunks.append((index, lane, n, int(n_bytes), model))
    sent_models = {m for (m,) in state.run(f"select distinct model from {_CUT} where sends")}
    return Rendered(
        chunks=chunks,
        n_deduplicated=state.run(f"select count(*) from {_CUT} where dedup_of is not null")[0][0],
        unpriced_models=sent_models - set(prices),
    )
