"""What users query: the results rows the model returns, and the views over state (SQL in `views`).

Original key columns come back with their original types (packed as JSON in state, unpacked with the
types recorded from the source), so users join with ``using (ticket_id)``, never through custom_id.
A key whose prompt was split gets one row: its parts' answers joined (`split_join: concat`, with a
blank line between parts) or as a JSON array of the part answers (`json_array`).
"""

from __future__ import annotations

import json
import threading

import duckdb

from dbt_claude_batch.identifiers import literal, qualified
from dbt_claude_batch.inspect import spend_view_sql
from dbt_claude_batch.log import logger
from dbt_claude_batch.outputs import flattened_columns_sql
from dbt_claude_batch.planning import key_attempts_sql
from dbt_claude_batch.pricing import cost_sql, model_family_sql, prices_cte
from dbt_claude_batch.settings import Settings
from dbt_claude_batch.state import State
from dbt_claude_batch.views import (STATE_VIEWS, all_failures_sql, all_runs_sql, batches_view_sql,
                                    failures_view_sql, keys_view_sql)

# dbt runs models on threads of one process: two replacing the same state view at once would conflict.
_state_views_lock = threading.Lock()


def _unpack_keys(key_types: dict[str, str], expr: str = "key_json") -> str:
    return f"unnest(from_json({expr}, {literal(json.dumps(key_types))}))"


def results_sql(state: State, settings: Settings, key_types: dict[str, str], existing: str | None,
                watermark: bool = False, current_keys: str | None = None, flag_column: bool = True) -> str:
    """Latest successful result per key; with `existing`, only those newer than what that table holds.

    With `watermark`, only keys with an outcome recorded after the newest `harvest_seq` in `existing`,
    or with a request in flight, are considered. The watermark is read from the table itself, so a run
    whose merge never happened is simply caught up by the next one. With `current_keys` (a query of
    custom_ids), only those keys. `newer_request_in_flight` says a row's answer is about to be
    replaced; `flag_column` is false for a table built before that column existed.
    """
    flag = "coalesce(f.flying_attempt > w.attempt, false)"
    flag_differs = f" and e.newer_request_in_flight is not distinct from {flag}" if flag_column else ""
    newer = (
        # An older attempt never replaces a newer one; after reset_batch_state attempts count from 1
        # again, and the newer harvest_seq lets those answers in.
        f"where not exists (select 1 from {existing} e where e.custom_id = w.custom_id and e.attempt >= w.attempt"
        + (" and coalesce(e.harvest_seq, 0) >= w.harvest_seq" + flag_differs + ")" if watermark else ")")
        if existing
        else ""
    )
    if current_keys:
        newer += (" and " if newer else "where ") + f"w.custom_id in ({current_keys})"
    in_flight = (
        f"select coalesce(r.key_custom_id, r.custom_id) as custom_id, max(r.attempt) as flying_attempt "
        f"from {state.table('requests')} r join {state.table('submissions')} s using (submission_id) "
        f"left join {state.table('batches')} b on b.batch_id = s.batch_id "
        f"where s.model_id = {literal(state.model_id)} and s.status in ('creating', 'in_doubt', 'submitted') "
        f"and b.harvested_at is null group by all"
    )
    recent = None
    if existing and watermark:
        recent = (
            f"select distinct coalesce(r.key_custom_id, r.custom_id) from {state.table('outcomes')} o "
            f"join {state.table('submissions')} s on s.batch_id = o.batch_id "
            f"join {state.table('requests')} r on r.submission_id = s.submission_id and r.custom_id = o.custom_id "
            f"where o.model_id = {literal(state.model_id)} "
            f"and coalesce(o.harvest_seq, 0) > (select coalesce(max(harvest_seq), -1) from {existing}) "
            f"union select custom_id from cb_in_flight"
        )
    if settings.split_join == "json_array":
        text = "case when count(*) = 1 then any_value(output_text) else to_json(list(output_text order by part))::varchar end"
    else:
        text = "string_agg(output_text, chr(10) || chr(10) order by part)"
    return f"""with {prices_cte(settings.prices)},
    cb_in_flight as ({in_flight}),
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
           request_hash, completed_at, harvest_seq, parts, shared_from,
           {flag} as newer_request_in_flight
    from w left join cb_in_flight f using (custom_id) {newer}"""


def write_views(state: State, settings: Settings, database: str, schema: str, identifier: str,
                key_types: dict[str, str], source_sql: str | None = None) -> list[str]:
    """(Re)create the views next to the model, then the state views; returns the per-model views' names.

    `<model>__failures` and `<model>__batches` always; `<model>__keys` (every key of the current
    source with its status, which the package's generic tests read) when `source_sql`, the query of
    the model's source, is given. The key columns are those of `key_types`, in its order.
    """
    views = {"failures": failures_view_sql(state, settings, key_types), "batches": batches_view_sql(state)}
    if source_sql is not None:
        views["keys"] = keys_view_sql(state, settings, source_sql, list(key_types))
    names = []
    for suffix, sql in views.items():
        name = qualified(database, schema, f"{identifier}__{suffix}")
        state.run(f"create or replace view {name} as {sql}")
        names.append(name)
    write_state_views(state)
    return names


def write_state_views(state: State) -> None:
    """(Re)create `all_failures`, `all_batches` and `all_runs` in the state schema: views only, cheap.

    They are the dbt sources of the package. One that cannot be written (a table of that name that is
    not ours) is logged and left as it is: the model's results do not depend on it.
    """
    sql = {"all_failures": lambda: all_failures_sql(state.cursor, state.schema),
           "all_batches": lambda: batches_view_sql(state, every_model=True),
           "all_runs": lambda: all_runs_sql(state.schema),
           "all_spend": lambda: spend_view_sql(state.schema)}
    with _state_views_lock:
        for name in STATE_VIEWS:
            try:
                state.run(f"create or replace view {state.table(name)} as {sql[name]()}")
            except duckdb.Error as exc:
                logger.warning(f"could not write the view {state.schema}.{name} "
                               f"(source dbt_claude_batch.{name} may be stale): {exc}")
