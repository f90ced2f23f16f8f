"""What a dbt Python model calls. Orchestrates one run; the logic lives in the modules it calls.

    from dbt_claude_batch import batch_model

    def model(dbt, session):
        dbt.config(materialized="incremental", unique_key="ticket_id")
        return batch_model(dbt, session, source=dbt.ref("stg_tickets"),
                           settings=dbt.config.meta_get("claude_batch"))
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from typing import Any

from dbt_claude_batch.run import answers, planning
from dbt_claude_batch.run.components import COMPONENTS_MACRO, shared_components
from dbt_claude_batch.api.client import LazyClient, is_sdk_error, redact, require_api_key
from dbt_claude_batch.base.duckdb_memory import bounded
from dbt_claude_batch.run.empty_build import check_empty_fits, empty_requested, empty_results
from dbt_claude_batch.base.errors import ConfigError, RunHealthError
from dbt_claude_batch.run.model_source import source_shape, stamp_files
from dbt_claude_batch.base.identifiers import qualified
from dbt_claude_batch.run.interruption import StopFlag, stop_on_cancel
from dbt_claude_batch.base.keys import check_custom_ids_unique, check_keys, custom_id_sql
from dbt_claude_batch.base.log import for_model, logger
from dbt_claude_batch.run.preflight import (check_key_change, check_output_columns, check_unique_key, relabel_keys,
                                            table_columns)
from dbt_claude_batch.base.prompts import REQUEST_FORMAT_VERSION, Prompt
from dbt_claude_batch.run import retention
from dbt_claude_batch.run.results import results_sql, write_state_views, write_views
from dbt_claude_batch.state.run_record import RunRecord, check_health, finish_run, start_run
from dbt_claude_batch.base.run_vars import RunVars
from dbt_claude_batch.base.settings import Settings
from dbt_claude_batch.state.snapshot import write_snapshot
from dbt_claude_batch.state.state import State
from dbt_claude_batch.state.workdir import clean_stale

def batch_model(dbt, session, source, settings: dict | None = None, **kwargs: Any):
    """Run one batch model: settle, poll, harvest, submit what is new or changed, return new results.

    `source` is a relation from ``dbt.ref(...)`` or ``dbt.source(...)`` named literally in the model
    file; `settings` is usually ``dbt.config.meta_get("claude_batch")`` (YAML ``+meta: {claude_batch: ...}``);
    keyword arguments override it. Returns a DuckDB relation of result rows for dbt's incremental
    merge on the key columns.
    """
    started = time.perf_counter()
    cfg = Settings.build(settings, kwargs)
    this = dbt.this
    # The catalog name is left out on purpose: DuckDB takes it from the file name, and copying or
    # renaming the file must not orphan the state (and buy every answer again).
    model_id = f"{this.schema}.{this.identifier}"
    check_unique_key(cfg, this.identifier)  # before --empty too: a CI build with --empty catches it
    if empty_requested():
        with for_model(model_id):
            _, _, _, key_types = source_shape(source, cfg)
            empty = empty_results(session, cfg, key_types, model_id)
            if dbt.is_incremental:
                check_empty_fits(session, empty, this)
            logger.info("--empty: " + ("the results table keeps its rows (an incremental merge of none)"
                                       if dbt.is_incremental else "the results table is built with its columns and "
                                       "no rows") + "; no API call was made and the state is untouched")
            return empty
    run_vars = RunVars.from_dbt(this.identifier)
    if run_vars.plan:  # builds nothing, calls no API: see run/plan.py
        with for_model(model_id), bounded(session.cursor(), cfg.memory_limit):
            return _plan(dbt, session, source, cfg, model_id, run_vars)
    require_api_key()
    # The client is closed on every way out, so that no SDK import started early outlives the run.
    with (for_model(model_id), bounded(session.cursor(), cfg.memory_limit), LazyClient() as api,
          stop_on_cancel(session) as stop):
        return _run(dbt, session, source, cfg, model_id, started, api, stop, run_vars)


def _run(dbt, session, source, cfg: Settings, model_id: str, started: float, api: LazyClient, stop: StopFlag,
         run_vars: RunVars):
    state, source_sql, columns, prompt, key_types = _open(dbt, session, source, cfg, model_id)

    # The one read of the whole source goes on beside the fixed state work, up to the quiet decision.
    with planning.SourceDigest(session.cursor(), source_sql, cfg.key, prompt.input_columns, cfg.model_column,
                               _planning_seed(cfg) + prompt.fingerprint()) as source_digest:
        rekey = _ready(state, cfg, dbt, key_types)
        if dbt.is_incremental and not (run_vars.sample_size or run_vars.compare_size):  # those try settings out
            check_output_columns(session, state, cfg, key_types, dbt.this)
        unfinished = bool(state.unharvested_batches() or state.unsettled_submissions()
                          or state.unfinished_sync_batches())
        if unfinished:  # batches to poll or creates to settle: certain to call the API
            api.warm()
        record = start_run(state)
        try:
            return _recorded_run(dbt, session, source_sql, cfg, state, api, run_vars, prompt, columns, key_types,
                                 source_digest, unfinished, started, record, stop, rekey)
        except BaseException as exc:
            if not record.finished:
                finish_run(state, record, "error", redact(str(exc).splitlines()[0]) if str(exc) else type(exc).__name__,
                           cfg.prices)
            raise


def _open(dbt, session, source, cfg: Settings, model_id: str) -> tuple[State, str, list[str], Prompt, dict[str, str]]:
    """What a run and a plan both start from: the state, the source's shape and prompt."""
    state = State(session.cursor(), cfg.state_schema, model_id, cfg.output_schema)
    return (state, *source_shape(source, cfg))


def _ready(state: State, cfg: Settings, dbt, record_key_types: dict[str, str] | None = None) -> list[str] | None:
    """The state schema up to date, the key unchanged (then recorded, for a run), and the answers table
    current; return the old key's columns when the run rebuilds on a changed key."""
    this = dbt.this
    state.ensure()
    rekey = check_key_change(state, cfg, this.identifier, dbt.is_incremental,
                             qualified(this.database, this.schema, this.identifier) if dbt.is_incremental else None,
                             record_key_types)
    if record_key_types is not None and rekey:
        # Recorded once the rows' state is relabelled (`_recorded_run`): a run stopped before then
        # meets the key change again. The source is staged, so that the relabelling can happen.
        state.set_quiet_digest(None)
    elif record_key_types is not None:  # a plan records nothing but itself
        state.record_model(list(cfg.key), record_key_types)
    if not state.answers_ready():  # state written by a version before the answers table
        with state.transaction():
            answers.rebuild(state)
            state.set_answers_ready()
    answers.refresh_pending(state)  # harvested by a run that stopped before its answers were brought up to date
    return rekey


def _stage_checked(state: State, source_sql: str, cfg: Settings, prompt: Prompt, stamped, blobs) -> int:
    """Stage the source (the pending rows with their hashes) and check its custom_ids; return rows staged."""
    components = shared_components(prompt.source_text, cfg.fingerprint_payload(), REQUEST_FORMAT_VERSION)
    n_staged = planning.stage(state, source_sql, cfg.key, prompt.input_columns, cfg.model_column, cfg.model,
                              prompt.fingerprint(), stamped, blobs, components, [a["column"] for a in cfg.attachments])
    check_custom_ids_unique(state.cursor, planning.STAGED)
    return n_staged


def _drop_temps(state: State) -> None:
    planning.drop_pending(state)
    planning.drop_rendered(state)
    for temp in (planning.STAGED, planning.OPEN, "cb_file_stamps"):
        state.run(f"drop table if exists {temp}")
    state.run(f"drop macro if exists {COMPONENTS_MACRO}")


def _plan(dbt, session, source, cfg: Settings, model_id: str, run_vars: RunVars):
    """`claude_batch_plan`: stage, plan and render as a run would, record and log the plan, return no new rows."""
    from dbt_claude_batch.run import plan

    this = dbt.this
    state, source_sql, columns, prompt, key_types = _open(dbt, session, source, cfg, model_id)
    _ready(state, cfg, dbt)
    check_keys(state.cursor, source_sql, cfg.key, columns)
    stamped, blobs, _ = stamp_files(cfg, source_sql, state)
    try:
        n_staged = _stage_checked(state, source_sql, cfg, prompt, stamped, blobs)
        plan.plan_and_record(state, cfg, prompt, source_sql, n_staged, run_vars)
    finally:
        _drop_temps(state)
    logger.info("claude_batch_plan: nothing was submitted or built; the results table is unchanged")
    if dbt.is_incremental:  # an incremental merge of no rows leaves the table as it is
        return session.sql(f"select * from {qualified(this.database, this.schema, this.identifier)} limit 0")
    # A rebuild (first run, --full-refresh, a table model) gets what state holds, as a run would return it.
    source_keys = f"select {custom_id_sql(cfg.key)} from ({source_sql})"
    return session.sql(results_sql(state, cfg, key_types, None, current_keys=source_keys, source_keys=source_keys))


def _recorded_run(dbt, session, source_sql: str, cfg: Settings, state: State, api: LazyClient, run_vars: RunVars,
                  prompt: Prompt, columns: list[str], key_types: dict[str, str],
                  source_digest: planning.SourceDigest, unfinished: bool, started: float, record: RunRecord,
                  stop: StopFlag, rekey: list[str] | None = None):
    """The run once its `runs` row exists: the rest of the fixed work, then the digest decides."""
    this = dbt.this
    _drop_leaked_tmp_tables(state, this)
    clean_stale()
    # On a key change, the state views wait for the new key to be recorded (below).
    write_views(state, cfg, this.database, this.schema, this.identifier, key_types, source_sql, state_views=not rekey)
    digest, n_rows = source_digest.result()
    stamped, blobs, files = stamp_files(cfg, source_sql, state)
    if files is not None:  # an edited file at the same path changes no column: its stamp joins the digest
        digest = hashlib.sha256(f"{digest}|{files}".encode()).hexdigest()
    # Same source, same settings, and the last run left nothing to do: no staging, no planning join.
    quiet = digest == state.quiet_digest() and not run_vars.any() and not unfinished
    finish = functools.partial(_finish, session, state, cfg, this, key_types, dbt.is_incremental, started,
                               source_sql, record)
    if quiet:
        record.n_source_rows = n_rows
        logger.info(f"{n_rows} source rows, unchanged since the last run: nothing to submit")
        return finish(source_unchanged=True)
    if n_rows and not state.has_state():  # a first run with rows to send
        api.warm()
    check_keys(state.cursor, source_sql, cfg.key, columns)  # an unchanged source was checked already
    n_staged = record.n_source_rows = _stage_checked(state, source_sql, cfg, prompt, stamped, blobs)
    state.set_quiet_digest(None)
    if rekey:
        with state.transaction():
            relabel_keys(state, planning.STAGED, source_sql, columns, rekey, list(cfg.key), this.identifier)
            state.record_model(list(cfg.key), key_types)
        write_state_views(state)  # all_failures packs each model's key as recorded: the new one from now

    try:
        done = _api_work(api, state, prompt, cfg, run_vars, n_staged, source_sql, this, key_types, stop)
    except Exception as exc:
        if is_sdk_error(exc, "APIConnectionError"):
            from dbt_claude_batch.run.submission import unreachable_error

            raise unreachable_error(exc, "talking to the Message Batches API") from None
        raise
    if done is None:  # a sample preview or a prompt comparison
        return finish(only_new=True)
    sent, waiting = done
    record.n_submitted = sent
    if stop.requested:
        line = stop_line(sent, waiting, run_vars.allow_rebuy)
        logger.warning(line)
        return finish(outcome="stopped", note=line)
    if (not sent and not waiting and not run_vars.any() and not state.unharvested_batches()
            and not state.unsettled_submissions()):
        state.set_quiet_digest(digest)
    return finish()


def stop_line(sent: int, waiting: int, allowed_rebuy: bool) -> str:
    """The one line a run stopped by Ctrl-C (or SIGTERM under `dbt-claude-batch dbt`) logs and records."""
    line = (f"stopped by Ctrl-C: this run submitted {sent} request(s) before the stop and {waiting} were not "
            + ("submitted (they stay pending); the next dbt run continues from here: it collects the batches "
               "in flight and submits the rest, and nothing is bought twice" if waiting else
               "submitted; the next dbt run collects the batches in flight, and nothing is bought twice"))
    if waiting and allowed_rebuy:
        line += ("; this run was let through the re-buy guard by claude_batch_allow_rebuy: pass it to the next "
                 "run too, or the guard stops it before buying the rest")
    return line


def _api_work(api: LazyClient, state: State, prompt: Prompt, cfg: Settings, run_vars: RunVars, n_staged: int,
              source_sql: str, this, key_types: dict[str, str], stop: StopFlag) -> tuple[int, int] | None:
    """Settle, cancel, poll, harvest, submit and wait; return the request lines sent and those left
    waiting for room in the queue or by a stop (None for a sample or a comparison)."""
    model_id = state.model_id
    if run_vars.sample_size:
        from dbt_claude_batch.run.sample import run_sample

        if not n_staged:
            raise ConfigError(
                f"`claude_batch_sample` asked for {run_vars.sample_size} rows, but the source of {model_id} is "
                "empty: load rows into the staging model, or run without the var."
            )
        run_sample(api.get(), state, prompt, cfg, run_vars.sample_size, this, key_types, source_sql)
        return None
    if run_vars.compare_size:  # a prompt comparison: nothing written but `<model>__compare` (and its batch)
        from dbt_claude_batch.run.compare import run_compare

        run_compare(api.get(), state, prompt, cfg, run_vars.compare_size, this, key_types, source_sql,
                    run_vars.compare_via, stop)
        return None

    for batch_id in state.unfinished_sync_batches():
        from dbt_claude_batch.run.sync import finish_interrupted

        finish_interrupted(state, batch_id)
    _settle(api, state, cfg)
    warned: set[str] = set()  # batches whose passing server error this run has logged
    if run_vars.cancel and state.unharvested_batches():
        from dbt_claude_batch.run.polling import cancel_in_flight

        cancel_in_flight(api.get(), state)
    _poll_and_harvest(api, state, cfg, warned, run_vars.gone_batches)

    if run_vars.rerun_keys:
        missing = run_vars.missing_rerun_keys(state.cursor, planning.STAGED, cfg.key)
        if missing:
            logger.warning(f"claude_batch_rerun_keys names {len(missing)} key(s) the source does not have: "
                           f"{', '.join(map(repr, missing[:10]))}; they are ignored")
    n_candidates = planning.plan(
        state, cfg.max_attempts, run_vars.resubmit_canceled, cfg.effective_max_tokens_cap, cfg.max_tokens,
        can_split=cfg.split_column is not None, rerun_filter=run_vars.rerun_filter(cfg.key),
    )
    if cfg.split_column is None and not cfg.attachments and not planning.pending_is_view(state):
        # Only a key cut into parts reads the staged rows after planning (parts.check_part_ids), and the
        # pending rows of a first attempt are a view of them: at millions of rows they would otherwise
        # stay in memory, or spilled to disk, until the run ends.
        state.run(f"drop table if exists {planning.STAGED}")
    sent = waiting = 0
    if n_candidates and stop.requested:
        waiting = n_candidates
    elif n_candidates:
        from dbt_claude_batch.run.dispatch import submit_pending

        api.warm()

        sent, waiting = submit_pending(api, state, prompt, cfg, n_staged, source_sql, stop,
                                       allow_rebuy=run_vars.allow_rebuy)
    if not sent and not waiting:
        logger.info(f"{n_staged} source rows, nothing to submit")

    # Worth waiting for: batches in flight, and unanswered creates whose candidates may prove theirs.
    # One in doubt with no candidate only waits out its grace period, which is not this run's to spend.
    if cfg.wait_seconds > 0 and not stop.requested and (state.unharvested_batches() or state.awaiting_proof()):
        from dbt_claude_batch.run.polling import wait_until

        def step() -> bool:
            _settle(api, state, cfg)
            _poll_and_harvest(api, state, cfg, warned, run_vars.gone_batches)
            write_snapshot(state.cursor, cfg.state_schema)
            return not state.unharvested_batches() and not state.awaiting_proof()

        if not wait_until(state, time.monotonic() + cfg.wait_seconds, cfg.poll_interval_seconds, step, stop):
            logger.info("batches still in flight; the next run collects them")
    from dbt_claude_batch.run.uploads import release_unneeded

    # Files uploaded for attachments (`upload: files_api`) that no request needs now: one query when none is held.
    release_unneeded(api, state, cfg.effective_max_tokens_cap, cfg.split_column is not None)
    retention.delete_harvested_batches(api.get, state, cfg)
    return sent, waiting


def _settle(api: LazyClient, state: State, cfg: Settings) -> None:
    if state.unsettled_submissions():
        from dbt_claude_batch.run.submission import settle_unsettled

        settle_unsettled(api.get(), state, cfg.in_doubt_grace_seconds, cfg.clock_skew_seconds)


def _planning_seed(cfg: Settings) -> str:
    """Settings that change what planning decides without changing any input hash."""
    # on_source_delete only when set: a run that starts deleting rows gone from the source is not quiet
    deleting = ["on_source_delete"] if cfg.on_source_delete == "delete" else []
    return json.dumps([cfg.max_attempts, cfg.effective_max_tokens_cap, cfg.split_column, cfg.dedupe, *deleting])


def _finish(session, state: State, cfg: Settings, this, key_types, is_incremental: bool, started: float,
            source_sql: str, record: RunRecord, only_new: bool = False, outcome: str = "ok", note: str | None = None,
            source_unchanged: bool = False):
    _drop_temps(state)
    existing = qualified(this.database, this.schema, this.identifier) if is_incremental else None
    watermark = existing is not None and _has_column(state, this, "harvest_seq")
    # A rebuilt table holds exactly the keys of the current source; an incremental run keeps the rest.
    source_keys = f"select {custom_id_sql(cfg.key)} from ({source_sql})"
    if not source_unchanged and not only_new:
        retention.drop_rows_gone_from_source(session, cfg, existing, source_keys, record.n_source_rows)
    # Counted before compaction, which may remove this very run's outcomes (keep_history_days: 0).
    finish_run(state, record, outcome, note, prices=cfg.prices)
    retention.prune_prompts(state, cfg)
    retention.compact_if_due(state, cfg)
    # With on_source_delete: delete, only source keys come back (a deleted row may have held the watermark).
    current = None if is_incremental and cfg.on_source_delete != "delete" else source_keys
    if current and not record.n_source_rows:
        held = state.run(f"select count(*) from {state.table('answers')} where model_id = ?", [state.model_id])[0][0]
        if held:
            # An upstream built with --empty (or a load that failed) reads as empty; a rebuild must not
            # throw away answers that were paid for.
            current = None
        if held and not is_incremental:
            logger.warning(f"the source is empty in this run, so the rebuilt table keeps the {held} answer(s) held "
                           "in state instead of dropping them; once the source has rows again, a full refresh "
                           "holds exactly its keys")
    flag = existing is None or _has_column(state, this, "newer_request_in_flight")
    results = session.sql(results_sql(state, cfg, key_types, existing, watermark, current_keys=current,
                                      flag_column=flag, source_keys=source_keys))
    logger.info(f"{record.summary()}; took {time.perf_counter() - started:.2f}s")
    try:
        check_health(record, cfg.max_failure_ratio)
    except RunHealthError as exc:
        finish_run(state, record, "error", str(exc).splitlines()[0], cfg.prices, recount=False)
        raise
    finally:
        write_snapshot(state.cursor, cfg.state_schema)
    return results


def _has_column(state: State, this, column: str) -> bool:
    """Results tables built by an older version lack newer columns until a (free) --full-refresh."""
    return column in table_columns(state, this)


def _poll_and_harvest(api: LazyClient, state: State, cfg: Settings, warned: set[str], gone: tuple = ()) -> None:
    if not state.unharvested_batches():
        return
    from dbt_claude_batch.run.harvest import harvest_ended
    from dbt_claude_batch.run.polling import refresh

    harvest_ended(api.get(), state, refresh(api.get(), state, warned, gone), cfg.output_schema, cfg.keep_message,
                  warned)
    answers.refresh_pending(state)


def _drop_leaked_tmp_tables(state: State, this) -> None:
    """dbt-duckdb leaves `<model>__dbt_tmp...` tables after incremental Python runs; drop earlier ones."""
    rows = state.run(
        "select table_name from information_schema.tables where table_catalog = ? and table_schema = ? "
        "and starts_with(table_name, ?)",
        [this.database, this.schema, this.identifier + "__dbt_tmp"],
    )
    for (name,) in rows:
        state.run(f"drop table if exists {qualified(this.database, this.schema, name)}")


