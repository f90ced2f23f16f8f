"""Which rows to submit: the staging table against the state, as SQL in DuckDB.

A row's request hash is computed in SQL from the columns the prompt uses (and the per-row model
column) plus a fingerprint of everything else that shapes the request (template text, settings).
Rendering is deterministic, so equal inputs mean an equal request; a nothing-to-do run is therefore
one scan and one anti-join, with no prompt rendered.
"""

from __future__ import annotations

from typing import Sequence

from dbt_claude_batch.identifiers import literal, quote
from dbt_claude_batch.keys import custom_id_sql, key_json_sql
from dbt_claude_batch.state import State

STAGED = "cb_staged"
PENDING = "cb_pending"


def stage(state: State, source_sql: str, key: Sequence[str], prompt_columns: Sequence[str],
          model_column: str | None, default_model: str | None, fingerprint: str) -> int:
    """Materialise the source as (custom_id, key, hash, model, prompt columns) in a temp table."""
    hashed = list(dict.fromkeys([*prompt_columns, *([model_column] if model_column else [])]))
    struct = ", ".join(f"{quote(c)} := {quote(c)}" for c in hashed) or "none := null"
    model_expr = f"coalesce(cast({quote(model_column)} as varchar), {literal(default_model or '')})" if model_column \
        else literal(default_model or "")
    passthrough = ", ".join(quote(c) for c in prompt_columns)
    state.run(
        f"""create or replace temp table {STAGED} as
        select {custom_id_sql(key)} as __cb_custom_id,
               {key_json_sql(key)} as __cb_key_json,
               md5({literal(fingerprint)} || to_json(struct_pack({struct}))) as __cb_hash,
               {model_expr} as __cb_model
               {', ' + passthrough if passthrough else ''}
        from ({source_sql})"""
    )
    return state.run(f"select count(*) from {STAGED}")[0][0]


def attempts_sql(state: State) -> str:
    """Every request of this model whose submission may have made a batch, with its batch id."""
    return f"""select r.custom_id, r.key_json, r.request_hash, r.attempt, s.batch_id, s.status as submission_status
        from {state.table('requests')} r join {state.table('submissions')} s using (submission_id)
        where r.model_id = {literal(state.model_id)} and s.status not in ('rejected', 'abandoned')"""


def latest_outcomes_sql(state: State) -> str:
    """Per custom_id: its latest attempt, that attempt's outcome (null while in flight), and tries of its hash."""
    return f"""with cb_attempts as ({attempts_sql(state)}),
        cb_latest as (
            select * from cb_attempts
            qualify row_number() over (partition by custom_id order by attempt desc) = 1),
        cb_tries as (select custom_id, request_hash, count(*) as tries from cb_attempts group by all)
        select l.custom_id, l.key_json, l.request_hash, l.attempt, l.batch_id, t.tries,
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


def plan(state: State, max_attempts: int, resubmit_canceled: bool) -> dict[str, int]:
    """Build the temp table of rows to submit now; return how many per reason."""
    state.run(
        f"""create or replace temp table {PENDING} as
        with cb_lo as ({latest_outcomes_sql(state)})
        select row_number() over (order by st.__cb_custom_id) as __cb_ordinal,
               st.*,
               coalesce(lo.attempt, 0) + 1 as __cb_attempt,
               case when lo.custom_id is null then 'new'
                    when lo.request_hash <> st.__cb_hash then 'changed'
                    when lo.result_type = 'canceled' and lo.canceled_by_user then 'resubmit_canceled'
                    else 'retry' end as __cb_reason
        from {STAGED} st
        left join cb_lo lo on lo.custom_id = st.__cb_custom_id
        where lo.custom_id is null
           or (lo.result_type is not null and lo.request_hash <> st.__cb_hash)
           or (lo.result_type is not null and lo.request_hash = st.__cb_hash and (
                  ({retryable_sql('lo')} and lo.tries < {int(max_attempts)})
                  or (lo.result_type = 'canceled' and lo.canceled_by_user and {str(bool(resubmit_canceled)).lower()})))"""
    )
    return dict(state.run(f"select __cb_reason, count(*) from {PENDING} group by all"))


def pending_requests_sql(first: int, last: int) -> str:
    """The state rows for pending rows first..last (by ordinal), in the shape State.record_intent expects."""
    return (
        f"select __cb_custom_id as custom_id, __cb_key_json as key_json, __cb_hash as request_hash, "
        f"__cb_attempt as attempt, __cb_model as request_model from {PENDING} "
        f"where __cb_ordinal between {int(first)} and {int(last)}"
    )
