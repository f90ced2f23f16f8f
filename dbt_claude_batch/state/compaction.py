"""Bounded state: a model's request history older than `keep_history_days` (and/or before its latest
`keep_runs` runs) compacted away.

What stays, per key, whatever its age: every attempt from the one that holds its latest answer on
(so that answer, its request hash and input hash, and the tries of a newer failing request are all
still there: nothing is bought again and no retry limit is reset); every attempt of a key that has no
answer; everything in flight or harvested within the window. What goes: older attempts, their
outcomes, and the submissions and batches left with no request, their marker outcomes included. Their
spend is summed per day into `daily_spend` first, in the same transaction, so `all_spend`, `status`
and the report keep the bill. Runs older than the window go too, except the latest ones the health
window reads. Input aliases and stored prompts of requests that are gone go with them.

All of it is SQL over the model's rows, in one transaction; `due` makes a run with nothing to compact
cost one indexed read of `models`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from dbt_claude_batch.base.identifiers import literal
from dbt_claude_batch.state.spend import SPEND_COLUMNS, spend_rows_sql
from dbt_claude_batch.state.state import NEVER_SENT_STATUSES, State

_DOOMED_REQUESTS = "cb_doomed_requests"
_DOOMED_SUBMISSIONS = "cb_doomed_submissions"


def last_compacted(state: State) -> datetime | None:
    """When this model's state was last compacted, or None."""
    rows = state.run(f"select compacted_at from {state.table('models')} where model_id = ?", [state.model_id])
    return rows[0][0] if rows else None


def answers_removed_at(state: State) -> datetime | None:
    """When compaction last removed answers of this model (their bill went to `daily_spend`), or None:
    a compaction that found nothing old enough removes nothing, though it is stamped in `models`."""
    rows = state.run(f"select max(compacted_at) from {state.table('daily_spend')} where model_id = ?",
                     [state.model_id])
    return rows[0][0] if rows else None


def due(state: State, keep_days: float | None, now: datetime, keep_runs: int | None = None) -> bool:
    """Whether this model's state should be compacted now: never with both windows null; otherwise when it
    never was, or last was longer ago than the smaller of a day and the days window (a nightly job
    compacts on every run, an hourly one once a day, a runs-only window once a day)."""
    if keep_days is None and keep_runs is None:
        return False
    last = last_compacted(state)
    every = timedelta(days=1) if keep_days is None else min(timedelta(days=1), timedelta(days=keep_days))
    return last is None or now - last >= every


def window_start(state: State, keep_days: float | None, now: datetime, keep_runs: int | None = None) -> datetime | None:
    """Where the kept history starts: history settled before it may be compacted; None keeps everything.

    With both windows set, what either keeps stays: the start is the earlier of the two. A runs window
    over a model with fewer runs than it holds keeps everything.
    """
    starts = []
    if keep_days is not None:
        starts.append(now - timedelta(days=keep_days))
    if keep_runs is not None:
        rows = state.run(f"select started_at from {state.table('runs')} where model_id = ? "
                         f"order by started_at desc limit 1 offset {int(keep_runs) - 1}", [state.model_id])
        if not rows:
            return None
        starts.append(rows[0][0])
    return min(starts) if starts else None


def compact(state: State, keep_days: float | None, now: datetime, keep_runs: int | None = None,
            min_runs: int = 10) -> dict[str, int]:
    """Compact this model's history settled before the window (`keep_days` before `now`, and/or the
    latest `keep_runs` runs: see `window_start`); return rows removed per table.

    `min_runs`: the latest runs kept whatever their age (the health window reads them).
    """
    model = literal(state.model_id)
    t = state.table
    removed: dict[str, int] = {}
    cutoff = window_start(state, keep_days, now, keep_runs)
    if cutoff is None:
        state.run(f"update {t('models')} set compacted_at = ? where model_id = ?", [now, state.model_id])
        return removed
    old = state.run(
        f"""select exists (select 1 from {t('batches')} where model_id = ? and harvested_at < ?)
            or exists (select 1 from {t('submissions')} where model_id = ? and settled_at < ?
                       and status in {NEVER_SENT_STATUSES})
            or exists (select 1 from {t('runs')} where model_id = ? and started_at < ?)""",
        [state.model_id, cutoff] * 3)[0][0]
    if not old:  # nothing settled before the window: a per-batch lookup, not a join over every request
        state.run(f"update {t('models')} set compacted_at = ? where model_id = ?", [now, state.model_id])
        return removed
    with state.transaction():
        # Requests settled before the cutoff, older than the attempt holding their key's latest answer.
        state.run(
            f"""create or replace temp table {_DOOMED_REQUESTS} as
            select r.submission_id, r.custom_id, s.batch_id
            from {t('requests')} r
            join {t('submissions')} s using (submission_id)
            left join {t('batches')} b on b.batch_id = s.batch_id
            join {t('answers')} a on a.model_id = {model} and a.custom_id = coalesce(r.key_custom_id, r.custom_id)
            where r.model_id = {model} and r.attempt < a.attempt
              and ((s.status = 'submitted' and b.harvested_at < ?)
                   or (s.status in {NEVER_SENT_STATUSES} and s.settled_at < ?))""",
            [cutoff, cutoff],
        )
        # Submissions none of whose requests stay (and that are settled and old).
        state.run(
            f"""create or replace temp table {_DOOMED_SUBMISSIONS} as
            select s.submission_id, s.batch_id from {t('submissions')} s
            left join {t('batches')} b on b.batch_id = s.batch_id
            where s.model_id = {model}
              and ((s.status = 'submitted' and b.harvested_at < ?)
                   or (s.status in {NEVER_SENT_STATUSES} and s.settled_at < ?))
              and not exists (select 1 from {t('requests')} r where r.submission_id = s.submission_id
                              and not exists (select 1 from {_DOOMED_REQUESTS} d
                                              where d.submission_id = r.submission_id and d.custom_id = r.custom_id))""",
            [cutoff, cutoff],
        )
        doomed_outcome = _doomed_outcome_sql("o")
        columns = ", ".join(SPEND_COLUMNS)
        state.run(
            f"insert into {t('daily_spend')} (day, model_id, answered_model, {columns}, compacted_at) "
            f"select day, dbt_model, answered_model, {columns}, ? from "
            f"({spend_rows_sql(state.schema, _doomed_outcome_sql('cb_o'))})",
            [now],
        )
        removed["outcomes"] = _delete(state, f"delete from {t('outcomes')} o where o.model_id = {model} "
                                             f"and {doomed_outcome}")
        removed["requests"] = _delete(state, f"delete from {t('requests')} r where r.model_id = {model} and exists "
                                             f"(select 1 from {_DOOMED_REQUESTS} d where d.submission_id = r.submission_id "
                                             "and d.custom_id = r.custom_id)")
        removed["batches"] = _delete(state, f"delete from {t('batches')} where model_id = {model} and batch_id in "
                                            f"(select batch_id from {_DOOMED_SUBMISSIONS})")
        state.run(f"delete from {t('foreign_batches')} where submission_id in "
                  f"(select submission_id from {_DOOMED_SUBMISSIONS})")
        removed["submissions"] = _delete(state, f"delete from {t('submissions')} where model_id = {model} and "
                                                f"submission_id in (select submission_id from {_DOOMED_SUBMISSIONS})")
        doomed_runs = (f"""from {t('runs')} where model_id = {model} and started_at < ?
            and run_id not in (select run_id from {t('runs')} where model_id = {model}
                               order by started_at desc limit {int(min_runs)})""")
        # The snapshot's spend is a sum over runs: what the removed runs recorded is kept per model.
        state.run(f"""update {t('models')} set compacted_runs_usd = coalesce(compacted_runs_usd, 0)
            + coalesce((select sum(cost_usd) {doomed_runs}), 0) where model_id = {model}""", [cutoff])
        removed["runs"] = _delete(state, f"delete {doomed_runs}", [cutoff])
        # An alias is worth keeping only while its request is the one a key's attempts still hold.
        for table in ("input_aliases", "prompts"):
            key = "custom_id" if table == "input_aliases" else "key_custom_id"
            removed[table] = _delete(state, f"""delete from {t(table)} x where x.model_id = {model}
                and not exists (select 1 from {t('requests')} r where r.model_id = {model}
                                and coalesce(r.key_custom_id, r.custom_id) = x.{key}
                                and r.request_hash = x.request_hash)""")
        state.run(f"update {t('models')} set compacted_at = ? where model_id = ?", [now, state.model_id])
        state.run(f"drop table if exists {_DOOMED_REQUESTS}")
        state.run(f"drop table if exists {_DOOMED_SUBMISSIONS}")
    return removed


def _doomed_outcome_sql(alias: str) -> str:
    """Whether the outcome row `alias` goes: its request does, or its whole submission (markers too)."""
    return (f"(exists (select 1 from {_DOOMED_REQUESTS} d where d.batch_id = {alias}.batch_id "
            f"and d.custom_id = {alias}.custom_id) or {alias}.batch_id in "
            f"(select batch_id from {_DOOMED_SUBMISSIONS} where batch_id is not null))")


def _delete(state: State, sql: str, params: list | None = None) -> int:
    """Run a delete and return how many rows it removed."""
    rows = state.run(sql, params)
    return int(rows[0][0]) if rows else 0
