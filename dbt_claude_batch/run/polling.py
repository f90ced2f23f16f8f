"""Batches in flight: retrieve their status, cancel them on request, wait with a time budget."""

from __future__ import annotations

import random
import time
from datetime import datetime, timedelta
from typing import Sequence

import anthropic

from dbt_claude_batch.base.log import logger
from dbt_claude_batch.run.interruption import StopFlag
from dbt_claude_batch.state.state import State, utcnow


def is_passing(exc: anthropic.APIStatusError) -> bool:
    """A server error or an overload (5xx, 429) that outlasted the SDK's retries: worth trying next run."""
    return exc.status_code >= 500 or exc.status_code == 429


# Results can be downloaded for 29 days from a batch's creation: past that, a batch the API does not
# know is gone whatever the reason, and its requests can only be bought again.
RESULTS_KEPT = timedelta(days=29)


def gone_for_sure(created_at: datetime | None, now: datetime, named_gone: bool) -> bool:
    """Whether a batch the API answers 404 for is proved gone: its results' retention is over, or the
    user named it gone (`claude_batch_gone_batches`). A 404 alone proves nothing: another workspace's
    key or another base URL answers 404 for every batch of this one, which is still running and billed."""
    return named_gone or (created_at is not None and now - created_at > RESULTS_KEPT)


def refresh(client: anthropic.Anthropic, state: State, warned: set[str] | None = None,
            gone: Sequence[str] = ()) -> list[tuple[str, bool]]:
    """Retrieve every unharvested batch of the model; return (batch_id, archived) of those that ended.

    `warned`: the batches whose passing server error this run has logged already (a wait loop polls
    every few seconds; one line per batch says it all). `gone`: batch ids the user names gone
    (`claude_batch_gone_batches`), taken as such when the API does not know them.
    """
    warned = set() if warned is None else warned
    ended = []
    for batch_id, _ in state.unharvested_batches():
        try:
            batch = client.messages.batches.retrieve(batch_id)
        except anthropic.NotFoundError:
            created = state.run(f"select created_at from {state.table('batches')} where batch_id = ?", [batch_id])
            if gone_for_sure(created[0][0] if created else None, utcnow(), batch_id in gone):
                logger.warning(f"batch {batch_id} no longer exists; its requests become failures to resubmit")
                ended.append((batch_id, True))
            elif batch_id + "/404" not in warned:
                warned.add(batch_id + "/404")
                logger.warning(
                    f"batch {batch_id}: the API answers 404 (not found): is ANTHROPIC_API_KEY (and "
                    "ANTHROPIC_BASE_URL) the workspace that created it? Nothing is bought again for it while "
                    "it may be running there. If it was deleted, run with --vars "
                    f"'{{claude_batch_gone_batches: [{batch_id}]}}' to resubmit its requests; 29 days after "
                    "its creation that happens by itself")
            continue
        except anthropic.APIStatusError as exc:
            if not is_passing(exc):
                raise
            # The SDK retried already; the batch is not lost, and the run goes on to submit.
            if batch_id not in warned:
                warned.add(batch_id)
                logger.warning(f"batch {batch_id}: retrieve answered HTTP {exc.status_code}; the next run polls it again")
            continue
        counts = state.update_batch(batch)
        logger.info(
            f"batch {batch_id} {batch.processing_status}: "
            f"{counts['processing']} processing, {counts['succeeded']} succeeded, {counts['errored']} errored, "
            f"{counts['canceled']} canceled, {counts['expired']} expired"
        )
        if batch.processing_status == "ended":
            ended.append((batch_id, batch.archived_at is not None))
    return ended


def cancel_in_flight(client: anthropic.Anthropic, state: State) -> int:
    """Cancel this model's batches still in progress; their unfinished requests are not resubmitted."""
    n = 0
    for batch_id, status in state.unharvested_batches():
        if status in ("in_progress", None):
            batch = client.messages.batches.cancel(batch_id)
            state.mark_canceled_by_user(batch_id)
            state.update_batch(batch)
            logger.info(f"canceled batch {batch_id} ({batch.processing_status})")
            n += 1
    return n


# Never poll faster than this (unless poll_interval_seconds is smaller still, as in tests).
MIN_POLL_SECONDS = 1.0


def next_wait(interval: float, remaining: float, polls: int = 0, until_expected: float | None = None) -> float:
    """Seconds to the next poll, with +-20% jitter so many models do not poll in lockstep.

    The first polls come quickly (three a second apart, then 2 s, 4 s, ... up to `interval`), so a
    batch that ends early is noticed early (a retrieve is free; doubling keeps a long wait to a handful
    of them); when the model's past batches say when this one should end, the poll lands there instead
    of up to one interval late. Never past the wait budget.
    """
    floor = min(interval, MIN_POLL_SECONDS)
    wait = min(interval, floor * 2 ** max(0, polls - 2))
    if until_expected is not None and until_expected > 0:
        wait = min(wait if polls else interval, max(floor, until_expected))
    return max(0.0, min(remaining, wait * random.uniform(0.8, 1.2)))


def expected_end(state: State) -> float | None:
    """Seconds until the batches in flight should end, from this model's past turnaround (median)."""
    row = state.run(
        f"""with past as (
                select median(epoch(ended_at) - epoch(created_at)) as turnaround from {state.table('batches')}
                where model_id = ? and kind = 'batch' and ended_at is not null and not canceled_by_user),
            flying as (
                select max(created_at) as created from {state.table('batches')}
                where model_id = ? and kind = 'batch' and harvested_at is null)
            select epoch(created) + turnaround - epoch(?) from past, flying""",
        [state.model_id, state.model_id, utcnow()],
    )
    return row[0][0] if row and row[0][0] is not None else None


def progress_line(state: State, elapsed: float, remaining: float, until_expected: float | None) -> str:
    """One line while waiting: time spent and left, each batch's counts, and the expected end."""
    batches = state.run(
        f"select batch_id, coalesce(n_processing, n_submitted), coalesce(n_succeeded, 0), "
        f"coalesce(n_errored, 0) + coalesce(n_canceled, 0) + coalesce(n_expired, 0), n_submitted "
        f"from {state.table('batches')} where model_id = ? and kind = 'batch' and harvested_at is null "
        "order by created_at", [state.model_id])
    parts = [f"{b[0][-8:]} {b[2]}/{b[4]} done, {b[3]} failed, {b[1]} processing" for b in batches]
    eta = (f"; expected to end in ~{until_expected:.0f}s (from this model's past batches)"
           if until_expected is not None and until_expected > 0 else "")
    return (f"waiting {elapsed:.0f}s of wait_seconds, {remaining:.0f}s left; {len(batches)} batch(es) in flight: "
            + "; ".join(parts) + eta)


def wait_until(state: State, deadline: float, interval: float, step, stop: StopFlag | None = None) -> bool:
    """Call `step()` until it returns True (nothing left in flight), the deadline passes or `stop` is set."""
    stop = stop or StopFlag()
    started = time.monotonic()
    polls = 0
    while True:
        if step():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        until = expected_end(state)
        logger.info(progress_line(state, time.monotonic() - started, remaining, until))
        if stop.sleep(next_wait(interval, remaining, polls, until)):
            return False
        polls += 1
