"""Creating batches without ever paying twice.

Every create is preceded by a durable intent (the submission and its requests) and followed, the moment
it returns, by the batch id. A create is sent once: the SDK's automatic retries are off for it, because
no idempotency key exists. When the outcome is unknown (connection dropped, timeout, 5xx), the
submission is settled by listing batches and adopting the one it made; until then its rows count as in
flight and are not resubmitted.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import anthropic
from anthropic.types.messages import MessageBatch

from dbt_claude_batch.errors import ApiError
from dbt_claude_batch.log import logger
from dbt_claude_batch.planning import pending_requests_sql
from dbt_claude_batch.spool import Chunk, Spool
from dbt_claude_batch.state import State, utcnow
# Statuses that prove the server did not create the batch.
_NOT_CREATED = {400, 401, 402, 403, 404, 409, 413, 422, 429, 529}
_MAX_REJECTED_RETRIES = 5
_LIST_SCAN_LIMIT = 1000


def _create(client: anthropic.Anthropic, body: bytes) -> MessageBatch:
    return client.with_options(max_retries=0).post(
        "/v1/messages/batches",
        cast_to=MessageBatch,
        content=body,
        options={"headers": {"Content-Type": "application/json"}},
    )


def submit_chunk(client: anthropic.Anthropic, state: State, spool: Spool, chunk: Chunk) -> str | None:
    """Create one batch for the chunk; return its id, or None when the outcome is still in doubt."""
    body = spool.body_of(chunk)
    for attempt in range(_MAX_REJECTED_RETRIES + 1):
        submission_id = str(uuid.uuid4())
        state.record_intent(submission_id, chunk.n, len(body), pending_requests_sql(chunk.index))
        try:
            batch = _create(client, body)
        except anthropic.APIStatusError as exc:
            if exc.status_code not in _NOT_CREATED:
                logger.warning(
                    f"batch create answered HTTP {exc.status_code}; settling by listing batches"
                )
                return settle(client, state, submission_id, chunk.n)
            state.mark_submission(submission_id, "rejected", f"HTTP {exc.status_code}: {_message(exc)}")
            if exc.status_code in (429, 529) and attempt < _MAX_REJECTED_RETRIES:
                delay = _retry_after(exc, attempt)
                logger.warning(f"batch create refused with HTTP {exc.status_code}; retrying in {delay:.1f}s")
                time.sleep(delay)
                continue
            raise ApiError(_create_refused(exc)) from None
        except (anthropic.APIConnectionError, anthropic.APITimeoutError) as exc:
            logger.warning(f"batch create got no answer ({type(exc).__name__}); settling by listing batches")
            return settle(client, state, submission_id, chunk.n)
        state.mark_submitted(submission_id, batch)
        logger.info(f"submitted batch {batch.id} with {chunk.n} requests ({len(body)} bytes)")
        return batch.id
    raise AssertionError("unreachable")


def settle(client: anthropic.Anthropic, state: State, submission_id: str, n_requests: int,
           intent_age_seconds: float = 0.0, grace_seconds: float = float("inf")) -> str | None:
    """Find the batch an uncertain create made, among batches no state row knows, by its request count.

    Lists newest first and stops at the first batch this state recorded before the intent.
    Adopts exactly one candidate; with none, the submission stays in doubt (its rows are not
    resubmitted) until `grace_seconds` after the intent, then it is abandoned and its rows are free.
    """
    intent_at = state.run(
        f"select intent_at from {state.table('submissions')} where submission_id = ?", [submission_id]
    )[0][0]
    known = dict(
        state.run(
            f"select batch_id, settled_at from {state.table('submissions')} where batch_id is not null"
        )
    )
    candidates = []
    try:
        for i, batch in enumerate(client.messages.batches.list(limit=100)):
            if i >= _LIST_SCAN_LIMIT:
                break
            if batch.id in known:
                settled = known[batch.id]
                if settled is not None and settled < intent_at - timedelta(seconds=1):
                    break
                continue
            counts = batch.request_counts
            total = counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired
            if total == n_requests:
                candidates.append(batch)
    except anthropic.APIError as exc:
        logger.warning(f"could not list batches to settle a create ({exc}); the next run tries again")
        state.mark_submission(submission_id, "in_doubt", "listing failed")
        return None
    if len(candidates) == 1:
        state.mark_submitted(submission_id, candidates[0])
        logger.info(f"adopted batch {candidates[0].id} made by an unanswered create")
        return candidates[0].id
    if not candidates and intent_age_seconds > grace_seconds:
        state.mark_submission(submission_id, "abandoned", "no batch found after the grace period")
        logger.warning("an unanswered create made no batch; its rows will be submitted again")
        return None
    note = "no matching batch yet" if not candidates else f"{len(candidates)} candidate batches: " + ", ".join(
        b.id for b in candidates
    )
    state.mark_submission(submission_id, "in_doubt", note)
    logger.warning(f"create outcome still in doubt ({note}); its rows wait for the next run")
    return None


def settle_unsettled(client: anthropic.Anthropic, state: State, grace_seconds: float) -> None:
    """Before anything new is submitted, settle creates a crash or a lost answer left open."""
    for submission_id, n_requests, intent_at, _ in state.unsettled_submissions():
        age = (utcnow() - intent_at).total_seconds()
        settle(client, state, submission_id, n_requests, intent_age_seconds=age, grace_seconds=grace_seconds)


def _message(exc: anthropic.APIStatusError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    err = body.get("error") if isinstance(body.get("error"), dict) else {}
    return str(err.get("message") or exc.message)


def _retry_after(exc: anthropic.APIStatusError, attempt: int) -> float:
    header = exc.response.headers.get("retry-after") if exc.response is not None else None
    try:
        return min(60.0, max(0.0, float(header)))
    except (TypeError, ValueError):
        return min(60.0, 2.0 ** attempt)


def _create_refused(exc: anthropic.APIStatusError) -> str:
    status = exc.status_code
    what = {
        401: "the API key was not accepted: check ANTHROPIC_API_KEY",
        403: "the API key may not create batches: check its workspace permissions",
        402: "billing problem on the account: check the Anthropic console",
        413: "the batch is too large for the API: lower `max_batch_bytes`",
        429: "rate limited repeatedly: run again later",
        529: "the API is overloaded: run again later",
    }.get(status, "fix the request settings and run again")
    return f"Batch create refused (HTTP {status}): {what}; nothing was submitted for these rows.\n{_message(exc)}"
