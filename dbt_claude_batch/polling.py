"""Batches in flight: retrieve their status, cancel them on request, wait with a time budget."""

from __future__ import annotations

import random
import time

import anthropic

from dbt_claude_batch.log import logger
from dbt_claude_batch.state import State


def refresh(client: anthropic.Anthropic, state: State) -> list[tuple[str, bool]]:
    """Retrieve every unharvested batch of the model; return (batch_id, archived) of those that ended."""
    ended = []
    for batch_id, _ in state.unharvested_batches():
        try:
            batch = client.messages.batches.retrieve(batch_id)
        except anthropic.NotFoundError:
            # Deleted or gone past retention: nothing more will come from it.
            logger.warning(f"batch {batch_id} no longer exists; its requests become failures to resubmit")
            ended.append((batch_id, True))
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


def next_wait(interval: float, remaining: float) -> float:
    """Poll interval with +-20% jitter, so many models do not poll in lockstep; never past the budget."""
    return max(0.0, min(remaining, interval * random.uniform(0.8, 1.2)))


def wait_until(deadline: float, interval: float, step) -> bool:
    """Call `step()` until it returns True (nothing left in flight) or the deadline passes."""
    while True:
        if step():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(next_wait(interval, remaining))
