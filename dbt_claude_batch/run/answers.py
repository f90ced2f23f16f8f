"""The answers table: each key's latest successful answer, brought up to date as outcomes are recorded.

Results come from here by a plain scan, so handing dbt a first harvest of millions of rows costs no
aggregation over the whole history (and streams under a DuckDB `memory_limit`), and landing one batch
costs work in proportion to that batch. A key's row is recomputed from its attempts whenever an outcome
of it is recorded (`refresh`), always by the same rules as before: the latest attempt whose every part
succeeded, its parts' answers joined. `seq` is the harvest sequence of the key's newest outcome of any
kind, which is what a results table's `harvest_seq` watermark is compared with.
"""

from __future__ import annotations

from dbt_claude_batch.base.identifiers import literal
from dbt_claude_batch.state.queries import key_attempts_sql, scope_sql
from dbt_claude_batch.state.state import LIVE_STATUSES, State, utcnow

ANSWER_COLUMNS = (
    "model_id", "custom_id", "attempt", "key_json", "request_hash", "input_hash", "latest_attempt", "output_text",
    "output_parts", "output_json",
    "stop_reason",
    "answered_model", "input_tokens", "output_tokens", "cache_creation_input_tokens",
    "cache_creation_1h_input_tokens", "cache_read_input_tokens", "service_tier", "batch_id", "completed_at",
    "harvest_seq", "seq", "parts", "shared_from", "part_pages", "paid",
)
_TOUCHED = "cb_touched"


def answers_sql(state: State, only_keys: str | None, scope: tuple[list[str], list[str]] | None = None) -> str:
    """Rows of the answers table for the keys of `only_keys` (a query of key custom_ids; None: all).

    A split key keeps its parts' texts in `output_parts` (in part order); how they are joined
    (`split_join`) is decided when results are read, so changing it needs no recomputation. With
    `scope` (submission_ids, batch_ids) only those submissions' requests are read: right only for keys
    that have no request anywhere else.
    """
    narrow = f" and coalesce(r.key_custom_id, r.custom_id) in ({only_keys})" if only_keys else ""
    narrow += scope_sql(scope)
    return f"""with cb_attempts as ({key_attempts_sql(state, only_keys, scope)}),
    cb_best as (
        select custom_id, attempt, max(attempt) over (partition by custom_id) as latest_attempt
        from cb_attempts
        qualify result_type = 'succeeded'
            and row_number() over (partition by custom_id order by (result_type = 'succeeded') desc, attempt desc) = 1),
    cb_seq as (select custom_id, max(harvest_seq) as seq from cb_attempts group by all),
    cb_parts as (
        select coalesce(r.key_custom_id, r.custom_id) as key_custom_id, r.attempt, coalesce(r.part, 1) as part,
               r.custom_id as part_id, r.first_page, r.last_page, r.key_json, r.request_hash, r.input_hash, k.latest_attempt, o.output_text, o.output_json, o.stop_reason, o.answered_model,
               o.input_tokens, o.output_tokens, o.cache_creation_input_tokens, o.cache_creation_1h_input_tokens,
               o.cache_read_input_tokens, o.service_tier, o.shared_from, o.batch_id, b.ended_at, o.harvest_seq
        from {state.table('requests')} r
        join {state.table('submissions')} s using (submission_id)
        join {state.table('outcomes')} o on o.batch_id = s.batch_id and o.custom_id = r.custom_id
        join {state.table('batches')} b on b.batch_id = o.batch_id
        join cb_best k on k.custom_id = coalesce(r.key_custom_id, r.custom_id) and k.attempt = r.attempt
        where r.model_id = {literal(state.model_id)}{narrow})
    select {literal(state.model_id)} as model_id, key_custom_id as custom_id, attempt, any_value(key_json) as key_json,
           any_value(request_hash) as request_hash, any_value(input_hash) as input_hash,
           any_value(latest_attempt) as latest_attempt,
           case when count(*) = 1 then any_value(output_text) end as output_text,
           case when count(*) > 1 then list(output_text order by part) end as output_parts,
           case when count(*) = 1 then any_value(output_json) else to_json(list(output_json order by part)) end
               as output_json,
           arg_max(stop_reason, part) as stop_reason, string_agg(distinct answered_model, ',') as answered_model,
           sum(input_tokens) as input_tokens, sum(output_tokens) as output_tokens,
           sum(cache_creation_input_tokens) as cache_creation_input_tokens,
           sum(cache_creation_1h_input_tokens) as cache_creation_1h_input_tokens,
           sum(cache_read_input_tokens) as cache_read_input_tokens,
           any_value(service_tier) as service_tier,
           -- the batch that completed the answer: its newest part's
           arg_max(batch_id, coalesce(harvest_seq, 0)) as batch_id,
           max(ended_at) as completed_at, max(coalesce(harvest_seq, 0)) as harvest_seq,
           greatest(max(coalesce(harvest_seq, 0)), any_value(q.seq)) as seq, count(*) as parts,
           case when count(shared_from) = count(*) then min_by(shared_from, part) end as shared_from,
           case when count(*) > 1 and count(first_page) > 0 then to_json(list(struct_pack(
               part := part, custom_id := part_id, first_page := first_page, last_page := last_page,
               stop_reason := stop_reason) order by part)) end as part_pages,
           -- some parts bought, the others' answers held: what results price
           case when count(shared_from) between 1 and count(*) - 1 then struct_pack(
               shared_from := null::varchar,
               service_tier := any_value(service_tier) filter (where shared_from is null),
               {_paid_usage()}) end as paid
    from cb_parts p join cb_seq q on q.custom_id = p.key_custom_id
    group by key_custom_id, attempt"""


def _paid_usage() -> str:
    return ", ".join(f"{c} := (sum({c}) filter (where shared_from is null))::bigint" for c in (
        "input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_creation_1h_input_tokens",
        "cache_read_input_tokens"))


def refresh(state: State, batch_ids: list[str]) -> None:
    """Recompute the answers of every key with an outcome in `batch_ids`, and mark those batches done.

    Call inside the transaction that recorded the outcomes, or later (`refresh_pending`): until then
    the batch's `answers_at` is null, so a crash in between is caught up by the next run. Keys whose
    latest outcome is a failure keep their earlier answer, with `seq` moved on; keys with no answer
    at all get no row.
    """
    if not batch_ids:
        return
    answers, requests = state.table("answers"), state.table("requests")
    batch_list = ", ".join(literal(b) for b in batch_ids)
    submission_ids = [r[0] for r in state.run(
        f"select submission_id from {state.table('submissions')} where batch_id in ({batch_list})")]
    scope = (submission_ids, list(batch_ids))
    # The keys these batches have outcomes for; `elsewhere`: those with a request in another submission
    # (an earlier attempt, or parts of a split prompt sent in another batch).
    # `n`: their requests in these submissions (more than one for a split prompt, or for two attempts
    # harvested in one step).
    state.run(
        f"""create or replace temp table {_TOUCHED} as
        select coalesce(r.key_custom_id, r.custom_id) as custom_id, count(*) as n, false as elsewhere,
               max(coalesce(r.parts, 1)) > 1 as cut
        from {state.table('outcomes')} o
        join {state.table('submissions')} s on s.batch_id = o.batch_id
        join {requests} r on r.submission_id = s.submission_id and r.custom_id = o.custom_id
        where o.batch_id in ({batch_list}){scope_sql(scope)}
        group by all"""
    )
    # A join, so the hash table is built from these keys, not from every request of the model.
    state.run(
        f"""update {_TOUCHED} t set elsewhere = true from (
            select distinct coalesce(r.key_custom_id, r.custom_id) as custom_id from {requests} r
            join {_TOUCHED} k on k.custom_id = coalesce(r.key_custom_id, r.custom_id)
            where r.model_id = {literal(state.model_id)}
              and r.submission_id not in ({', '.join(literal(x) for x in submission_ids)})) e
        where e.custom_id = t.custom_id"""
    )
    state.run(f"delete from {answers} where model_id = ? and custom_id in (select custom_id from {_TOUCHED})",
              [state.model_id])
    columns = ", ".join(ANSWER_COLUMNS)
    # A key whose only request is here is its one outcome, when that succeeded: no aggregation.
    state.run(f"insert into {answers} ({columns}) " + _single_answers_sql(state, batch_list, scope))
    # Other keys answered only here are read from these submissions alone, which DuckDB finds by zone
    # maps; the rest from their whole history.
    # (A key cut into parts always takes this way, even with one part here: it needs all of them.)
    if state.run(f"select count(*) from {_TOUCHED} where not elsewhere and (n > 1 or cut)")[0][0]:
        state.run(f"insert into {answers} ({columns}) "
                  + answers_sql(state, f"select custom_id from {_TOUCHED} where not elsewhere and (n > 1 or cut)",
                                scope))
    if state.run(f"select count(*) from {_TOUCHED} where elsewhere")[0][0]:
        state.run(f"insert into {answers} ({columns}) "
                  + answers_sql(state, f"select custom_id from {_TOUCHED} where elsewhere"))
    state.run(f"drop table if exists {_TOUCHED}")
    state.run(f"update {state.table('batches')} set answers_at = ? where batch_id in ({batch_list})", [utcnow()])


def _single_answers_sql(state: State, batch_list: str, scope: tuple[list[str], list[str]]) -> str:
    """What `answers_sql` gives for keys with one request in all their history (`n = 1`, not elsewhere):
    that request's outcome, if it succeeded, as the answer of its only (so latest) attempt."""
    return f"""select {literal(state.model_id)}, coalesce(r.key_custom_id, r.custom_id), r.attempt, r.key_json,
           r.request_hash, r.input_hash, r.attempt, o.output_text, null, o.output_json, o.stop_reason,
           o.answered_model, o.input_tokens, o.output_tokens, o.cache_creation_input_tokens,
           o.cache_creation_1h_input_tokens, o.cache_read_input_tokens, o.service_tier, o.batch_id, b.ended_at,
           coalesce(o.harvest_seq, 0), coalesce(o.harvest_seq, 0), 1, o.shared_from, null, null
    from {state.table('outcomes')} o
    join {state.table('submissions')} s on s.batch_id = o.batch_id
    join {state.table('requests')} r on r.submission_id = s.submission_id and r.custom_id = o.custom_id
    join {state.table('batches')} b on b.batch_id = o.batch_id
    join {_TOUCHED} t on t.custom_id = coalesce(r.key_custom_id, r.custom_id) and t.n = 1 and not t.elsewhere
        and not t.cut
    where o.batch_id in ({batch_list}) and o.result_type = 'succeeded'
      and r.model_id = {literal(state.model_id)} and s.status in {LIVE_STATUSES}{scope_sql(scope)}"""


# Requests whose answers one transaction brings up to date at most: a first harvest of millions of
# results is landed in bounded steps, each within a DuckDB `memory_limit` of 1GB.
STEP_REQUESTS = 100_000


def refresh_pending(state: State) -> int:
    """Bring the answers up to date with every harvested batch of this model they lag; return how many."""
    pending = state.run(
        f"select batch_id, n_submitted from {state.table('batches')} where model_id = ? "
        "and harvested_at is not null and answers_at is null order by batch_id", [state.model_id])
    for step in steps(pending, STEP_REQUESTS):
        with state.transaction():
            refresh(state, step)
    return len(pending)


def steps(batches: list[tuple[str, int | None]], limit: int) -> list[list[str]]:
    """(batch_id, requests) in order, cut into runs of at most `limit` requests (a bigger batch alone)."""
    out: list[list[str]] = []
    size = 0
    for batch_id, n in batches:
        if not out or size + (n or 0) > limit:
            out.append([])
            size = 0
        out[-1].append(batch_id)
        size += n or 0
    return out


def rebuild(state: State) -> None:
    """Recompute every answer of this model from its outcomes (when the state schema is upgraded)."""
    answers = state.table("answers")
    state.run(f"delete from {answers} where model_id = ?", [state.model_id])
    key = state.recorded_key()
    # Only answers of the key as recorded: those of an earlier key left the answers when it changed.
    shape = f" where json_keys(key_json) = [{', '.join(literal(c) for c in key)}]" if key else ""
    state.run(f"insert into {answers} ({', '.join(ANSWER_COLUMNS)}) select * from ({answers_sql(state, None)}){shape}")
    state.run(f"update {state.table('batches')} set answers_at = ? where model_id = ? and harvested_at is not null",
              [utcnow(), state.model_id])
