"""What a dbt Python model calls. Orchestrates one run; the logic lives in the modules it calls.

    from dbt_claude_batch import batch_model

    def model(dbt, session):
        dbt.config(materialized="incremental", unique_key="ticket_id")
        return batch_model(dbt, session, source=dbt.ref("stg_tickets"),
                           settings=dbt.config.meta_get("claude_batch"))
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

from dbt_claude_batch import planning
from dbt_claude_batch.client import LazyClient, require_api_key
from dbt_claude_batch.errors import ConfigError
from dbt_claude_batch.identifiers import qualified
from dbt_claude_batch.keys import check_custom_ids_unique, check_keys
from dbt_claude_batch.log import logger
from dbt_claude_batch.prompts import Prompt
from dbt_claude_batch.results import results_sql, write_views
from dbt_claude_batch.settings import Settings
from dbt_claude_batch.state import State

VAR_CANCEL = "claude_batch_cancel"
VAR_RESUBMIT_CANCELED = "claude_batch_resubmit_canceled"


def batch_model(dbt, session, source, settings: dict | None = None, **kwargs: Any):
    """Run one batch model: settle, poll, harvest, submit what is new or changed, return new results.

    `source` is a relation from ``dbt.ref(...)`` or ``dbt.source(...)`` named literally in the model
    file; `settings` is usually ``dbt.config.meta_get("claude_batch")`` (YAML ``+meta: {claude_batch: ...}``);
    keyword arguments override it.
    Returns a DuckDB relation of result rows for dbt's incremental merge on the key columns.
    """
    started = time.perf_counter()
    cfg = Settings.build(settings, kwargs)
    require_api_key()
    api = LazyClient()
    this = dbt.this
    model_id = f"{this.database}.{this.schema}.{this.identifier}"
    cli_vars = _cli_vars()
    cursor = session.cursor()
    state = State(cursor, cfg.state_schema, model_id)

    source_sql = source.sql_query()
    columns = list(source.columns)
    types = {c: str(t) for c, t in zip(source.columns, source.types)}
    prompt = Prompt(cfg, _project_dir())
    prompt.check_columns(columns)
    if cfg.model_column and cfg.model_column not in columns:
        raise ConfigError(
            f"Model column {cfg.model_column!r} is not in the source: fix `model_column`.\n"
            f"Source columns: {', '.join(columns)}"
        )
    check_keys(state.cursor, source_sql, cfg.key, columns)
    key_types = {c: types[c] for c in cfg.key}

    state.ensure()
    state.record_model(list(cfg.key), key_types)
    _drop_leaked_tmp_tables(state, this)

    if state.unsettled_submissions():
        from dbt_claude_batch.submission import settle_unsettled

        settle_unsettled(api.get(), state, cfg.in_doubt_grace_seconds)
    if _var_names_model(cli_vars.get(VAR_CANCEL), this.identifier) and state.unharvested_batches():
        from dbt_claude_batch.polling import cancel_in_flight

        cancel_in_flight(api.get(), state)
    _poll_and_harvest(api, state)

    n_staged = planning.stage(
        state, source_sql, cfg.key, prompt.columns, cfg.model_column, cfg.model, prompt.fingerprint()
    )
    check_custom_ids_unique(state.cursor, planning.STAGED)
    n_candidates = planning.plan(state, cfg.max_attempts, bool(cli_vars.get(VAR_RESUBMIT_CANCELED)))
    chunks = []
    if n_candidates:
        from dbt_claude_batch import submission

        with tempfile.TemporaryDirectory(prefix="dbt_claude_batch_") as tmp:
            chunks = submission.build_spool(state, prompt, cfg, tmp)
            planning.record_aliases(state)
            reasons = {k: v for k, v in planning.reason_counts(state).items() if k != "unchanged"}
            logger.info(
                f"{model_id}: {n_staged} source rows, {sum(reasons.values())} to submit in {len(chunks)} batch(es)"
                + (f" ({', '.join(f'{v} {k}' for k, v in reasons.items())})" if reasons else "")
            )
            for chunk in chunks:
                submission.submit_chunk(api.get(), state, submission.spool_path(tmp), chunk)
    if not chunks:
        logger.info(f"{model_id}: {n_staged} source rows, nothing to submit")

    if cfg.wait_seconds > 0 and state.unharvested_batches():
        from dbt_claude_batch.polling import wait_until

        deadline = time.monotonic() + cfg.wait_seconds

        def step() -> bool:
            _poll_and_harvest(api, state)
            return not state.unharvested_batches()

        if not wait_until(deadline, cfg.poll_interval_seconds, step):
            logger.info(f"{model_id}: batches still in flight; the next run collects them")

    write_views(state, this.database, this.schema, this.identifier, key_types, cfg.max_attempts)
    existing = qualified(this.database, this.schema, this.identifier) if dbt.is_incremental else None
    for temp in (planning.STAGED, planning.PENDING, planning.RENDERED):
        state.run(f"drop table if exists {temp}")
    logger.info(f"{model_id}: dbt_claude_batch work took {time.perf_counter() - started:.2f}s")
    return session.sql(results_sql(state, key_types, existing))


def _poll_and_harvest(api: LazyClient, state: State) -> None:
    if not state.unharvested_batches():
        return
    from dbt_claude_batch.harvest import harvest_batch
    from dbt_claude_batch.polling import refresh

    for batch_id, archived in refresh(api.get(), state):
        harvest_batch(api.get(), state, batch_id, archived)


def _drop_leaked_tmp_tables(state: State, this) -> None:
    """dbt-duckdb leaves `<model>__dbt_tmp...` tables after incremental Python runs; drop earlier ones."""
    rows = state.run(
        "select table_name from information_schema.tables where table_catalog = ? and table_schema = ? "
        "and table_name like ? escape '\\'",
        [this.database, this.schema, this.identifier.replace("_", "\\_") + "\\_\\_dbt\\_tmp%"],
    )
    for (name,) in rows:
        state.run(f"drop table if exists {qualified(this.database, this.schema, name)}")


def _cli_vars() -> dict:
    """Vars given on the dbt command line (--vars); Python models cannot call var() themselves."""
    try:
        from dbt.flags import get_flags

        return dict(getattr(get_flags(), "VARS", None) or {})
    except Exception:  # noqa: BLE001 - outside a dbt invocation there are simply no vars
        return {}


def _project_dir() -> str | None:
    try:
        from dbt.flags import get_flags

        return getattr(get_flags(), "PROJECT_DIR", None)
    except Exception:  # noqa: BLE001
        return None


def _var_names_model(value: Any, identifier: str) -> bool:
    """A var that is true for every batch model, or names this one (string or list)."""
    if value is True or (isinstance(value, str) and value.lower() in ("true", "all", "*")):
        return True
    if isinstance(value, str):
        return value == identifier
    if isinstance(value, (list, tuple)):
        return identifier in value
    return False


__all__ = ["batch_model"]
