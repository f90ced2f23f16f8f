"""Which rows to submit: the staging table against the state, as SQL in DuckDB.

Two digests decide whether a row's request changed:
- the *input hash*, computed in SQL from the columns the prompt uses (and the per-row model column)
  plus a fingerprint of everything else (template text, settings). Equal input hash means an equal
  request, so a nothing-to-do run is one scan and one anti-join, with no prompt rendered.
- the *request hash*, sha256 of the rendered request params. It is computed only for rows whose input
  hash changed; when it equals the last attempt's (a template edit that does not touch this row's text),
  the row is not resubmitted and the new input hash is remembered as an alias of that request.
"""

from __future__ import annotations

import contextlib
import hashlib
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Mapping, Sequence

from dbt_claude_batch.base.identifiers import literal, quote
from dbt_claude_batch.base.keys import custom_id_sql, key_json_sql
from dbt_claude_batch.run.components import components_sql, define_components
from dbt_claude_batch.state.erasure import staged_row_digest_sql
from dbt_claude_batch.state.queries import latest_outcomes_sql, retryable_sql, too_long_sql
from dbt_claude_batch.state.state import LIVE_STATUSES, State

STAGED = "cb_staged"
PENDING = "cb_pending"
RENDERED = "cb_rendered"
# The columns whose equal values make equal requests: such rows share one request (see `plan`).
_GROUP = "__cb_input_hash, __cb_model, __cb_max_tokens, __cb_split_tokens, __cb_split_parts, __cb_rerun"


def stage(state: State, source_sql: str, key: Sequence[str], prompt_columns: Sequence[str],
          model_column: str | None, default_model: str | None, fingerprint: str, stamped: Sequence[str] = (),
          blobs: Sequence[str] = (), components: Mapping[str, str] | None = None,
          attachment_columns: Sequence[str] = ()) -> int:
    """Materialise the source as (custom_id, key, input hash, model) in a narrow temp table.

    The prompt columns are hashed here but not kept: only the rows that will be rendered fetch them
    again (`candidate_rows_sql`), so a wide source does not cost memory on runs with little to do.
    `stamped` columns hold local attachment paths: each path's stamp (size and modification time, from
    media.py's temp table) joins the hash, so an edited file at the same path is rendered again.
    `blobs` (attachment BLOB columns) are hashed by their sha256, not by their JSON text (4x their size).
    `components` (see `shared_components`) and the row's own parts (model, text, attachments), hashed
    apart, are recorded with each request (`components_sql`) so a plan can say why a row changed.
    """
    hashed = list(dict.fromkeys([*prompt_columns, *([model_column] if model_column else [])]))
    struct = ", ".join(f"{quote(c)} := {'sha256' if c in blobs else ''}({quote(c)})"
                       for c in hashed) or "none := null"
    joins = ""
    for i, column in enumerate(stamped):
        struct += f", {quote('__cb_stamp_' + column)} := cb_f{i}.__cb_stamp"
        joins += (f" left join cb_file_stamps cb_f{i} on cb_f{i}.__cb_stamp_path = cast({quote(column)} as varchar)")
    model_expr = (
        f"coalesce(cast({quote(model_column)} as varchar), {literal(default_model or '')})"
        if model_column
        else literal(default_model or "")
    )
    text_digest, attach_digest = _row_digests_sql(prompt_columns, attachment_columns, stamped, blobs)
    define_components(state, components or {})
    state.run(
        f"""create or replace temp table {STAGED} as
        select {custom_id_sql(key)} as __cb_custom_id,
               {key_json_sql(key)} as __cb_key_json,
               md5({literal(fingerprint)} || to_json(struct_pack({struct}))) as __cb_input_hash,
               {model_expr} as __cb_model,
               {text_digest} as __cb_text_digest,
               {attach_digest} as __cb_attach_digest
        from ({source_sql}){joins}"""
    )
    return state.run(f"select count(*) from {STAGED}")[0][0]


def _row_digests_sql(prompt_columns: Sequence[str], attachment_columns: Sequence[str], stamped: Sequence[str],
                     blobs: Sequence[str]) -> tuple[str, str]:
    """SQL for a row's own digests: its text columns, and its attachments (null without any)."""
    def struct(columns: Sequence[str], extra: str = "") -> str:
        items = [f"{quote(c)} := {'sha256' if c in blobs else ''}({quote(c)})" for c in columns]
        return f"md5(to_json(struct_pack({', '.join(items) or 'none := null'}{extra})))"

    text = [c for c in prompt_columns if c not in attachment_columns]
    stamps = "".join(f", {quote('__cb_stamp_' + c)} := cb_f{i}.__cb_stamp" for i, c in enumerate(stamped))
    attached = struct(list(attachment_columns), stamps) if attachment_columns else "null::varchar"
    return struct(text), attached


def source_digest(cursor, source_sql: str, key: Sequence[str], prompt_columns: Sequence[str],
                  model_column: str | None, seed: str) -> tuple[str, int]:
    """A digest of the source's keys and prompt inputs, plus `seed` (template, settings), and its row count.

    One scan with DuckDB's 64-bit `hash`, nothing materialised: it only decides whether a run may skip
    staging and planning because nothing changed since a run that left nothing to do (a changed row
    would have to keep the sum of the hashes to be missed). Staging computes the real input hashes.
    """
    columns = ", ".join(quote(c) for c in dict.fromkeys([*key, *prompt_columns, *([model_column] if model_column else [])]))
    count, total = cursor.execute(
        f"select count(*), coalesce(sum(hash({columns})::hugeint), 0) from ({source_sql})"
    ).fetchall()[0]
    return hashlib.sha256(f"{seed}|{count}|{total}".encode()).hexdigest(), count


class SourceDigest:
    """`source_digest`, computed on a cursor and a thread of its own while the run does other work.

    On a run with nothing to do this one read of the source is the only work that grows with the
    table, so the run's fixed state work (schema check, run record, views) goes on beside it. DuckDB
    releases the GIL while it scans. Leaving the block waits for the scan: no thread outlives the run.
    """

    def __init__(self, cursor, source_sql: str, key: Sequence[str], prompt_columns: Sequence[str],
                 model_column: str | None, seed: str):
        self._cursor = cursor
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="dbt_claude_batch-digest")
        self._future = self._pool.submit(source_digest, cursor, source_sql, key, prompt_columns, model_column, seed)

    def result(self) -> tuple[str, int]:
        """(digest, row count), once the scan is done; raises what the scan raised."""
        return self._future.result()

    def __enter__(self) -> SourceDigest:
        return self

    def __exit__(self, *exc_info) -> None:
        self._pool.shutdown(wait=True)
        self._cursor.close()


def candidate_rows_sql(source_sql: str, key: Sequence[str], prompt_columns: Sequence[str], rows: str,
                       extra: str = "", ordered: bool = True) -> str:
    """`rows` (a query with __cb_custom_id and __cb_ordinal) joined back to the source's prompt columns;
    `extra`, more select-list items (`, expr as name`) over them; in `__cb_ordinal` order if `ordered`.

    The source comes first: under `source_probed` DuckDB builds its hash table on the candidates and
    streams the source's rows past it, instead of holding every prompt's text."""
    columns = "".join(f", s.{quote(c)}" for c in prompt_columns)
    return (
        f"select c.*{columns}{extra} "
        f"from (select {custom_id_sql(key)} as __cb_source_id, * from ({source_sql})) s "
        f"join ({rows}) c on s.__cb_source_id = c.__cb_custom_id" + (" order by c.__cb_ordinal" if ordered else "")
    )


@contextlib.contextmanager
def source_probed(state: State) -> Iterator[None]:
    """Joins written in `candidate_rows_sql`'s order build on the candidates, not on the source.

    DuckDB's build_side_probe_side optimizer picks the build side by row counts; with as many candidates
    as source rows it built on the source, which holds every prompt's text (at 10M rows, gigabytes
    spilled to disk); the candidates' rows are a fraction of that. Restored on the way out.
    """
    (before,) = state.run("select current_setting('disabled_optimizers')")[0]
    off = [o for o in str(before or "").split(",") if o.strip()]
    state.run(f"set disabled_optimizers = {literal(','.join([*off, 'build_side_probe_side']))}")
    try:
        yield
    finally:
        state.run(f"set disabled_optimizers = {literal(','.join(off))}")


OPEN = "cb_open"


def open_rows(state: State, rerun: bool) -> str:
    """The staged rows planning must look at: all but those settled, as a table name.

    A row is settled when its key's newest attempt (as the answers table last saw it) is the answered
    one, for these very inputs, and nothing of the key is in flight: such a row is never a candidate,
    so planning skips it without aggregating its history. A run with 1% changed rows plans 1% of them.
    Re-run keys need every row, and so does a model with no answers yet (its first submit): neither
    copies the staged rows.
    """
    if rerun or not state.run(f"select exists (select 1 from {state.table('answers')} where model_id = ?)",
                              [state.model_id])[0][0]:
        return STAGED
    state.run(
        f"""create or replace temp table {OPEN} as
        select st.* from {STAGED} st
        left join (select custom_id, input_hash from {state.table('answers')}
                   where model_id = {literal(state.model_id)} and attempt = latest_attempt) a
            on a.custom_id = st.__cb_custom_id and a.input_hash = st.__cb_input_hash
        where a.custom_id is null or st.__cb_custom_id in (select custom_id from ({state.flying_requests_sql()}))"""
    )
    return OPEN


def plan(state: State, max_attempts: int, resubmit_canceled: bool, max_tokens_cap: int, base_max_tokens: int,
         can_split: bool, rerun_filter: str | None = None) -> int:
    """Build the temp table of candidate rows; return how many there are.

    Reasons: `new` (never submitted), `retry` / `resubmit_canceled` (same request, to send again),
    `maybe_changed` (inputs changed since the last finished attempt; rendering decides) and `rerun`
    (keys named in `claude_batch_rerun_keys`). Rows in flight are never candidates, except reruns.
    `__cb_max_tokens` carries an escalated max_tokens after a truncation; `__cb_split_tokens` asks for
    a split after a prompt-too-long error.
    """
    resubmit = "true" if resubmit_canceled else "false"
    rerun = rerun_filter or "false"
    rows = open_rows(state, rerun_filter is not None)
    narrow = None if rows == STAGED else f"select __cb_custom_id from {rows}"
    erased, erased_request = "", "null::varchar"
    if state.run(f"select exists (select 1 from {state.table('erased')} where model_id = ?)", [state.model_id])[0][0]:
        # A key erased by `forget` is not sent again while it has sent nothing since and its row is the
        # one it had (state from before v14 knows only its input hash). Once sent again it is any key.
        erased = (f" and (__cb_rerun or __cb_prev_custom_id is not null or not exists (select 1 from "
                  f"{state.table('erased')} e where e.model_id = {literal(state.model_id)} "
                  f"and e.key_hash = sha256(j.__cb_custom_id) and (e.row_digest = {staged_row_digest_sql('j')} "
                  "or (e.row_digest is null and e.input_hash = j.__cb_input_hash))))")
        # A row whose digest changed only by its files' stamps (a touched file) is rendered again; its
        # request, when it is the erased one, is still not sent (spool: reason `erased`).
        erased_request = (f"case when not __cb_rerun and __cb_prev_custom_id is null then (select max_by(e.request_hash, "
                          f"e.erased_at) from {state.table('erased')} e where e.model_id = {literal(state.model_id)} "
                          "and e.key_hash = sha256(cb_candidates.__cb_custom_id)) end")
    candidates = f"""with cb_lo as ({latest_outcomes_sql(state, narrow)}),
        cb_judged as (
            select st.rowid + 1 as __cb_ordinal, st.*, lo.custom_id as __cb_prev_custom_id, lo.result_type as __cb_prev_result,
                   lo.request_hash as __cb_prev_request_hash, lo.sent_hash as __cb_prev_sent_hash,
                   coalesce(lo.attempt, 0) + 1 as __cb_attempt,
                   (lo.input_hash = st.__cb_input_hash or a.input_hash is not null) as __cb_same_input,
                   coalesce(lo.result_type = 'canceled' and lo.canceled_by_user, false) as __cb_user_canceled,
                   coalesce(({retryable_sql('lo', max_tokens_cap, can_split)} and lo.tries < {int(max_attempts)})
                            or (lo.result_type = 'canceled' and lo.canceled_by_user and {resubmit}), false)
                       as __cb_would_retry,
                   -- An escalation belongs to the request it retries: with other inputs (max_tokens is
                   -- one of them) the request is new and starts from the setting.
                   case when not (lo.input_hash = st.__cb_input_hash or a.input_hash is not null) then null
                        when lo.result_type = 'truncated' then least({int(max_tokens_cap)}, greatest(lo.max_tokens, 1) * 2)
                        when lo.max_tokens > {int(base_max_tokens)} then lo.max_tokens end as __cb_max_tokens,
                   case when {too_long_sql('lo')} then
                        cast(regexp_extract(lo.error_message, '([0-9]+) tokens', 1) as bigint) end as __cb_split_tokens,
                   -- the same inputs are split as the last attempt was, though its failure was not a
                   -- prompt too long: its parts are the same requests, and those answered are reused
                   case when lo.cut_into > 1 and (lo.input_hash = st.__cb_input_hash or a.input_hash is not null)
                        then lo.cut_into end as __cb_split_parts,
                   coalesce({rerun}, false) as __cb_rerun
            from {rows} st
            left join cb_lo lo on lo.custom_id = st.__cb_custom_id
            left join {state.table('input_aliases')} a
                on a.model_id = {literal(state.model_id)} and a.custom_id = st.__cb_custom_id
               and a.input_hash = st.__cb_input_hash and a.request_hash = lo.request_hash)
        , cb_candidates as (
            select * from cb_judged j
            where (__cb_rerun or __cb_prev_custom_id is null
               or (__cb_prev_result is not null and (not __cb_same_input or __cb_would_retry))){erased})
        select *, {erased_request} as __cb_erased_request_hash,
               __cb_custom_id as __cb_leader, 1::bigint as __cb_group_size,
               case when __cb_rerun then 'rerun'
                    when __cb_prev_custom_id is null then 'new'
                    when not __cb_same_input then 'maybe_changed'
                    when __cb_user_canceled then 'resubmit_canceled'
                    else 'retry' end as __cb_reason
        from cb_candidates"""
    drop_pending(state)
    if rows == STAGED and not rerun_filter and not erased and not state.run(
            f"select exists (select 1 from {state.table('requests')} r join {state.table('submissions')} s "
            f"using (submission_id) where r.model_id = ? and s.status in {LIVE_STATUSES})", [state.model_id])[0][0]:
        return _first_pending(state, candidates)
    state.run(f"create temp table {PENDING} as {candidates}")
    # Identical inputs render identical requests: the first of each group (in the order rows are rendered)
    # is sent, the rest share it (`_share_groups_sql`).
    state.run(f"update {PENDING} p set __cb_leader = g.__cb_leader, __cb_group_size = g.__cb_group_size "
              f"from ({_share_groups_sql(PENDING, _GROUP, '__cb_ordinal')}) g where g.__cb_custom_id = p.__cb_custom_id")
    return state.run(f"select count(*) from {PENDING}")[0][0]


GROUPS = "cb_share_groups"


def _share_groups_sql(table: str, group: str, order: str) -> str:
    """The rows of `table` whose `group` columns equal another row's, each with its group's leader (first
    by `order`, the rows' ordinal: the row pass renders rows in that order, so a leader's line is always
    written before its followers look for it) and size. Few rows share one: a 64-bit hash of the group's
    columns finds the groups of more than one row (a collision only sends more rows down the exact path),
    and only their rows are sorted into groups."""
    # An outer filter, not `qualify`: in the pending table `__cb_group_size` also names a column.
    return f"""select * from (
            select __cb_custom_id,
                   first_value(__cb_custom_id) over (partition by {group} order by {order}) as __cb_leader,
                   count(*) over (partition by {group}) as __cb_group_size
            from {table}
            where hash({group}) in (select hash({group}) from {table} group by all having count(*) > 1))
        where __cb_group_size > 1"""


def _first_pending(state: State, candidates: str) -> int:
    """The pending rows of a model with no attempt yet, as a view over the staged rows: no copy of them.

    With no attempt, every staged row is a candidate and everything planning adds to it is constant
    (no previous request, attempt 1, reason `new`) but its share group: the groups of more than one row
    are a small table the view joins. The view has the pending table's columns and types, taken from
    the same query (`candidates`); it reads nothing of the state, so rows recorded later in the run
    do not change it. At 10M rows the copy it replaces was ~1.6 GB, held, or spilled, to the run's end.
    """
    constant = {"__cb_ordinal": "st.rowid + 1", "__cb_attempt": "1", "__cb_user_canceled": "false",
                "__cb_would_retry": "false", "__cb_rerun": "false", "__cb_reason": "'new'",
                "__cb_leader": "coalesce(g.__cb_leader, st.__cb_custom_id)",
                "__cb_group_size": "coalesce(g.__cb_group_size, 1)"}
    staged = {name for name, *_ in state.run(f"describe {STAGED}")}
    columns = ", ".join(
        f"cast({constant.get(name, f'st.{quote(name)}' if name in staged else 'null')} as {kind}) as {quote(name)}"
        for name, kind, *_ in state.run(f"describe {candidates}"))
    # The group columns of a first attempt, as `candidates` gives them: only input hash and model vary.
    group = "__cb_input_hash, __cb_model"
    state.run(f"create or replace temp table {GROUPS} as {_share_groups_sql(STAGED, group, 'rowid')}")
    state.run(f"create temp view {PENDING} as select {columns} from {STAGED} st "
              f"left join {GROUPS} g on g.__cb_custom_id = st.__cb_custom_id")
    return state.run(f"select count(*) from {STAGED}")[0][0]


def _temp_kind(state: State, name: str) -> str | None:
    """'table', 'view' or None: what the temp object `name` is in this run, if any (the pending rows and
    the verdicts are either, see `_first_pending` and sql_spool.py)."""
    found = state.run("select 'view' from duckdb_views() where temporary and view_name = ? union all "
                      "select 'table' from duckdb_tables() where temporary and table_name = ?", [name, name])
    return found[0][0] if found else None


def pending_is_view(state: State) -> bool:
    """Whether the pending rows are `_first_pending`'s view (the staged rows must then stay)."""
    return _temp_kind(state, PENDING) == "view"


def pending_exists(state: State) -> bool:
    """Whether this run planned pending rows (a table or a view) that are still there."""
    return _temp_kind(state, PENDING) is not None


def drop_pending(state: State) -> None:
    """Drop the pending rows, a table or `_first_pending`'s view, and that view's groups."""
    kind = _temp_kind(state, PENDING)
    if kind is not None:
        state.run(f"drop {kind} {PENDING}")
    state.run(f"drop table if exists {GROUPS}")


RENDERED_COLUMNS = {
    "ordinal": "BIGINT", "custom_id": "VARCHAR", "part": "INTEGER", "parts": "INTEGER",
    "request_hash": "VARCHAR", "max_tokens": "INTEGER", "dedup_of": "VARCHAR", "reason": "VARCHAR",
    "chunk": "INTEGER", "include": "BOOLEAN", "lane": "VARCHAR", "cost": "DOUBLE", "line_offset": "BIGINT",
    "line_length": "BIGINT", "error": "VARCHAR",
    # a cut document's part (parts.py): its own request hash, and its pages
    "part_hash": "VARCHAR", "first_page": "INTEGER", "last_page": "INTEGER",
    # the sha256 of the request as sent, where its max_tokens is not the setting's (an escalation)
    "sent_hash": "VARCHAR",
}


def load_rendered(state: State, path: str) -> None:
    """Load the spool pass's verdicts (one row per request line or follower) next to the candidates."""
    columns = "{" + ", ".join(f"'{k}': '{v}'" for k, v in RENDERED_COLUMNS.items()) + "}"
    drop_rendered(state)
    state.run(
        f"create or replace temp table {RENDERED} as "
        f"select * from read_csv({literal(path)}, header = true, columns = {columns}, nullstr = '')"
    )


def drop_rendered(state: State) -> None:
    """Drop the verdicts: the row pass's table, or the SQL pass's view of its Parquet file."""
    kind = _temp_kind(state, RENDERED)
    if kind is not None:
        state.run(f"drop {kind} {RENDERED}")


def rendered_is_table(state: State) -> bool:
    """Whether the verdicts are a table (the row pass's, or made writable), not the SQL pass's view of a file
    that goes with the run's scratch directory."""
    return _temp_kind(state, RENDERED) == "table"


def rendered_writable(state: State) -> None:
    """Make the verdicts a table, for the few runs that change them (answers reused from state): the SQL
    pass leaves a view of a file."""
    if _temp_kind(state, RENDERED) == "view":
        state.run(f"create temp table cb_rendered_copy as select * from {RENDERED}")
        state.run(f"drop view {RENDERED}")
        state.run(f"alter table cb_rendered_copy rename to {RENDERED}")


def record_aliases(state: State) -> None:
    """Remember changed inputs that render to the last attempt's request, so later runs skip rendering them."""
    state.run(
        f"""insert or replace into {state.table('input_aliases')}
        select {literal(state.model_id)}, p.__cb_custom_id, p.__cb_input_hash, r.request_hash
        from {PENDING} p join {RENDERED} r on r.ordinal = p.__cb_ordinal
        where not r.include and r.reason = 'unchanged'"""
    )


def reason_counts(state: State) -> dict[str, int]:
    """Keys per reason, for the log (a split or de-duplicated key counts once)."""
    return dict(state.run(
        f"select reason, count(distinct ordinal) from {RENDERED} where include group by all order by all"
    ))


def pending_requests_sql(state: State, chunk: int) -> str:
    """The state rows of one batch: its request lines and the de-duplicated rows that share them."""
    low, high = state.run(f"select min(ordinal), max(ordinal) from {RENDERED} where chunk = ?", [int(chunk)])[0]
    # Both tables keep about the order of their staged rows, which the ordinals number (DuckDB keeps
    # insertion order): the range lets DuckDB skip most other batches' row groups.
    span = f"between {int(low or 0)} and {int(high or 0)}"
    return (
        f"select r.custom_id, p.__cb_key_json as key_json, p.__cb_input_hash as input_hash, "
        f"r.request_hash, p.__cb_attempt as attempt, p.__cb_model as request_model, "
        f"p.__cb_custom_id as key_custom_id, r.part, r.parts, r.max_tokens, r.dedup_of, "
        f"r.part_hash, r.first_page, r.last_page, r.sent_hash, "
        f"{components_sql('p')} as components "
        f"from {PENDING} p join {RENDERED} r on r.ordinal = p.__cb_ordinal "
        f"where r.include and r.chunk = {int(chunk)} and r.ordinal {span} and p.__cb_ordinal {span}"
    )
