"""What users query: the results rows the model returns, and the failures and batches views.

Original key columns come back with their original types (packed as JSON in state, unpacked with the
types recorded from the source), so users join with ``using (ticket_id)``, never through custom_id.
A key whose prompt was split gets one row: its parts' answers joined (`split_join: concat`, with a
blank line between parts) or as a JSON array of the part answers (`json_array`).
"""

from __future__ import annotations

import json

from dbt_claude_batch.identifiers import literal, qualified
from dbt_claude_batch.outputs import flattened_columns_sql
from dbt_claude_batch.planning import key_attempts_sql, latest_outcomes_sql, retryable_sql, too_long_sql
from dbt_claude_batch.pricing import cost_sql, model_family_sql, prices_cte
from dbt_claude_batch.settings import Settings
from dbt_claude_batch.state import State


def _unpack_keys(key_types: dict[str, str], expr: str = "key_json") -> str:
    return f"unnest(from_json({expr}, {literal(json.dumps(key_types))}))"


def results_sql(state: State, settings: Settings, key_types: dict[str, str], existing: str | None,
                watermark: bool = False) -> str:
    """Latest successful result per key; with `existing`, only those newer than what that table holds.

    With `watermark`, only keys with an outcome recorded after the newest `harvest_seq` in `existing`
    are considered. The watermark is read from the table itself, so a run whose merge never happened
    is simply caught up by the next one.
    """
    newer = (
        f"where not exists (select 1 from {existing} e where e.custom_id = w.custom_id and e.attempt >= w.attempt)"
        if existing
        else ""
    )
    recent = None
    if existing and watermark:
        recent = (
            f"select distinct coalesce(r.key_custom_id, r.custom_id) from {state.table('outcomes')} o "
            f"join {state.table('submissions')} s on s.batch_id = o.batch_id "
            f"join {state.table('requests')} r on r.submission_id = s.submission_id and r.custom_id = o.custom_id "
            f"where o.model_id = {literal(state.model_id)} "
            f"and coalesce(o.harvest_seq, 0) > (select coalesce(max(harvest_seq), -1) from {existing})"
        )
    if settings.split_join == "json_array":
        text = "case when count(*) = 1 then any_value(output_text) else to_json(list(output_text order by part))::varchar end"
    else:
        text = "string_agg(output_text, chr(10) || chr(10) order by part)"
    return f"""with {prices_cte(settings.prices)},
    cb_best as (
        select custom_id, attempt from ({key_attempts_sql(state, recent)})
        where result_type = 'succeeded'
        qualify row_number() over (partition by custom_id order by attempt desc) = 1),
    cb_parts as (
        select coalesce(r.key_custom_id, r.custom_id) as key_custom_id, r.attempt, coalesce(r.part, 1) as part,
               r.key_json, r.request_hash, o.output_text, o.output_json, o.stop_reason, o.answered_model,
               o.input_tokens, o.output_tokens, o.cache_creation_input_tokens, o.cache_read_input_tokens,
               o.service_tier, o.shared_from, o.batch_id, b.ended_at, o.harvest_seq, {cost_sql('o', 'p')} as cost_usd
        from {state.table('requests')} r
        join {state.table('submissions')} s using (submission_id)
        join {state.table('outcomes')} o on o.batch_id = s.batch_id and o.custom_id = r.custom_id
        join {state.table('batches')} b on b.batch_id = o.batch_id
        join cb_best k on k.custom_id = coalesce(r.key_custom_id, r.custom_id) and k.attempt = r.attempt
        left join cb_prices p on p.model_family = {model_family_sql('o.answered_model')}
        where r.model_id = {literal(state.model_id)}),
    w as (
        select key_custom_id as custom_id, attempt, any_value(key_json) as key_json,
               any_value(request_hash) as request_hash, {text} as output_text,
               case when count(*) = 1 then any_value(output_json) else to_json(list(output_json order by part)) end
                   as output_json,
               arg_max(stop_reason, part) as stop_reason, string_agg(distinct answered_model, ',') as answered_model,
               sum(input_tokens) as input_tokens, sum(output_tokens) as output_tokens,
               sum(cache_creation_input_tokens) as cache_creation_input_tokens,
               sum(cache_read_input_tokens) as cache_read_input_tokens, sum(cost_usd) as cost_usd,
               any_value(service_tier) as service_tier, min_by(batch_id, part) as batch_id,
               max(ended_at) as completed_at, max(coalesce(harvest_seq, 0)) as harvest_seq, count(*) as parts,
               any_value(shared_from) as shared_from
        from cb_parts group by key_custom_id, attempt)
    select {_unpack_keys(key_types)}, custom_id, output_text,
           {"output_json" if settings.output_schema else "null::json as output_json"}
           {flattened_columns_sql(settings.output_columns)},
           stop_reason, answered_model, input_tokens, output_tokens, cache_creation_input_tokens,
           cache_read_input_tokens, cast(cost_usd as double) as cost_usd, service_tier, batch_id, attempt,
           request_hash, completed_at, harvest_seq, parts, shared_from
    from w {newer}"""


def failures_view_sql(state: State, settings: Settings, key_types: dict[str, str]) -> str:
    cap, can_split = settings.effective_max_tokens_cap, settings.split_column is not None
    retry = f"({retryable_sql('lo', cap, can_split)} and lo.tries < {int(settings.max_attempts)})"
    return f"""select {_unpack_keys(key_types, 'lo.key_json')}, lo.custom_id, lo.batch_id, lo.attempt,
        lo.result_type as kind, lo.error_type, lo.error_message, lo.canceled_by_user,
        {retry} as retried_automatically,
        case
            when {retry} and lo.result_type = 'truncated' then
                'resubmitted with max_tokens ' || least({cap}, lo.max_tokens * 2) || ' on the next dbt run'
            when {retry} and {too_long_sql('lo')} then
                'split on `' || {literal(settings.split_column or '')} || '` and resubmitted on the next dbt run'
            when {retry} then 'resubmitted as it is on the next dbt run (attempt ' || (lo.attempt + 1) || ')'
            when lo.result_type = 'canceled' and lo.canceled_by_user then
                'canceled on purpose: run dbt with --vars ''{{claude_batch_resubmit_canceled: true}}'' to resubmit'
            when lo.result_type = 'refused' then
                'the model declined (see error_message): change the prompt or the row to resubmit'
            when lo.result_type = 'truncated' then
                'still cut off at max_tokens ' || lo.max_tokens || ': raise max_tokens_cap or shorten the answer'
            when {too_long_sql('lo')} then
                'prompt too long for the context window: set split_column, or shorten the prompt in the template'
            when lo.result_type = 'errored' and lo.error_type = 'invalid_request_error' then
                'fix the request (prompt template, model or settings); the changed request is resubmitted automatically'
            when {retryable_sql('lo', cap, can_split)} then
                'gave up after ' || lo.tries || ' attempts: raise max_attempts or change the request to retry'
            else 'inspect error_message; change the request to resubmit'
        end as next_action,
        lo.harvested_at as failed_at
    from ({latest_outcomes_sql(state)}) lo
    where lo.result_type is not null and lo.result_type <> 'succeeded'"""


def batches_view_sql(state: State) -> str:
    return f"""select b.batch_id, b.kind, b.model_id as dbt_model, m.claude_models, b.processing_status,
        b.created_at, b.ended_at, b.expires_at, b.cancel_initiated_at, b.archived_at,
        b.n_submitted, b.n_deduplicated, b.n_processing, b.n_succeeded, b.n_errored, b.n_canceled, b.n_expired,
        b.canceled_by_user, b.harvested_at, b.result_lines, b.reconciled, b.reconcile_note, b.polled_at
    from {state.table('batches')} b
    left join (select submission_id, list(distinct model order by model) as claude_models
               from {state.table('requests')} where model_id = {literal(state.model_id)} group by all) m
        using (submission_id)
    where b.model_id = {literal(state.model_id)}"""


def write_views(state: State, settings: Settings, database: str, schema: str, identifier: str,
                key_types: dict[str, str]) -> tuple[str, str]:
    """(Re)create `<model>__failures` and `<model>__batches` next to the model; returns their names."""
    failures = qualified(database, schema, f"{identifier}__failures")
    batches = qualified(database, schema, f"{identifier}__batches")
    state.run(f"create or replace view {failures} as {failures_view_sql(state, settings, key_types)}")
    state.run(f"create or replace view {batches} as {batches_view_sql(state)}")
    return failures, batches
