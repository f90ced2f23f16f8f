"""What users query: the results rows the model returns, and the views over state (SQL in `views`).

Original key columns come back with their original types (packed as JSON in state, unpacked with the
types recorded from the source), so users join with ``using (ticket_id)``, never through custom_id.
A key whose prompt was split gets one row: its parts' answers joined (`split_join: concat`, with a
blank line between parts) or as a JSON array of the part answers (`json_array`); a key whose PDF was
cut into page ranges also lists its parts' pages in `part_pages`.
"""

from __future__ import annotations

import json
import threading

import duckdb

from dbt_claude_batch.base.identifiers import literal, qualified
from dbt_claude_batch.state.spend import spend_view_sql
from dbt_claude_batch.base.log import logger
from dbt_claude_batch.run.outputs import flattened_columns_sql
from dbt_claude_batch.base.pricing import cost_sql, model_family_sql, prices_cte
from dbt_claude_batch.base.settings import Settings
from dbt_claude_batch.state.state import State
from dbt_claude_batch.state.views import (STATE_VIEWS, all_failures_sql, all_runs_sql, batches_view_sql,
                                    failures_view_sql, health_view_sql, keys_view_sql)

# dbt runs models on threads of one process: two replacing the same state view at once would conflict.
_state_views_lock = threading.Lock()


def _unpack_keys(key_types: dict[str, str], expr: str = "key_json") -> str:
    return f"unnest(from_json({expr}, {literal(json.dumps(key_types))}))"


def results_sql(state: State, settings: Settings, key_types: dict[str, str], existing: str | None,
                watermark: bool = False, current_keys: str | None = None, flag_column: bool = True,
                source_keys: str | None = None) -> str:
    """Latest successful result per key, read from the answers table; with `existing`, only those
    newer than what that table holds.

    With `watermark`, only keys with an outcome recorded after the newest `harvest_seq` in `existing`,
    or with a request in flight, are considered. The watermark is read from the table itself, so a run
    whose merge never happened is simply caught up by the next one. With `current_keys` (a query of
    custom_ids), only those keys. `newer_request_in_flight` says a row's answer is about to be
    replaced; `flag_column` is false for a table built before that column existed. With `source_keys`
    (a query of the current source's custom_ids), held answers of source keys missing from `existing`
    (rows deleted from it) are returned again (`restore_sql`).
    """
    flag = "coalesce(f.flying_attempt > w.attempt, false)"
    flag_differs = f" and e.newer_request_in_flight is not distinct from {flag}" if flag_column else ""
    where = [f"w.model_id = {literal(state.model_id)}"]
    if existing:
        # An older attempt never replaces a newer one; after reset_batch_state attempts count from 1
        # again, and the newer harvest_seq lets those answers in.
        where.append(
            f"not exists (select 1 from {existing} e where e.custom_id = w.custom_id and e.attempt >= w.attempt"
            + (" and coalesce(e.harvest_seq, 0) >= w.seq" + flag_differs + ")" if watermark else ")"))
    if existing and watermark:
        # A literal, so DuckDB skips the row groups of older answers (they are appended in seq order).
        mark = int(state.run(f"select coalesce(max(harvest_seq), -1) from {existing}")[0][0])
        newer_answers, flying = state.run(
            f"select exists (select 1 from {state.table('answers')} where model_id = ? and seq > {mark}), "
            f"exists ({state.flying_requests_sql()})", [state.model_id])[0]
        # Rows flagged as about to change whose newer request went nowhere (abandoned) are cleared too.
        flagged = flag_column and state.run(f"select exists (select 1 from {existing} where newer_request_in_flight)")[0][0]
        restore, gap = restore_sql(state, existing, mark, source_keys) if source_keys else (None, None)
        if not newer_answers and not flying and not flagged:
            # Nothing the table has not seen: a relation DuckDB knows is empty, whatever the table's size.
            where.append(restore or "false")
            gap = None if restore is None else gap  # nothing returned: the remembered counts stand
        else:
            also = f" or w.custom_id in (select custom_id from {existing} where newer_request_in_flight)" if flagged else ""
            also += f" or {restore}" if restore else ""
            where.append(f"(w.seq > {mark} or w.custom_id in (select custom_id from cb_in_flight){also})")
    elif source_keys and not existing:
        state.set_results_gap(None)  # a rebuilt table: the next incremental run checks afresh
    if current_keys:
        where.append(f"w.custom_id in ({current_keys})")
    in_flight = f"select custom_id, max(attempt) as flying_attempt from ({state.flying_requests_sql()}) group by all"
    if existing and watermark and gap is not None:
        # Nothing is missing once dbt merges these rows (what was missing is among them), and the merge
        # adds a row per returned key the table lacks: remember the counts it will leave, so the next
        # run with nothing to do needs no anti-join. A merge that never happened leaves other counts
        # (unless it would have added nothing), and that run checks again.
        added = state.run(
            f"with cb_in_flight as ({in_flight}) select count(*) from {state.table('answers')} w "
            f"left join cb_in_flight f using (custom_id) where {' and '.join(where)} and not exists (select 1 from {existing} e where e.custom_id = w.custom_id)"
        )[0][0]
        state.set_results_gap(gap - added)
    if settings.split_join == "json_array":
        text = "to_json(w.output_parts)::varchar"
    else:
        text = "array_to_string(w.output_parts, chr(10) || chr(10))"
    return f"""with {prices_cte(settings.prices)},
    cb_in_flight as ({in_flight})
    select {_unpack_keys(key_types, 'w.key_json')}, w.custom_id,
           case when w.parts = 1 then w.output_text else {text} end as output_text,
           {"w.output_json" if settings.output_schema else "null::json as output_json"}
           {flattened_columns_sql(settings.output_columns, 'w.output_json')},
           w.stop_reason, w.answered_model, w.input_tokens, w.output_tokens, w.cache_creation_input_tokens,
           w.cache_read_input_tokens, cast(case when w.paid is not null then {cost_sql('w.paid', 'p')}
                     else {cost_sql('w', 'p')} end as double) as cost_usd, w.service_tier, w.batch_id,
           w.attempt, w.request_hash, w.completed_at, w.seq as harvest_seq, w.parts, w.part_pages, w.shared_from,
           {flag} as newer_request_in_flight
    from {state.table('answers')} w
    left join cb_in_flight f using (custom_id)
    left join cb_prices p on p.model_family = {model_family_sql('w.answered_model')}
    where {' and '.join(where)}"""


def restore_sql(state: State, existing: str, mark: int, source_keys: str) -> tuple[str | None, int]:
    """A condition on answers `w` selecting held answers of current source keys that `existing` lacks
    (rows deleted by hand or by an upstream job), or None when none is missing; and the held answers
    less the table's rows. No API call: state holds the answers.

    On a run with nothing to do this costs two counts: the held answers less the table's rows is
    remembered (`models.results_gap`) when a check finds nothing missing (or, by `results_sql`, as the
    merge of the rows a run returns will leave it), and while it stays the same (and the source its
    quiet digest) no row can have gone. Otherwise an anti-join of the answers the table has seen
    against it; only when that finds some is the source read, so that a key deleted from both the
    source and the table (on purpose) is not brought back.
    """
    gap = state.run(f"select (select count(*) from {state.table('answers')} where model_id = ?) "
                    f"- (select count(*) from {existing})", [state.model_id])[0][0]
    if gap == state.results_gap():
        return None, gap
    # Answers the watermark does not bring (seq <= mark) whose key has no row in the table.
    absent = (f"select w.custom_id from {state.table('answers')} w anti join {existing} e on e.custom_id = w.custom_id "
              f"where w.model_id = {literal(state.model_id)} and w.seq <= {int(mark)}")
    missing = 0
    if state.run(f"select count(*) from ({absent})")[0][0]:
        missing = state.run(f"select count(*) from ({absent}) where custom_id in ({source_keys})")[0][0]
    if not missing:
        state.set_results_gap(gap)
        return None, gap
    logger.info(f"restoring {missing} result row(s) missing from {state.model_id} from the answers held in state "
                "(no API call)")
    return f"(w.custom_id in ({absent}) and w.custom_id in ({source_keys}))", gap


def write_views(state: State, settings: Settings, database: str, schema: str, identifier: str,
                key_types: dict[str, str], source_sql: str | None = None, state_views: bool = True) -> list[str]:
    """(Re)create the views next to the model, then the state views; returns the per-model views' names.

    `<model>__failures`, `<model>__batches` and `<model>__health` always; `<model>__keys` (every key of
    the current source with its status, which the package's generic tests read) when `source_sql`, the
    query of the model's source, is given. The key columns are those of `key_types`, in its order.
    `state_views` False leaves the state views to the caller (a key change records the new key later).
    """
    views = {"failures": failures_view_sql(state, settings, key_types, source_sql), "batches": batches_view_sql(state),
             "health": health_view_sql(state, settings)}
    if source_sql is not None:
        views["keys"] = keys_view_sql(state, settings, source_sql, list(key_types))
    names = []
    for suffix, sql in views.items():
        name = qualified(database, schema, f"{identifier}__{suffix}")
        state.run(f"create or replace view {name} as {sql}")
        names.append(name)
    if state_views:
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
