"""The SQL of the views over state that people and dbt read; `inspect` holds the other read queries.

Per model, next to the model (written by every run, `results.write_views`): `<model>__failures`,
`<model>__batches`, `<model>__keys` and `<model>__health`. Across every model, in the state schema (the dbt sources of
the package, `results.write_state_views`): `all_failures`, `all_batches`, `all_runs`.
"""

from __future__ import annotations

import json
from typing import Sequence

from dbt_claude_batch.base.identifiers import literal, qualified, quote
from dbt_claude_batch.base.keys import custom_id_sql, key_json_sql
from dbt_claude_batch.state.queries import key_attempts_sql, latest_outcomes_sql, retryable_sql, too_long_sql
from dbt_claude_batch.base.settings import Settings
from dbt_claude_batch.state.state import State

RUN_COLUMNS = ("run_id", "started_at", "finished_at", "n_source_rows", "n_submitted", "n_harvested",
               "n_failed", "n_reused", "cost_usd", "outcome", "note")


# -- the per-model views (written next to each model by every run) -----------------------------
def _unpack_keys(key_types: dict[str, str], expr: str = "key_json") -> str:
    return f"unnest(from_json({expr}, {literal(json.dumps(key_types))}))"


def _current_key_sql(key: Sequence[str], expr: str = "lo.key_json") -> str:
    """Whether a packed key is one of the current `key` columns: after a key change, the custom_ids of the
    old key (whose outcomes stay in state, for reuse) are not keys of the model any more."""
    return f"json_keys({expr}) = [{', '.join(literal(c) for c in key)}]::varchar[]"


def _retried_sql(settings: Settings, alias: str = "lo") -> str:
    """Whether the next run resubmits a failed latest attempt by itself (`latest_outcomes_sql` row)."""
    cap, can_split = settings.effective_max_tokens_cap, settings.split_column is not None
    return f"({retryable_sql(alias, cap, can_split)} and {alias}.tries < {int(settings.max_attempts)})"


def failures_view_sql(state: State, settings: Settings, key_types: dict[str, str],
                      source_sql: str | None = None) -> str:
    """`<model>__failures`: one row per key (of the current `key` columns) whose latest attempt failed,
    with its next action in words. With `on_source_delete: delete`, only keys of the current source
    (`source_sql`): a key gone from it left the results table, and no run will send it again."""
    sql = _failures_sql(state, settings, key_types)
    if settings.on_source_delete != "delete" or source_sql is None:
        return sql
    same = " and ".join(f"s.{quote(c)} = f.{quote(c)}" for c in key_types)
    return f"select * from ({sql}) f where exists (select 1 from ({source_sql}) s where {same})"


def _failures_sql(state: State, settings: Settings, key_types: dict[str, str]) -> str:
    cap, can_split = settings.effective_max_tokens_cap, settings.split_column is not None
    retry = _retried_sql(settings)
    return f"""select {_unpack_keys(key_types, 'lo.key_json')}, lo.custom_id, lo.batch_id, lo.attempt,
        lo.result_type as kind, lo.error_type,
        case when lo.cut_into > 1 and lo.failed_part is not null then
            'part ' || lo.failed_part || ' of ' || lo.cut_into
            || coalesce(' (pages ' || lo.failed_first_page || '-' || lo.failed_last_page || ')', '')
            || ': ' || coalesce(lo.error_message, '') else lo.error_message end as error_message,
        lo.canceled_by_user,
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
            when lo.error_type = 'template_error' then
                'fix the template at the line named in error_message, or the row; it is rendered again when either changes'
            when lo.error_type = 'empty_prompt' then
                'the prompt is empty for this row (its columns are NULL or blank): give the row text or filter it out of the staging model; it was not sent, and is rendered again when the row or the template changes'
            when lo.error_type = 'attachment_error' then
                'fix or replace the file named in error_message (or the attachment settings); it was not sent, and is read again when the row or the file changes'
            when lo.error_type = 'attachment_missing' then
                'a required attachment is NULL: give the row a file, or drop required for that column; it was not sent, and is rendered again when the row changes'
            when lo.result_type = 'errored' and lo.error_type = 'invalid_request_error'
                 and lo.error_message like '%File not found%' then
                'the row names a Files API id (file_...) the API does not hold: give the row the file itself (its bytes, or a path under attachments_root) or an id this workspace holds; the changed request is resubmitted automatically'
            when lo.result_type = 'errored' and lo.error_type = 'invalid_request_error' then
                'fix the request (prompt template, model or settings); the changed request is resubmitted automatically'
            when {retryable_sql('lo', cap, can_split)} then
                'gave up after ' || lo.tries || ' attempts: raise max_attempts or change the request to retry'
            else 'inspect error_message; change the request to resubmit'
        end as next_action,
        lo.harvested_at as failed_at
    from ({latest_outcomes_sql(state)}) lo
    where lo.result_type is not null and lo.result_type <> 'succeeded' and {_current_key_sql(list(key_types))}
    -- one row per key, always: were a key ever to have two custom_ids, its latest failure
    qualify row_number() over (partition by lo.key_json::varchar order by lo.harvested_at desc, lo.custom_id) = 1"""


def batches_view_sql(state: State, every_model: bool = False) -> str:
    """`<model>__batches`: one row per batch of the model, with the Claude models its requests named.

    With `every_model`, the batches of every model in the state schema (`all_batches`).
    """
    mine = "" if every_model else f" where model_id = {literal(state.model_id)}"
    return f"""select b.batch_id, b.kind, b.model_id as dbt_model, m.claude_models, b.processing_status,
        b.created_at, b.ended_at, b.expires_at, b.cancel_initiated_at, b.archived_at,
        b.n_submitted, b.n_deduplicated, b.n_processing, b.n_succeeded, b.n_errored, b.n_canceled, b.n_expired,
        b.canceled_by_user, b.harvested_at, b.result_lines, b.reconciled, b.reconcile_note, b.polled_at
    from {state.table('batches')} b
    left join (select submission_id, list(distinct model order by model) as claude_models
               from {state.table('requests')}{mine} group by all) m
        using (submission_id){mine.replace('model_id', 'b.model_id')}"""


KEY_STATUSES = ("result", "failure", "in_flight", "erased", "none")


def keys_view_sql(state: State, settings: Settings, source_sql: str, key: Sequence[str]) -> str:
    """`<model>__keys`: every key of the model's current source, with the status of its latest attempt.

    `status` is one of `KEY_STATUSES`: `result` (it succeeded), `failure` (it failed: `kind`, `error_type`
    and `retried_automatically` as in `<model>__failures`), `in_flight` (no outcome yet, its create
    possibly still in doubt), `erased` (forgotten by `forget`, and nothing sent since) or `none` (never
    submitted). `has_result` says whether any attempt of the
    key succeeded, so whether the results table holds an answer for it, perhaps an older one.
    """
    columns = ", ".join(f"s.{quote(c)}" for c in key)
    return f"""with cb_lo as ({latest_outcomes_sql(state)}),
        cb_answered as (select distinct custom_id from ({key_attempts_sql(state)}) where result_type = 'succeeded')
    select {columns}, s.__cb_custom_id as custom_id,
        case when lo.custom_id is null and e.key_hash is not null then 'erased'
             when lo.custom_id is null then 'none' when lo.result_type is null then 'in_flight'
             when lo.result_type = 'succeeded' then 'result' else 'failure' end as status,
        lo.attempt, lo.batch_id,
        case when lo.result_type <> 'succeeded' then lo.result_type end as kind,
        case when lo.result_type <> 'succeeded' then lo.error_type end as error_type,
        case when lo.result_type <> 'succeeded' then lo.canceled_by_user end as canceled_by_user,
        case when lo.result_type <> 'succeeded' then {_retried_sql(settings)} end as retried_automatically,
        a.custom_id is not null as has_result
    from (select {custom_id_sql(key)} as __cb_custom_id, * from ({source_sql})) s
    left join cb_lo lo on lo.custom_id = s.__cb_custom_id
    left join cb_answered a on a.custom_id = s.__cb_custom_id
    left join (select distinct key_hash from {state.table('erased')} where model_id = {literal(state.model_id)}) e
        on e.key_hash = sha256(s.__cb_custom_id)"""


# Failures no resubmission fixes until a person changes something, as `run_record` counts them per run.
_UNFIXABLE_SQL = ("case when o.error_type = 'invalid_request_error' then 'invalid_request' "
                  "when o.error_type = 'template_error' then 'template_error' "
                  "when o.result_type = 'refused' then 'refused' end")


def health_sql(schema: str, model_id: str, window_runs: int, window_hours: float | None, max_ratio: float) -> str:
    """One row: of the requests a model harvested over a window, the share that failed for a reason no
    retry fixes (`max_failure_ratio`'s measure, judged over time rather than per run), against `max_ratio`.

    The window is the last `window_runs` runs of the model (from the start of the oldest of them), or
    with `window_hours` the last hours. Counted: every outcome recorded in it, whatever the run's own
    outcome (a red run stays in the window after a green retry), except markers (by their exact
    submission id), answers reused from state and a sample preview's calls, which are no row's harvest.
    """
    s = lambda t: qualified(schema, t)  # noqa: E731
    model = literal(model_id)
    if window_hours is not None:
        start = f"timezone('UTC', now()) - to_microseconds(cast({float(window_hours)} * 3600e6 as bigint))"
        runs = f"select started_at from {s('runs')} where model_id = {model} and started_at >= {start}"
    else:
        start = "min(started_at)"
        runs = (f"select started_at from {s('runs')} where model_id = {model} "
                f"order by started_at desc limit {int(window_runs)}")
    return f"""with cb_window as (select count(*) as n_runs, {start} as window_start from ({runs})),
        cb_o as (
            select o.result_type, {_UNFIXABLE_SQL} as unfixable
            from {s('outcomes')} o
            left join {s('batches')} b on b.batch_id = o.batch_id
            left join {s('submissions')} m on m.batch_id = o.batch_id
            where o.model_id = {model} and o.harvested_at >= (select window_start from cb_window)
              and o.custom_id is distinct from m.marker_id and o.reused_from is null
              and coalesce(b.kind, '') not in ('sample', 'compare'))
    select {model} as dbt_model, {'null' if window_hours is not None else int(window_runs)}::integer as window_runs,
           {'null' if window_hours is None else float(window_hours)}::double as window_hours,
           w.window_start, w.n_runs, count(o.result_type) as n_harvested,
           count(*) filter (where o.unfixable = 'invalid_request') as n_invalid_request,
           count(*) filter (where o.unfixable = 'template_error') as n_template_error,
           count(*) filter (where o.unfixable = 'refused') as n_refused,
           count(o.unfixable) as n_unfixable,
           count(o.unfixable) / nullif(count(o.result_type), 0) as failure_ratio,
           {float(max_ratio)}::double as max_failure_ratio_window,
           count(o.unfixable) > {float(max_ratio)} * count(o.result_type) as over_limit
    from cb_window w left join cb_o o on true
    group by w.window_start, w.n_runs"""


def health_view_sql(state: State, settings: Settings) -> str:
    """`<model>__health`: `health_sql` with the model's own window and limit."""
    return health_sql(state.schema, state.model_id, settings.health_window_runs, settings.health_window_hours,
                      settings.max_failure_ratio_window)


# -- the views across every model, in the state schema (dbt sources of the package) -------------
STATE_VIEWS = ("all_failures", "all_batches", "all_runs", "all_spend")
_FAILURE_COLUMNS = ("custom_id", "batch_id", "attempt", "kind", "error_type", "error_message", "canceled_by_user",
                    "retried_automatically", "next_action", "failed_at")


def model_views(cursor, suffix: str) -> dict[str, str]:
    """Per model id (`schema.identifier`, or `database.schema.identifier` before state v4), its view
    `<model><suffix>` as a quoted name; the current database's first, and named without it, so that a
    renamed file keeps working."""
    found: dict[str, str] = {}
    for catalog, schema, name, current in cursor.execute(
            "select table_catalog, table_schema, table_name, table_catalog = current_database() "
            "from information_schema.tables where ends_with(table_name, $1) "
            "order by table_catalog = current_database() desc", [suffix]).fetchall():
        model = f"{schema}.{name[:-len(suffix)]}"
        for model_id in (model, f"{catalog}.{model}"):
            found.setdefault(model_id, qualified(schema, name) if current else qualified(catalog, schema, name))
    return found


def all_failures_sql(cursor, schema: str) -> str:
    """`all_failures`: the `<model>__failures` rows of every model with state, with `dbt_model` and `key_json`.

    A model whose view cannot be found (in another database file) contributes its failures from state,
    without `retried_automatically` and `next_action`, which need its settings.
    """
    views = model_views(cursor, "__failures")
    rest = ", ".join(_FAILURE_COLUMNS)
    parts = []
    for model_id, key_columns in cursor.execute(
            f"select model_id, key_columns from {qualified(schema, 'models')} order by model_id").fetchall():
        if model_id in views:
            packed = key_json_sql(json.loads(key_columns))
            parts.append(f"select {literal(model_id)} as dbt_model, {packed} as key_json, {rest} from {views[model_id]}")
        else:
            parts.append(f"""select {literal(model_id)} as dbt_model, key_json, custom_id, batch_id, attempt,
                result_type as kind, error_type, error_message, canceled_by_user,
                null::boolean as retried_automatically, null::varchar as next_action, harvested_at as failed_at
                from ({latest_outcomes_sql(State(cursor, schema, model_id))})
                where result_type is not null and result_type <> 'succeeded'
                  and {_current_key_sql(json.loads(key_columns), 'key_json')}""")
    return "\nunion all ".join(parts) or (
        "select null::varchar as dbt_model, null::json as key_json, null::varchar as custom_id, "
        "null::varchar as batch_id, null::integer as attempt, null::varchar as kind, null::varchar as error_type, "
        "null::varchar as error_message, null::boolean as canceled_by_user, null::boolean as retried_automatically, "
        "null::varchar as next_action, null::timestamp as failed_at where false")


def all_runs_sql(schema: str) -> str:
    """`all_runs`: one row per run of every batch model, as the run path recorded it."""
    return f"select model_id as dbt_model, {', '.join(RUN_COLUMNS)} from {qualified(schema, 'runs')}"
