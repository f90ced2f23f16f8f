"""What users query: the results rows the model returns, and the failures and batches views.

Original key columns come back with their original types (packed as JSON in state, unpacked with the
types recorded from the source), so users join with ``using (ticket_id)``, never through custom_id.
"""

from __future__ import annotations

import json

from dbt_claude_batch.identifiers import literal, qualified
from dbt_claude_batch.planning import latest_outcomes_sql, retryable_sql
from dbt_claude_batch.pricing import cost_sql, model_family_sql, prices_cte
from dbt_claude_batch.state import State

RESULT_COLUMNS = (
    "custom_id", "output_text", "stop_reason", "answered_model", "input_tokens", "output_tokens",
    "cache_creation_input_tokens", "cache_read_input_tokens", "cost_usd", "batch_id", "attempt",
    "request_hash", "completed_at",
)


def _unpack_keys(key_types: dict[str, str], expr: str = "key_json") -> str:
    return f"unnest(from_json({expr}, {literal(json.dumps(key_types))}))"


def results_sql(state: State, key_types: dict[str, str], existing: str | None) -> str:
    """Latest successful result per key; with `existing`, only those newer than what that table holds."""
    newer = (
        f"where not exists (select 1 from {existing} e where e.custom_id = w.custom_id and e.attempt >= w.attempt)"
        if existing
        else ""
    )
    return f"""with {prices_cte()},
    cb_success as (
        select r.custom_id, r.key_json, r.request_hash, r.attempt, o.*
        exclude (custom_id, model_id, result_type, error_type, error_message, canceled_by_user, message, harvested_at),
        b.ended_at
        from {state.table('outcomes')} o
        join {state.table('batches')} b using (batch_id)
        join {state.table('requests')} r on r.submission_id = b.submission_id and r.custom_id = o.custom_id
        where o.model_id = {literal(state.model_id)} and o.result_type = 'succeeded'
        qualify row_number() over (partition by r.custom_id order by r.attempt desc) = 1),
    w as (
        select s.*, {cost_sql('s', 'p')} as cost_usd
        from cb_success s left join cb_prices p on p.model_family = {model_family_sql('s.answered_model')})
    select {_unpack_keys(key_types)}, custom_id, output_text, stop_reason, answered_model,
           input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens,
           cast(cost_usd as double) as cost_usd, batch_id, attempt, request_hash, ended_at as completed_at
    from w {newer}"""


def failures_view_sql(state: State, key_types: dict[str, str], max_attempts: int) -> str:
    retry = f"({retryable_sql('lo')} and lo.tries < {int(max_attempts)})"
    return f"""select {_unpack_keys(key_types, 'lo.key_json')}, lo.custom_id, lo.batch_id, lo.attempt,
        lo.result_type as kind, lo.error_type, lo.error_message, lo.canceled_by_user,
        {retry} as retried_automatically,
        case
            when {retry} then 'resubmitted as it is on the next dbt run (attempt ' || (lo.attempt + 1) || ')'
            when lo.result_type = 'canceled' and lo.canceled_by_user then
                'canceled on purpose: run dbt with --vars ''{{claude_batch_resubmit_canceled: true}}'' to resubmit'
            when lo.result_type = 'errored' and lo.error_type = 'invalid_request_error' then
                'fix the request (prompt template, model or settings); the changed request is resubmitted automatically'
            when {retryable_sql('lo')} then
                'gave up after ' || lo.tries || ' attempts: raise max_attempts or change the request to retry'
            else 'inspect error_message; change the request to resubmit'
        end as next_action,
        lo.harvested_at as failed_at
    from ({latest_outcomes_sql(state)}) lo
    where lo.result_type is not null and lo.result_type <> 'succeeded'"""


def batches_view_sql(state: State) -> str:
    return f"""select b.batch_id, b.model_id as dbt_model, m.claude_models, b.processing_status,
        b.created_at, b.ended_at, b.expires_at, b.cancel_initiated_at, b.archived_at,
        b.n_submitted, b.n_processing, b.n_succeeded, b.n_errored, b.n_canceled, b.n_expired, b.canceled_by_user,
        b.harvested_at, b.result_lines, b.reconciled, b.reconcile_note, b.polled_at
    from {state.table('batches')} b
    left join (select submission_id, list(distinct model order by model) as claude_models
               from {state.table('requests')} where model_id = {literal(state.model_id)} group by all) m
        using (submission_id)
    where b.model_id = {literal(state.model_id)}"""


def write_views(state: State, database: str, schema: str, identifier: str, key_types: dict[str, str],
                max_attempts: int) -> tuple[str, str]:
    """(Re)create `<model>__failures` and `<model>__batches` next to the model; returns their names."""
    failures = qualified(database, schema, f"{identifier}__failures")
    batches = qualified(database, schema, f"{identifier}__batches")
    state.run(f"create or replace view {failures} as {failures_view_sql(state, key_types, max_attempts)}")
    state.run(f"create or replace view {batches} as {batches_view_sql(state)}")
    return failures, batches
