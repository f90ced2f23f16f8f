"""The SQL over state that the run and the readers share: each key's attempts and latest outcome,
and which failures the next run retries by itself.

Planning (run) decides with these; the views, `inspect` and so `status` and the report show the same
facts with the same queries, so what people read is what the next run will do.
"""

from __future__ import annotations

from dbt_claude_batch.base.identifiers import literal
from dbt_claude_batch.state.state import LIVE_STATUSES, State, marker_sql

TOO_LONG_PATTERN = "prompt is too long"
# The error type of a request a synchronous pass never sent (run/sync.py): no try of it.
NOT_SENT = "not_sent"


def scope_sql(scope: tuple[list[str], list[str]] | None) -> str:
    """Literals, so DuckDB reads only the row groups of some submissions (requests `r`) and their
    batches (submissions `s`): `scope` is (submission_ids, batch_ids)."""
    if scope is None:
        return ""
    return (f" and r.submission_id in ({', '.join(literal(x) for x in scope[0])})"
            f" and s.batch_id in ({', '.join(literal(x) for x in scope[1])})")


def key_attempts_sql(state: State, only_keys: str | None = None,
                     scope: tuple[list[str], list[str]] | None = None) -> str:
    """One row per (key, attempt): the parts of a split request and their outcomes rolled into one
    (`n_parts` recorded, `cut_into` how many the attempt was cut into).

    An attempt is in flight while any part lacks an outcome, `missing` when it recorded fewer parts
    than it was cut into (a part's submission went nowhere: never complete; error type `not_sent` when
    every part it recorded was reused from state, so nothing of it was bought), succeeded when every part
    did, and otherwise failed as its first failing part did. `only_keys`, a query of custom_ids, narrows it;
    `scope`, (submission_ids, batch_ids), reads only those submissions' requests (see answers.refresh).
    """
    narrow = f" and coalesce(r.key_custom_id, r.custom_id) in ({only_keys})" if only_keys else ""
    narrow += scope_sql(scope)
    return f"""with cb_req as (
            select coalesce(r.key_custom_id, r.custom_id) as key_custom_id, r.key_json, r.input_hash,
                   r.request_hash, r.sent_hash, r.attempt, coalesce(r.part, 1) as part, coalesce(r.parts, 1) as parts,
                   r.max_tokens, s.batch_id, r.first_page, r.last_page,
                   o.result_type, o.error_type, o.error_message, o.canceled_by_user, o.harvested_at, o.harvest_seq
            from {state.table('requests')} r
            join {state.table('submissions')} s using (submission_id)
            left join {state.table('outcomes')} o on o.batch_id = s.batch_id and o.custom_id = r.custom_id
            where r.model_id = {literal(state.model_id)} and s.status in {LIVE_STATUSES}{narrow})
        select key_custom_id as custom_id, attempt,
               any_value(key_json) as key_json, any_value(input_hash) as input_hash,
               any_value(request_hash) as request_hash, max(max_tokens) as max_tokens,
               case when count(*) = 1 then any_value(sent_hash) end as sent_hash,
               count(*) as n_parts, max(parts) as cut_into,
               case when count(result_type) < count(*) then null
                    when count(distinct part) < max(parts) then 'missing'
                    when count(*) filter (where result_type = 'succeeded') = count(*) then 'succeeded'
                    else min_by(result_type, part) filter (where result_type <> 'succeeded') end as result_type,
               -- an attempt of reused parts only, its other parts never sent (the run stopped before
               -- their create), bought nothing: `not_sent`, which is no try
               case when count(distinct part) < max(parts) and bool_and(starts_with(batch_id, 'reuse_'))
                    then {literal(NOT_SENT)}
                    else min_by(error_type, part) filter (where result_type <> 'succeeded') end as error_type,
               min_by(error_message, part) filter (where result_type <> 'succeeded') as error_message,
               -- for an attempt in parts, the first failed part and its pages (a cut PDF's)
               min(part) filter (where result_type <> 'succeeded') as failed_part,
               min_by(first_page, part) filter (where result_type <> 'succeeded') as failed_first_page,
               min_by(last_page, part) filter (where result_type <> 'succeeded') as failed_last_page,
               coalesce(min_by(canceled_by_user, part) filter (where result_type <> 'succeeded'), false) as canceled_by_user,
               coalesce(min_by(batch_id, part) filter (where result_type <> 'succeeded'), any_value(batch_id)) as batch_id,
               max(harvested_at) as harvested_at, max(harvest_seq) as harvest_seq
        from cb_req group by key_custom_id, attempt"""


def latest_outcomes_sql(state: State, only_keys: str | None = None) -> str:
    """Per key: its latest attempt, that attempt's outcome (null while in flight), and tries of its request.

    A try is an attempt of the same request at the same `max_tokens` (a truncated answer's retry at a
    higher one starts afresh, so `max_tokens_cap` can be reached), never sent (`not_sent`) not counted.
    """
    return f"""with cb_attempts as ({key_attempts_sql(state, only_keys)}),
        cb_tries as (select custom_id, request_hash, max_tokens,
                            count(*) filter (where error_type is distinct from {literal(NOT_SENT)}) as tries
                     from cb_attempts group by all)
        select l.*, t.tries
        from (select * from cb_attempts qualify row_number() over (partition by custom_id order by attempt desc) = 1) l
        join cb_tries t on t.custom_id = l.custom_id and t.request_hash is not distinct from l.request_hash
            and t.max_tokens is not distinct from l.max_tokens"""


def too_long_sql(alias: str) -> str:
    return f"({alias}.error_type = 'invalid_request_error' and {alias}.error_message like '{TOO_LONG_PATTERN}%')"


def retryable_sql(alias: str, max_tokens_cap: int, can_split: bool) -> str:
    """Outcomes worth sending again: server-side trouble as they are, some with a modified request."""
    split = f" or {too_long_sql(alias)}" if can_split else ""
    return (
        f"({alias}.result_type in ('expired', 'missing', 'invalid_output')"
        f" or ({alias}.result_type = 'errored'"
        f" and coalesce({alias}.error_type, '') not in ('invalid_request_error', 'template_error', 'empty_prompt',"
        f" 'attachment_error', 'attachment_missing'))"
        f" or ({alias}.result_type = 'canceled' and not {alias}.canceled_by_user)"
        f" or ({alias}.result_type = 'truncated' and coalesce({alias}.max_tokens, 0) < {int(max_tokens_cap)})"
        f"{split})"
    )


def usage_history(state: State) -> dict[str, float | int | None]:
    """This model's real usage per answered request, bought (not reused, not a marker): count, and input and
    output tokens' mean, 10th and 90th percentiles and maximum; what a plan's estimate is based on."""
    row = state.run(
        f"""select count(*), avg(input_tokens), quantile_cont(input_tokens, 0.1), quantile_cont(input_tokens, 0.9),
                   avg(output_tokens), quantile_cont(output_tokens, 0.1), quantile_cont(output_tokens, 0.9),
                   max(output_tokens), count(*) filter (where stop_reason = 'max_tokens')
        from {state.table('outcomes')} o
        where o.model_id = {literal(state.model_id)} and o.result_type = 'succeeded' and o.reused_from is null
          and o.shared_from is null and o.input_tokens is not null and not {marker_sql(state.schema, 'o')}"""
    )[0]
    names = ("n", "input_mean", "input_p10", "input_p90", "output_mean", "output_p10", "output_p90", "output_max",
             "truncated")
    return dict(zip(names, row))


def turnaround_hours(state: State) -> tuple[float | None, float | None, int]:
    """Median and 90th percentile of this model's batches' time from create to end, in hours, and how many."""
    return tuple(state.run(
        f"""select quantile_cont(h, 0.5), quantile_cont(h, 0.9), count(h) from (
            select epoch(ended_at - created_at) / 3600.0 as h from {state.table('batches')}
            where model_id = {literal(state.model_id)} and coalesce(kind, 'batch') = 'batch'
              and ended_at is not null and created_at is not null)"""
    )[0])
