"""The spool pass done by DuckDB, for runs where SQL renders every candidate row.

It gives the verdicts, the request bytes and the batches the row pass of spool.py gives (a test holds
the two to it), without a Python object per row. DuckDB renders each candidate's request once and
judges it as it goes: against the last attempt's request hash, whether identical requests share one
line (the leaders of groups of identical inputs are rendered once more beforehand, a few rows), its
price; the stream carries each verdict and each line sent to batch_files.py, which cuts the lines into
batches in the order they come, appends them to their batch's file and writes the verdicts to a
Parquet file. The run's verdicts (`planning.RENDERED`) are a view of that file: neither the lines nor
the verdicts are ever a DuckDB table, which at 10M rows spilled gigabytes to disk. The render joins the
candidates to the source with the hash table on the candidates (`planning.source_probed`),
_SLICE_ROWS of them at a time, so the source's text streams past a table of bounded size. A run with
any row SQL cannot build exactly (a control character DuckDB escapes its own way, an escalated
`max_tokens`) takes the row pass instead, and what this pass wrote is removed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc

from dbt_claude_batch.base.errors import SourceDataError
from dbt_claude_batch.base.identifiers import literal
from dbt_claude_batch.run.batch_files import BatchFiles
from dbt_claude_batch.run.planning import PENDING, RENDERED, drop_rendered, pending_is_view, source_probed
from dbt_claude_batch.base.pricing import list_price
from dbt_claude_batch.base.prompts import blank_sql, empty_prompt_message_sql

_LEADERS = "cb_spool_leaders"
_WRITE_ROWS = 25_000
# Candidates joined to the source at a time: the join's hash table holds this many pending rows, well
# under a 1GB memory_limit, and each slice reads the source once more.
_SLICE_ROWS = 2_000_000
# A request line: '{"custom_id":"' || custom_id || '","params":' || params || '}', and a newline.
_LINE_OPEN, _LINE_MID, _LINE_CLOSE = '{"custom_id":"', '","params":', "}"
_LINE_FIXED = len(_LINE_OPEN) + len(_LINE_MID) + len(_LINE_CLOSE) + 1
_SIZE_SQL = f"strlen(__cb_custom_id) + strlen(__cb_params) + {_LINE_FIXED}"
_LINE_SQL = (f"{literal(_LINE_OPEN)} || __cb_custom_id || {literal(_LINE_MID)} || __cb_params || "
             f"{literal(_LINE_CLOSE)} || chr(10)")


@dataclass
class Rendered:
    """What the pass made: per batch (index, lane, lines, bytes, first model), each in `chunk_path(index)`."""

    chunks: list[tuple[int, str, int, int, str]]
    n_deduplicated: int
    unpriced_models: set[str]


def build_in_sql(state, settings, candidates: Callable[[str], str], chunk_path: Callable[[int], str],
                 limit_requests: int, limit_bytes: int, fixed_tokens: int) -> Rendered | None:
    """Render the pending rows into one spool file per batch and the verdicts (a view, `planning.RENDERED`).

    `candidates(rows)` is the query of the rows of `rows` (a query over the pending table) joined to
    their source columns, with `__cb_prompt`, `__cb_params` and `__cb_request_hash`. Returns None,
    leaving nothing written, when some row needs the row pass.
    """
    base = int(settings.max_tokens)

    def rows(pending: str) -> str:  # what judging needs of each row of `pending`, rendered
        return f"""select __cb_ordinal, __cb_custom_id, __cb_key_json, __cb_reason, __cb_leader, __cb_group_size,
               __cb_rerun, __cb_prev_request_hash, __cb_prev_sent_hash, __cb_prev_result, __cb_would_retry, __cb_model, __cb_request_hash, __cb_input_hash,
               {blank_sql('__cb_prompt')} as __cb_blank,
               coalesce(nullif(__cb_max_tokens, 0), {base}) as __cb_max_tokens,
               (strlen(__cb_prompt) + 3) // 4 as __cb_prompt_tokens,
               {_SIZE_SQL} as __cb_size,
               case when __cb_params is not null then {_LINE_SQL} end as __cb_line
        from ({candidates(pending)})"""

    files = BatchFiles(os.path.dirname(chunk_path(0)), chunk_path, limit_requests, limit_bytes,
                       lambda key_json, size: request_too_large(key_json, size, settings.max_batch_bytes))
    pool = pa.default_memory_pool()
    done = False
    try:
        prices, judged = _judging(state, settings, fixed_tokens, rows, base)
        with source_probed(state):
            for low, high in _slices(state):
                reader = state.cursor.sql(judged(low, high)).to_arrow_reader(_WRITE_ROWS)
                try:
                    files.start(reader.schema)
                    for record_batch in reader:
                        if pc.any(record_batch.column("row_pass")).as_py():
                            return None
                        files.add(record_batch)
                        del record_batch
                        pool.release_unused()  # Arrow's allocator keeps freed batches: RSS beside DuckDB's limit
                finally:
                    reader.close()  # before anything else runs on the cursor, the setting's restore included
        files.close()
        _view_verdicts(state, files)
        done = True
    finally:
        state.run(f"drop table if exists {_LEADERS}")
        if not done:
            files.discard()
    return Rendered(
        chunks=[(b.index, b.lane, b.n, b.n_bytes, b.model) for b in files.batches],
        n_deduplicated=files.n_followers,
        unpriced_models=files.sent_models - set(prices),
    )


def _reason_sql(request_hash: str) -> str:
    """A candidate's reason once its request is rendered: `maybe_changed` becomes `changed` when the
    request differs from the last attempt's, else `retry` when that attempt's failure is worth
    another try, else `unchanged` (not sent). A request equal to what the last attempt sent and had
    answered (at an escalated max_tokens that is now the setting) is `unchanged` too (row_pass.held_as_sent)."""
    return (f"case when __cb_reason <> 'maybe_changed' then __cb_reason "
            f"when {request_hash} = __cb_prev_sent_hash and __cb_prev_result = 'succeeded' then 'unchanged' "
            f"when {request_hash} is distinct from __cb_prev_request_hash then 'changed' "
            "when __cb_would_retry then 'retry' else 'unchanged' end")


def _judging(state, settings, fixed_tokens: int, rows: Callable[[str], str],
             base: int) -> tuple[dict[str, tuple[float, float]], Callable[[int, int], str]]:
    """The list prices of the models that have one, and the query of the pending rows of an ordinal range
    rendered and judged: one row per candidate with its verdict and, when it sends one, its line
    (`row_pass` marks a row SQL cannot build exactly, see build_in_sql). Renders the groups' leaders."""
    models = [m for (m,) in state.run(f"select distinct __cb_model from {PENDING}")]
    prices = {m: p for m in models if (p := list_price(m, settings.prices)) is not None}
    cost = ("case __cb_model " + " ".join(
        f"when {literal(m)} then (((__cb_prompt_tokens + {int(fixed_tokens)}) * {float(p[0])!r}::double)"
        f" + (__cb_max_tokens * {float(p[1])!r}::double)) / 1e6" for m, p in prices.items())
        + " else 0.0 end") if prices else "0.0"
    dedupe = "true" if settings.dedupe else "false"
    # a blank prompt is not sent: the row is a failure with error_type empty_prompt (see spool.py)
    own = f"case when __cb_blank then 'empty_prompt' else {_reason_sql('__cb_request_hash')} end"
    # The leaders of groups of identical inputs, rendered on their own (few rows) so that every row
    # is judged in the one render that also writes its line.
    with source_probed(state):
        state.run(
            f"""create or replace temp table {_LEADERS} as
            select __cb_custom_id, {own} as __cb_own_reason, __cb_request_hash
            from ({rows(f"select * from {PENDING} where __cb_group_size > 1 and __cb_leader = __cb_custom_id")})"""
        )
    _lead_by_first_sender(state, dedupe)

    def judged(low: int, high: int) -> str:
        pending = f"select * from {PENDING} where __cb_ordinal between {low} and {high}"
        return _judged_sql(rows(pending), own, dedupe, cost, base)

    return prices, judged


def _lead_by_first_sender(state, dedupe: str) -> None:
    """A leader that sends no line (its answer is held: `unchanged`) hands its group to the next row that
    would send one, as the row pass does; without it, each of those rows would send the same request.

    The rows of a group render the same request (identical inputs), so each one's verdict is its own
    history against the leader's request hash: no row is rendered again."""
    if dedupe != "true" or pending_is_view(state):
        return
    heads = "cb_spool_heads"
    state.run(
        f"""create or replace temp table {heads} as
        select p.__cb_leader as __cb_group, arg_min(p.__cb_custom_id, p.__cb_ordinal) as __cb_head,
               arg_min({_reason_sql('l.__cb_request_hash')}, p.__cb_ordinal) as __cb_own_reason,
               any_value(l.__cb_request_hash) as __cb_request_hash
        from {PENDING} p join {_LEADERS} l on l.__cb_custom_id = p.__cb_leader
        where p.__cb_group_size > 1 and p.__cb_custom_id <> p.__cb_leader and l.__cb_own_reason = 'unchanged'
          and {_reason_sql('l.__cb_request_hash')} <> 'unchanged'
        group by p.__cb_leader"""
    )
    try:
        if not state.run(f"select count(*) from {heads}")[0][0]:
            return
        state.run(f"update {PENDING} p set __cb_leader = h.__cb_head from {heads} h where p.__cb_leader = h.__cb_group")
        state.run(f"insert into {_LEADERS} select __cb_head, __cb_own_reason, __cb_request_hash from {heads}")
    finally:
        state.run(f"drop table if exists {heads}")


def _slices(state) -> list[tuple[int, int]]:
    """Ordinal ranges of at most _SLICE_ROWS pending rows each, in order (one, empty, when none)."""
    low, high = state.run(f"select min(__cb_ordinal), max(__cb_ordinal) from {PENDING}")[0]
    if low is None:
        return [(0, -1)]
    return [(start, min(start + _SLICE_ROWS - 1, high)) for start in range(low, high + 1, _SLICE_ROWS)]


def _judged_sql(rendered: str, own: str, dedupe: str, cost: str, base: int) -> str:
    return f"""with own as (select *, {own} as __cb_own_reason from ({rendered})),
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
                   case when __cb_rerun then 'sync' else 'batch' end as own_lane
            from judged)
        select __cb_ordinal::bigint as ordinal, __cb_custom_id as custom_id,
               case when __cb_final = 'empty_prompt' then 'empty_prompt:' || __cb_input_hash
                    -- the request held: an alias names it (`record_aliases`)
                    when __cb_final = 'unchanged' then __cb_prev_request_hash
                    when __cb_shared then __cb_leader_hash else __cb_request_hash end as request_hash,
               (case when include then __cb_max_tokens end)::integer as max_tokens,
               case when include and __cb_shared then __cb_leader end as dedup_of,
               __cb_final as reason, include, __cb_group_size > 1 as grouped,
               case when sends then own_lane end as lane,
               (case when sends then {cost} else 0.0 end)::double as cost,
               (case when sends then __cb_size end)::bigint as line_length,
               case when __cb_final = 'empty_prompt' then {empty_prompt_message_sql('__cb_key_json')} end as error,
               __cb_model as model, __cb_key_json as key_json,
               case when sends then __cb_line end as line,
               __cb_size is null or __cb_max_tokens <> {int(base)} as row_pass
        from sized"""


def request_too_large(key_json: str, size: int, max_batch_bytes: int) -> SourceDataError:
    """The error for a request line too large for any batch (both passes raise it, before any create)."""
    return SourceDataError(
        f"The request for key {key_json} is {size} bytes, over the batch limit of {max_batch_bytes} bytes "
        "(`max_batch_bytes`): shorten that row's text (or set `split_column`); nothing was submitted."
    )


def _view_verdicts(state, files: BatchFiles) -> None:
    """The verdicts view over what `files` wrote: a row per candidate, a follower (a row sharing a line)
    placed in its leader's batch and lane, with the request hash of the line its leader sent (the one
    render's, also when the source changed since the leaders were rendered)."""
    paths = files.verdict_files()
    if len(paths) > 1:
        placed = files.placed_path
        state.run(
            f"""copy (
                select f.* replace (d.chunk as chunk, d.lane as lane, d.request_hash as request_hash)
                from read_parquet({literal(paths[1])}) f
                join (select custom_id, chunk, lane, request_hash from read_parquet({literal(paths[0])})
                           where grouped and chunk is not null) d on d.custom_id = f.dedup_of
            ) to {literal(placed)} (format parquet)"""
        )
        if state.run(f"select count(*) from read_parquet({literal(placed)})")[0][0] != files.n_followers:
            raise SourceDataError(
                "The source changed while this run rendered its requests (a row that shares another row's "
                "request found that row's line not sent): run again once nothing writes to the source "
                "during the run; nothing was submitted."
            )
        paths = [paths[0], placed]
    drop_rendered(state)
    state.run(
        f"""create temp view {RENDERED} as
        select ordinal, custom_id, 1::integer as part, 1::integer as parts, request_hash, max_tokens, dedup_of,
               reason, chunk, include, lane, cost, line_offset, line_length, error,
               null::varchar as part_hash, null::integer as first_page, null::integer as last_page,
               null::varchar as sent_hash
        from read_parquet([{', '.join(literal(p) for p in paths)}])"""
    )
