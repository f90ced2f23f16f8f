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

from typing import Sequence

from dbt_claude_batch.identifiers import literal, quote
from dbt_claude_batch.keys import custom_id_sql, key_json_sql
from dbt_claude_batch.state import State

STAGED = "cb_staged"
PENDING = "cb_pending"
RENDERED = "cb_rendered"


def stage(state: State, source_sql: str, key: Sequence[str], prompt_columns: Sequence[str],
          model_column: str | None, default_model: str | None, fingerprint: str) -> int:
    """Materialise the source as (custom_id, key, input hash, model, prompt columns) in a temp table."""
    hashed = list(dict.fromkeys([*prompt_columns, *([model_column] if model_column else [])]))
    struct = ", ".join(f"{quote(c)} := {quote(c)}" for c in hashed) or "none := null"
    model_expr = (
        f"coalesce(cast({quote(model_column)} as varchar), {literal(default_model or '')})"
        if model_column
        else literal(default_model or "")
    )
    passthrough = "".join(f", {quote(c)}" for c in prompt_columns)
    state.run(
        f"""create or replace temp table {STAGED} as
        select {custom_id_sql(key)} as __cb_custom_id,
               {key_json_sql(key)} as __cb_key_json,
               md5({literal(fingerprint)} || to_json(struct_pack({struct}))) as __cb_input_hash,
               {model_expr} as __cb_model
               {passthrough}
        from ({source_sql})"""
    )
    return state.run(f"select count(*) from {STAGED}")[0][0]


def attempts_sql(state: State) -> str:
    """Every request of this model whose submission may have made a batch, with its batch id."""
    return f"""select r.custom_id, r.key_json, r.input_hash, r.request_hash, r.attempt, s.batch_id
        from {state.table('requests')} r join {state.table('submissions')} s using (submission_id)
        where r.model_id = {literal(state.model_id)} and s.status not in ('rejected', 'abandoned')"""


def latest_outcomes_sql(state: State) -> str:
    """Per custom_id: its latest attempt, that attempt's outcome (null while in flight), and tries of its request."""
    return f"""with cb_attempts as ({attempts_sql(state)}),
        cb_latest as (
            select * from cb_attempts
            qualify row_number() over (partition by custom_id order by attempt desc) = 1),
        cb_tries as (select custom_id, request_hash, count(*) as tries from cb_attempts group by all)
        select l.custom_id, l.key_json, l.input_hash, l.request_hash, l.attempt, l.batch_id, t.tries,
               o.result_type, o.error_type, o.error_message, o.canceled_by_user, o.harvested_at
        from cb_latest l
        join cb_tries t using (custom_id, request_hash)
        left join {state.table('outcomes')} o on o.batch_id = l.batch_id and o.custom_id = l.custom_id"""


def retryable_sql(alias: str) -> str:
    """Outcomes resubmitted as they are (server-side trouble, not the request's fault)."""
    return (
        f"({alias}.result_type in ('expired', 'missing')"
        f" or ({alias}.result_type = 'errored' and coalesce({alias}.error_type, '') <> 'invalid_request_error')"
        f" or ({alias}.result_type = 'canceled' and not {alias}.canceled_by_user))"
    )


def plan(state: State, max_attempts: int, resubmit_canceled: bool) -> int:
    """Build the temp table of candidate rows; return how many there are.

    Reasons: `new` (never submitted), `retry` / `resubmit_canceled` (same request, to send again) and
    `maybe_changed` (inputs changed since the last finished attempt; rendering decides). Rows in flight
    are never candidates.
    """
    resubmit = "true" if resubmit_canceled else "false"
    state.run(
        f"""create or replace temp table {PENDING} as
        with cb_lo as ({latest_outcomes_sql(state)}),
        cb_judged as (
            select st.*, lo.custom_id as __cb_prev_custom_id, lo.result_type as __cb_prev_result,
                   lo.request_hash as __cb_prev_request_hash,
                   coalesce(lo.attempt, 0) + 1 as __cb_attempt,
                   (lo.input_hash = st.__cb_input_hash or a.input_hash is not null) as __cb_same_input,
                   coalesce(lo.result_type = 'canceled' and lo.canceled_by_user, false) as __cb_user_canceled,
                   coalesce(({retryable_sql('lo')} and lo.tries < {int(max_attempts)})
                            or (lo.result_type = 'canceled' and lo.canceled_by_user and {resubmit}), false)
                       as __cb_would_retry
            from {STAGED} st
            left join cb_lo lo on lo.custom_id = st.__cb_custom_id
            left join {state.table('input_aliases')} a
                on a.model_id = {literal(state.model_id)} and a.custom_id = st.__cb_custom_id
               and a.input_hash = st.__cb_input_hash and a.request_hash = lo.request_hash)
        select row_number() over (order by __cb_custom_id) as __cb_ordinal, *,
               case when __cb_prev_custom_id is null then 'new'
                    when not __cb_same_input then 'maybe_changed'
                    when __cb_user_canceled then 'resubmit_canceled'
                    else 'retry' end as __cb_reason
        from cb_judged
        where __cb_prev_custom_id is null
           or (__cb_prev_result is not null and (not __cb_same_input or __cb_would_retry))"""
    )
    return state.run(f"select count(*) from {PENDING}")[0][0]


def load_rendered(state: State, path: str) -> None:
    """Load the spool pass's verdicts (ordinal, request hash, reason, include) next to the candidates."""
    state.run(
        f"""create or replace temp table {RENDERED} as select * from read_csv({literal(path)}, header = true,
            columns = {{'ordinal': 'BIGINT', 'request_hash': 'VARCHAR', 'reason': 'VARCHAR', 'include': 'BOOLEAN'}})"""
    )


def record_aliases(state: State) -> int:
    """Remember changed inputs that render to the last attempt's request, so later runs skip rendering them."""
    state.run(
        f"""insert or replace into {state.table('input_aliases')}
        select {literal(state.model_id)}, p.__cb_custom_id, p.__cb_input_hash, r.request_hash
        from {PENDING} p join {RENDERED} r on r.ordinal = p.__cb_ordinal
        where not r.include and r.reason = 'unchanged'"""
    )
    return state.run(f"select count(*) from {RENDERED} where not include")[0][0]


def reason_counts(state: State) -> dict[str, int]:
    return dict(state.run(f"select reason, count(*) from {RENDERED} group by all order by all"))


def pending_requests_sql(first: int, last: int) -> str:
    """The rows to record for one batch (ordinals first..last that are included)."""
    return (
        f"select p.__cb_custom_id as custom_id, p.__cb_key_json as key_json, p.__cb_input_hash as input_hash, "
        f"r.request_hash, p.__cb_attempt as attempt, p.__cb_model as request_model "
        f"from {PENDING} p join {RENDERED} r on r.ordinal = p.__cb_ordinal "
        f"where r.include and p.__cb_ordinal between {int(first)} and {int(last)}"
    )
