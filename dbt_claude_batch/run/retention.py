"""What a run keeps, and for how long: stored prompts, batches deleted from the API once harvested,
result rows of keys gone from the source, and compaction of old history (state/compaction.py).

Each step is a no-op unless its setting asks for it, and costs a small read of state when there is
nothing to do.
"""

from __future__ import annotations

from dbt_claude_batch.base.identifiers import literal
from dbt_claude_batch.base.log import logger
from dbt_claude_batch.base.settings import Settings
from dbt_claude_batch.run.planning import pending_requests_sql
from dbt_claude_batch.state import compaction
from dbt_claude_batch.state.state import State, utcnow


def record_prompts(state: State, settings: Settings, spool_path: str, chunk: int) -> None:
    """With `store_prompts`, keep the requests of one batch (or synchronous pass) as sent, from its spool file."""
    if not settings.store_prompts:
        return
    state.run(
        f"""insert into {state.table('prompts')} (model_id, custom_id, key_custom_id, request_hash, params, recorded_at)
        select {literal(state.model_id)}, p.custom_id, p.key_custom_id, p.request_hash, l.params, ?
        from ({pending_requests_sql(state, chunk)}) p
        join read_json({literal(spool_path)}, format = 'newline_delimited',
                       columns = {{'custom_id': 'VARCHAR', 'params': 'JSON'}}) l using (custom_id)
        where p.dedup_of is null""",
        [utcnow()],
    )


def prune_prompts(state: State, settings: Settings) -> None:
    """Stored requests the setting no longer keeps, on every run (a quiet one too): with `store_prompts:
    failed_only` a key's go once its latest attempt is answered; with `false` (switched off since they
    were stored) every one of the model's. A read of state when there are none."""
    if settings.store_prompts is True or not state.run(
            f"select exists (select 1 from {state.table('prompts')} where model_id = ?)", [state.model_id])[0][0]:
        return
    if settings.store_prompts == "failed_only":
        state.run(f"""delete from {state.table('prompts')} p where p.model_id = ? and exists (
            select 1 from {state.table('answers')} a where a.model_id = p.model_id and a.custom_id = p.key_custom_id
            and a.attempt = a.latest_attempt)""", [state.model_id])
        return
    removed = state.run(f"delete from {state.table('prompts')} where model_id = ?", [state.model_id])[0][0]
    logger.info(f"removed {removed} stored prompt(s): store_prompts is false")


def delete_harvested_batches(client_of, state: State, settings: Settings) -> int:
    """With `delete_batches_after_harvest`, delete from the API every batch of this model whose results
    are recorded in state (harvested, answers up to date; a comparison's batch, collected); return how
    many were deleted. `client_of` gives the SDK client, called only when there is a batch to delete.

    A batch the API no longer has counts as deleted. Any other refusal is logged and the batch is tried
    again by a later run: its results are already held, so nothing depends on it.
    """
    if not settings.delete_batches_after_harvest:
        return 0
    found = state.run(
        f"select batch_id from {state.table('batches')} where model_id = ? and api_deleted_at is null "
        # a comparison's batch is done with once collected: its rows are in <model>__compare
        "and harvested_at is not null and ((kind = 'batch' and answers_at is not null) or kind = 'compare') "
        "order by batch_id",
        [state.model_id])
    if not found:
        return 0
    import anthropic

    client = client_of()
    deleted = 0
    for (batch_id,) in found:
        try:
            client.messages.batches.delete(batch_id)
        except anthropic.NotFoundError:
            pass
        except anthropic.APIError as exc:
            logger.warning(f"could not delete batch {batch_id} from the API ({type(exc).__name__}: {exc}); its "
                           "results are held in state; a later run tries again")
            continue
        state.run(f"update {state.table('batches')} set api_deleted_at = ? where batch_id = ?", [utcnow(), batch_id])
        deleted += 1
    logger.info(f"deleted {deleted} harvested batch(es) from the API (delete_batches_after_harvest)")
    return deleted


def drop_rows_gone_from_source(session, settings: Settings, existing: str | None, source_keys: str,
                               n_source_rows: int | None) -> int:
    """With `on_source_delete: delete`, remove from the results table `existing` the rows whose key is no
    longer in the source; return how many. An empty source (an upstream built with --empty, a failed
    load) removes nothing: that reads as no data, not as every row deleted.

    On dbt's own connection (`session`), so the delete is part of the transaction dbt's merge commits: a
    cursor of our own would commit it beside a merge whose transaction began before it."""
    if settings.on_source_delete != "delete" or existing is None or not n_source_rows:
        return 0
    rows = session.execute(f"delete from {existing} where custom_id not in ({source_keys})").fetchall()
    gone = int(rows[0][0]) if rows else 0
    if gone:
        logger.info(f"removed {gone} result row(s) whose key is no longer in the source (on_source_delete: delete)")
    return gone


def compact_if_due(state: State, settings: Settings) -> None:
    """Compact this model's history outside `keep_history_days` / `keep_runs`, at most once a day (see
    compaction.py)."""
    now = utcnow()
    days, runs = settings.keep_history_days, settings.keep_runs
    if not compaction.due(state, days, now, runs):
        return
    removed = compaction.compact(state, days, now, runs, min_runs=settings.health_window_runs)
    if any(removed.values()):
        window = " and ".join(w for w in (f"{days:g} day(s)" if days is not None else "",
                                          f"the latest {runs} run(s)" if runs is not None else "") if w)
        logger.info("compacted state outside {}: removed {}".format(
            window, ", ".join(f"{n} {t}" for t, n in removed.items() if n)))
