"""Checks that stop a run before any API call, and warnings about state that is not where it was.

The key that dbt merges on (`unique_key`) and the key answers are stored by (`key`) must agree; a
changed `key` is accepted only while the table is rebuilt; a model without state here, but with state
in another schema (a changed `state_schema`), says so before every row is bought again.
"""

from __future__ import annotations

from dbt_claude_batch.base import dbt_node
from dbt_claude_batch.base.errors import ConfigError
from dbt_claude_batch.base.identifiers import literal, quote
from dbt_claude_batch.base.keys import custom_id_sql
from dbt_claude_batch.base.log import logger
from dbt_claude_batch.base.settings import Settings
from dbt_claude_batch.run.results import results_sql
from dbt_claude_batch.state import comparisons
from dbt_claude_batch.state.answer_files import schemas_with_models
from dbt_claude_batch.state.state import State, utcnow


# dbt-duckdb's strategies that replace the table's row of every key a run returns (None and "default"
# are its default, delete+insert). `append` and `microbatch` would keep a key's old row beside the new.
REPLACING_STRATEGIES = (None, "default", "delete+insert", "merge")
# Options of those strategies that leave a key's old row in place (a predicate or condition that skips
# its replacement: two rows) or replace only some of its columns (a new request_hash beside an old answer).
ROW_KEEPING_OPTIONS = ("incremental_predicates", "predicates", "merge_update_columns", "merge_exclude_columns",
                       "merge_update_condition", "merge_insert_condition", "merge_update_set_expressions",
                       "merge_clauses")


def check_unique_key(cfg: Settings, identifier: str) -> None:
    """dbt merges returned rows on `unique_key`: it must be the same columns as the batch `key`, and an
    incremental model must have one, with a strategy that replaces a key's row (one row per key)."""
    node_config = dbt_node.config(identifier) or {}
    problem = merge_problem(identifier, node_config, cfg.key)
    if problem:
        raise ConfigError(problem)
    unique_key = dbt_node.columns(node_config.get("unique_key"))
    if unique_key is not None and set(unique_key) != set(cfg.key):
        raise ConfigError(
            f"Model {identifier} has unique_key {list(unique_key)} but claude_batch key {list(cfg.key)}: set both to "
            "the same column(s) (dbt merges results on unique_key, answers are kept per key); nothing was submitted."
        )


def merge_problem(identifier: str, node_config: dict, key: list[str]) -> str | None:
    """Why dbt's incremental merge of the model (its resolved config) could leave a key with an old row
    or old columns beside its new answer, as an error message; None when it replaces each returned
    key's row whole (or the model is not incremental)."""
    if node_config.get("materialized") != "incremental":
        return None
    if node_config.get("unique_key") is None:
        shown = key[0] if len(key) == 1 else list(key)
        return (f"Model {identifier} is incremental without a unique_key: set unique_key={shown!r} (the claude_batch "
                "key) in its dbt.config(...); without it dbt would add a second row for every key whose answer "
                "changes. Nothing was submitted.")
    strategy = node_config.get("incremental_strategy")
    if strategy not in REPLACING_STRATEGIES:
        return (f"Model {identifier} has incremental_strategy {strategy!r}, which keeps a key's old row beside its "
                "new one: set incremental_strategy='delete+insert' (or 'merge') in its dbt.config(...). Nothing "
                "was submitted.")
    option = next((name for name in ROW_KEEPING_OPTIONS if node_config.get(name)), None)
    using = dbt_node.columns(node_config.get("merge_on_using_columns"))
    if option is None and using and set(using) != set(key):
        option = "merge_on_using_columns"
    if option:
        return (f"Model {identifier} sets {option}, with which dbt may keep a key's old row, or some of its old "
                f"columns, beside its new answer: remove {option} from the model's config. Nothing was submitted.")
    return None


def table_columns(state: State, this) -> list[str]:
    """The columns of the model's existing results table `this`, in order (none: no such table)."""
    return list(table_types(state.cursor, this))


def table_types(cursor, this) -> dict[str, str]:
    """The columns of the model's existing results table `this` and their types, in order."""
    return dict(cursor.execute(
        "select column_name, data_type from information_schema.columns where table_catalog = ? and "
        "table_schema = ? and table_name = ? order by ordinal_position",
        [this.database, this.schema, this.identifier]).fetchall())


def check_output_columns(session, state: State, cfg: Settings, key_types: dict[str, str], this) -> None:
    """An incremental run's results must fit the existing table: dbt silently drops a column the table
    lacks (a name added to `output_columns`) and leaves one the results lack (a name removed) with old
    values. Either stops the run before any API call; a full refresh rebuilds the table from state."""
    types = table_types(state.cursor, this)
    if not types:
        return
    table = list(types)
    have = {c.lower(): t for c, t in types.items()}
    produced = {c.lower() for c in session.sql(results_sql(state, cfg, key_types, None)).columns}
    missing = [c for c in (cfg.output_columns or {}) if c.lower() not in have]
    stale = [c for c in table if c.lower() not in produced]
    # Declared types as DuckDB names them (`integer` is INTEGER, `text` VARCHAR), in one query.
    kept = {c: t for c, t in (cfg.output_columns or {}).items() if c.lower() in have}
    declared = state.run("select " + ", ".join(f"typeof(null::{t})" for t in kept.values()))[0] if kept else ()
    retyped = [(c, have[c.lower()], now) for c, now in zip(kept, declared) if now != have[c.lower()]]
    if not missing and not stale and not retyped:
        return
    if missing:
        what = f"has no column {', '.join(missing)}, which output_columns names"
    elif stale:
        what = f"has column {', '.join(stale)}, which output_columns no longer names"
    else:
        what = "has " + ", ".join(f"column {c} of type {was}, which output_columns now declares {now}"
                                  for c, was, now in retyped)
    raise ConfigError(
        f"Results table {this.schema}.{this.identifier} {what}: rebuild it with `dbt run --full-refresh -s "
        f"{this.identifier}` (answers held in state are reused: only requests that changed are bought). Nothing "
        "was submitted."
    )


def check_key_change(state: State, cfg: Settings, identifier: str, is_incremental: bool,
                     results_table: str | None = None, key_types: dict[str, str] | None = None) -> list[str] | None:
    """A new `key` (its columns, or their types) means new custom_ids or new key values: allowed only
    while the results table is rebuilt from scratch, and never with batches in flight. Return the old
    key's columns when this run rebuilds on a changed key (then `relabel_keys` once the source is
    staged), else None.

    `results_table` is the existing results table (an incremental run), to tell a re-buy from a table
    that only `dbt run --empty` built; `key_types` the key's types in the source now.
    """
    recorded = state.recorded_key()
    if recorded is None:
        held = bool(results_table) and bool(state.run(f"select exists (select 1 from {results_table})")[0][0])
        warn_if_state_elsewhere(state, held)
        return None
    if not state.has_state():
        return None
    if recorded != list(cfg.key):
        change = f" from {recorded} to {list(cfg.key)}"
    else:
        was = state.recorded_key_types() or {}
        retyped = [f"column {c} from {was[c]} to {t}" for c, t in (key_types or {}).items()
                   if c in was and was[c] != t]
        if not retyped:
            return None
        change = ": " + ", ".join(retyped)
    # A prompt comparison's batch too: collected under the new key, its keys would not bind.
    flying = (len(state.unharvested_batches()) + len(state.unsettled_submissions())
              + (comparisons.pending(state.cursor, state.schema, state.model_id) is not None))
    if flying:
        raise ConfigError(
            f"Setting `key` of {state.model_id} changed while {flying} batch(es) are in flight: their answers would "
            "come back under the old key while their rows were bought again under the new one. Set `key` back and "
            "run `dbt run` until `dbt-claude-batch status` shows nothing in flight, then change it; nothing was "
            "submitted."
        )
    if is_incremental:
        raise ConfigError(
            f"Setting `key` of {state.model_id} changed{change}: rebuild the table on the "
            f"new key with `dbt run --full-refresh -s {identifier}` (answers to unchanged requests are reused, not "
            "bought again), or set `key` back; nothing was submitted."
        )
    logger.warning(f"key changed{change}; the table is rebuilt on the new key")
    return recorded


def relabel_keys(state: State, staged: str, source_sql: str, source_columns: list[str], old_key: list[str],
                 new_key: list[str], identifier: str) -> None:
    """After a key change, the state of each staged row's custom_id is labelled with the row's key as it
    is now: a renamed or retyped key keeps its custom_ids (the same values), and its answers must come
    back under the new column, not as NULL.

    Only where that history is provably this row's: when the old key's columns are still in the source,
    a custom_id whose history was written for another row (the old key's values differ: `order_id` 7
    became `customer_id` 7) refuses the rebuild before anything is written, as its answers would be
    taken for the wrong row. When they are not (a renamed column), the same values are the same row.
    """
    if all(c in source_columns for c in old_key):
        same = " and ".join(f"json_extract_string(r.key_json, {literal('$.' + c)}) is not distinct from "
                            f"s.{quote(c)}::varchar" for c in old_key)
        clash = state.run(
            f"""select coalesce(r.key_custom_id, r.custom_id), any_value(r.key_json)::varchar
            from {state.table('requests')} r join (select {custom_id_sql(new_key)} as cb_cid, *
                                                   from ({source_sql})) s
              on s.cb_cid = coalesce(r.key_custom_id, r.custom_id)
            join {staged} st on st.__cb_custom_id = s.cb_cid
            where r.model_id = ? and r.key_json::varchar is distinct from st.__cb_key_json::varchar
              and not ({same})
            group by all limit 3""", [state.model_id])
        if clash:
            cid, was = clash[0]
            raise ConfigError(
                f"Setting `key` of {state.model_id} changed from {old_key}, and rows of the new key take custom_ids "
                f"that other rows had under the old one (custom_id {cid} was {was}): their answers would be taken "
                "for the wrong rows. Move the answers by request instead: `dbt-claude-batch answers export --model "
                f"{identifier} --to answers.parquet`, `dbt run-operation dbt_claude_batch.reset_batch_state --args "
                f"'{{model: {identifier}}}'`, `dbt-claude-batch answers import --from answers.parquet`, then `dbt run "
                f"--full-refresh -s {identifier}` (unchanged requests are answered from the import, never by key); "
                "nothing was submitted."
            )
    retire_orphans(state, staged)
    for table, key in (("requests", "coalesce(t.key_custom_id, t.custom_id)"), ("answers", "t.custom_id")):
        state.run(
            f"""update {state.table(table)} t set key_json = st.__cb_key_json::json from {staged} st
            where t.model_id = ? and {key} = st.__cb_custom_id
              and t.key_json::varchar is distinct from st.__cb_key_json::varchar""",
            [state.model_id])


RETIRED = "retired~"


def retire_orphans(state: State, staged: str) -> int:
    """At a key change, the history of custom_ids no staged row takes is another key's: it is renamed out
    of every key's way (`retired~<when>~<custom_id>`; `~` is never in a custom_id), so a later row whose
    new key takes one of those custom_ids starts afresh, and never inherits that history's answer (or is
    taken as answered by it). The requests and outcomes stay, for the bill and for reuse by exact request.
    """
    orphan = (f"r.model_id = {literal(state.model_id)} and coalesce(r.key_custom_id, r.custom_id) not like "
              f"'{RETIRED}%' and coalesce(r.key_custom_id, r.custom_id) not in (select __cb_custom_id from {staged})")
    prefix = literal(f"{RETIRED}{utcnow():%Y%m%dT%H%M%S}~")
    n = state.run(f"select count(distinct coalesce(r.key_custom_id, r.custom_id)) from {state.table('requests')} r "
                  f"where {orphan}")[0][0]
    if not n:
        return 0
    state.run(
        f"""update {state.table('outcomes')} o set custom_id = {prefix} || o.custom_id
        from {state.table('requests')} r join {state.table('submissions')} s using (submission_id)
        where {orphan} and s.batch_id = o.batch_id and r.custom_id = o.custom_id""")
    # Their answers would come back with the new key's columns NULL; their aliases name requests now retired.
    for table in ("answers", "input_aliases"):
        state.run(f"delete from {state.table(table)} t where t.model_id = ? and t.custom_id not like "
                  f"'{RETIRED}%' and t.custom_id not in (select __cb_custom_id from {staged})", [state.model_id])
    state.run(f"update {state.table('prompts')} t set custom_id = {prefix} || t.custom_id, key_custom_id = "
              f"{prefix} || t.key_custom_id where t.model_id = ? and t.key_custom_id not like '{RETIRED}%' "
              f"and t.key_custom_id not in (select __cb_custom_id from {staged})", [state.model_id])
    state.run(f"update {state.table('requests')} r set custom_id = {prefix} || r.custom_id, key_custom_id = "
              f"{prefix} || coalesce(r.key_custom_id, r.custom_id) where {orphan}")
    logger.info(f"{n} custom_id(s) of the old key that no row of the new key takes: their history is kept for "
                "the bill and for reuse by exact request, under retired~ ids")
    return n


def warn_if_state_elsewhere(state: State, table_has_rows: bool) -> None:
    """A model without state here, but with state in another schema or rows in its table: say it re-buys."""
    others = [s for s in schemas_with_models(state.cursor, state.model_id) if s != state.schema]
    if others:
        logger.warning(
            f"state_schema is {state.schema!r}, which has no state for this model, but "
            f"{', '.join(repr(o) for o in others)} has: every row is submitted (and paid for) again. Set "
            f"`state_schema: {others[0]}` to keep using the answers held there."
        )
    elif table_has_rows:
        logger.warning(
            f"the results table has rows but state_schema {state.schema!r} holds no state for it "
            "(state reset, or state_schema changed): every row is submitted (and paid for) again."
        )

