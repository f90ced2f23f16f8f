"""Creating batches without ever paying twice, and settling unanswered creates only by proof.

Every create is preceded by a durable intent (the submission and its requests) and followed, the moment
it returns, by the batch id. A create is sent once: the SDK's automatic retries are off for it, because
no idempotency key exists. Only a connection that failed before the request left (refused, DNS, TLS,
connect timeout) proves that nothing was created; that create is retried with backoff within the run.

Every batch carries one extra, tiny request: the *marker*, whose custom_id names the submission
(``dbt_claude_batch-proof-<submission>``). When a create's outcome is unknown (connection dropped,
timeout, 5xx), the submission is settled by listing batches: a batch is a candidate only if it is
unknown to this state, was created after the intent (less `clock_skew_seconds`) and has the right
number of requests; a candidate is adopted only once it has ended and its results file carries the
marker. Candidates without it are foreign (another environment sharing the API key) and are never
harvested. While a candidate is still in progress the rows wait; when none is left and the grace
period has passed, the submission is abandoned and its rows are free to be submitted again.
"""

from __future__ import annotations

import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable

import anthropic
from anthropic.types.messages import MessageBatch

from dbt_claude_batch.api.client import base_url_hint, redact
from dbt_claude_batch.base.errors import ApiError, ApiUnreachableError, SpendLimitError
from dbt_claude_batch.run.harvest import DownloadIncomplete, download_results
from dbt_claude_batch.base.identifiers import literal
from dbt_claude_batch.base.log import logger
from dbt_claude_batch.run.planning import pending_requests_sql
from dbt_claude_batch.run.spool_files import Chunk, Spool, marker_id, marker_line
from dbt_claude_batch.state.state import State, as_utc, utcnow
from dbt_claude_batch.state.workdir import scratch

# Statuses that prove the server did not create the batch.
_NOT_CREATED = {400, 401, 402, 403, 404, 409, 413, 422, 429, 529}
_MAX_REJECTED_RETRIES = 5
# Backoff (seconds) between creates whose connection failed before anything was sent.
_CONNECT_BACKOFF = (0.5, 1.0, 2.0, 4.0)


def _create(client: anthropic.Anthropic, body: bytes) -> MessageBatch:
    return client.with_options(max_retries=0).post(
        "/v1/messages/batches",
        cast_to=MessageBatch,
        content=body,
        options={"headers": {"Content-Type": "application/json"}},
    )


def never_sent(exc: BaseException) -> bool:
    """True when the request provably never left: the connection itself could not be made."""
    import httpx2

    cause = exc.__cause__ or exc.__context__
    return isinstance(cause, (httpx2.ConnectError, httpx2.ConnectTimeout))


class QueueFull(Exception):
    """The API refused a create because the workspace's processing queue is full: try in a later run."""


class StoppedBeforeCreate(Exception):
    """Ctrl-C (or SIGTERM under `dbt-claude-batch dbt`) while a refused create waited to be retried:
    nothing was created for it, and no retry is sent."""


@dataclass
class Prepared:
    """A chunk's intent recorded ahead of its create (status `prepared`), with its body: nothing is sent
    until `submit_chunk` makes it `creating`."""
    chunk: Chunk
    submission_id: str
    body: bytes


def prepare(state: State, spool: Spool, chunk: Chunk, est_cost_usd: float | None = None) -> Prepared:
    """Record the chunk's intent and build its body now, to create it later (see `submit_chunk`)."""
    submission_id = str(uuid.uuid4())
    body = _record_intent(state, spool, chunk, submission_id, est_cost_usd, "prepared")
    return Prepared(chunk, submission_id, body)


def _record_intent(state: State, spool: Spool, chunk: Chunk, submission_id: str, est_cost_usd: float | None,
                   status: str = "creating") -> bytes:
    marker = marker_id(submission_id)
    body = spool.body_of(chunk, marker_line(marker, chunk.model))
    state.record_intent(submission_id, chunk.n, len(body), pending_requests_sql(state, chunk.index), marker,
                        est_cost_usd, status)
    return body


def submit_chunk(client: anthropic.Anthropic, state: State, spool: Spool, chunk: Chunk,
                 grace_seconds: float = 3600.0, skew_seconds: float = 300.0,
                 est_cost_usd: float | None = None, prepared: Prepared | None = None,
                 during: Callable[[], None] | None = None, stop=None) -> str | None:
    """Create one batch for the chunk; return its id, or None when the outcome is still in doubt.

    `prepared`, the chunk's intent recorded ahead (`prepare`), is made `creating` and sent first.
    `during` runs on this thread while the create is in flight (the next chunk's `prepare`: the state's
    writes overlap the upload instead of following it); an error of its own is raised once the create's
    outcome is recorded. `stop` (a `StopFlag`) cuts a wait before a retried create short
    (`StoppedBeforeCreate`).
    """
    if prepared is not None and prepared.chunk is not chunk:
        raise ValueError("prepared intent belongs to another chunk")

    def intent(submission_id: str, marker: str) -> bytes:  # noqa: ARG001 - the marker follows from the id
        return _record_intent(state, spool, chunk, submission_id, est_cost_usd)

    first = (prepared.submission_id, prepared.body) if prepared is not None else None
    return create_batch(client, state, intent, chunk.n, grace_seconds, skew_seconds, first, during, stop)


def create_batch(client: anthropic.Anthropic, state: State, intent: Callable[[str, str], bytes], n: int,
                 grace_seconds: float, skew_seconds: float, first: tuple[str, bytes] | None = None,
                 during: Callable[[], None] | None = None, stop=None) -> str | None:
    """Create one batch of `n` requests (its marker aside) once; return its id, or None when in doubt.

    `intent(submission_id, marker_id)` commits the submission (and whatever it owns) and returns the
    body, its marker line included; it is called again, with a new submission, for each retried create.
    `first`, (submission_id, body) of a prepared intent, is the first attempt instead. `during` runs
    once, on this thread, while the first create sent is in flight.
    """
    deferred: list[BaseException] = []

    def alongside() -> None:
        try:
            during()
        except BaseException as exc:  # noqa: BLE001 - raised after the create's outcome is recorded
            deferred.append(exc)

    batch_id = _create_with_retries(client, state, intent, n, grace_seconds, skew_seconds, first,
                                    alongside if during is not None else None, stop)
    if deferred:
        raise deferred[0]
    return batch_id


def _create_with_retries(client, state: State, intent, n: int, grace_seconds: float, skew_seconds: float,
                         first: tuple[str, bytes] | None, during: Callable[[], None] | None,
                         stop=None) -> str | None:
    rejected = unreachable = 0

    def wait(delay: float) -> None:
        # A refused create created nothing: a stop while waiting to retry it sends nothing more.
        if stop is None:
            time.sleep(delay)
        elif stop.sleep(delay):
            raise StoppedBeforeCreate()

    while True:
        if first is not None:
            (submission_id, body), first = first, None
            state.begin_create(submission_id)
        else:
            submission_id = str(uuid.uuid4())
            body = intent(submission_id, marker_id(submission_id))
        alongside, during = during, None  # once, with the first create sent
        try:
            batch, took = _create_alongside(client, body, alongside)
        except anthropic.APIStatusError as exc:
            if exc.status_code not in _NOT_CREATED:
                logger.warning(
                    f"batch create answered HTTP {exc.status_code}; settling by listing batches"
                )
                return settle(client, state, submission_id, grace_seconds, skew_seconds)
            state.mark_submission(submission_id, "rejected", f"HTTP {exc.status_code}: {_message(exc)}")
            if is_spend_limit(exc):
                raise SpendLimitError(
                    "Batch create refused: the workspace's spend limit is reached (HTTP 429 without retry-after): "
                    "raise the limit in the Anthropic console (Settings > Limits) or wait until it resets, then run "
                    f"again; nothing was submitted and the rows stay pending.\n{_message(exc)}"
                ) from None
            if exc.status_code == 429 and "queue" in _message(exc).lower():
                raise QueueFull(_message(exc)) from None
            if exc.status_code in (429, 529) and rejected < _MAX_REJECTED_RETRIES:
                delay = _retry_after(exc, rejected)
                rejected += 1
                logger.warning(f"batch create refused with HTTP {exc.status_code}; "
                               f"retrying in {delay:.1f}s")
                wait(delay)
                continue
            raise ApiError(_create_refused(exc)) from None
        except (anthropic.APIConnectionError, anthropic.APITimeoutError) as exc:
            if never_sent(exc):
                state.mark_submission(submission_id, "rejected", f"not sent: {_cause(exc)}")
                if unreachable < len(_CONNECT_BACKOFF):
                    delay = _CONNECT_BACKOFF[unreachable]
                    unreachable += 1
                    logger.warning(f"could not connect to the API ({_cause(exc)}); nothing was "
                                   f"sent; retrying in {delay:.1f}s")
                    wait(delay)
                    continue
                raise unreachable_error(exc, "creating a batch") from None
            logger.warning(f"batch create got no answer ({type(exc).__name__}); "
                           "settling by listing batches")
            return settle(client, state, submission_id, grace_seconds, skew_seconds)
        state.mark_submitted(submission_id, batch)
        logger.info(f"submitted batch {batch.id} with {n} requests ({len(body)} bytes) in {took:.2f}s")
        return batch.id


def _create_alongside(client: anthropic.Anthropic, body: bytes,
                      during: Callable[[], None] | None) -> tuple[MessageBatch, float]:
    """The create, timed; sent from a worker thread while `during` (which must not raise) runs here."""
    def timed() -> tuple[MessageBatch, float]:
        sent_at = time.perf_counter()
        return _create(client, body), time.perf_counter() - sent_at

    if during is None:
        return timed()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dbt_claude_batch-create") as pool:
        sending = pool.submit(timed)
        during()
        return sending.result()


def unreachable_error(exc: BaseException, doing: str) -> ApiUnreachableError:
    url = os.environ.get("ANTHROPIC_BASE_URL") or "https://api.anthropic.com"
    return ApiUnreachableError(
        f"Cannot reach the Anthropic API at {url} while {doing} ({_cause(exc)}): check ANTHROPIC_BASE_URL and "
        "the network, then run again; nothing is lost, the next run continues where this one stopped."
        + base_url_hint()
    )


def is_spend_limit(exc: anthropic.APIStatusError) -> bool:
    """A 429 that no wait cures: the real API sends rate limits with retry-after, spend limits without."""
    if exc.status_code != 429:
        return False
    headers = exc.response.headers if exc.response is not None else {}
    text = _message(exc).lower()
    return ("retry-after" not in headers and "retry-after-ms" not in headers) or "spend limit" in text


def settle(client: anthropic.Anthropic, state: State, submission_id: str, grace_seconds: float,
           skew_seconds: float) -> str | None:
    """Settle one unanswered create by proof: adopt the batch carrying its marker, or wait, or abandon."""
    n_requests, intent_at, marker = state.run(
        f"select n_requests, intent_at, marker_id from {state.table('submissions')} where submission_id = ?",
        [submission_id],
    )[0]
    age = (utcnow() - intent_at).total_seconds()
    what = f"unanswered create of {n_requests} requests (intent at {intent_at:%Y-%m-%d %H:%M:%S} UTC)"
    if marker is None:
        # Written by a version without markers: nothing can prove which batch it made.
        return _wait_or_abandon(state, submission_id, age, grace_seconds, what, [],
                                "it carries no marker (an older version), so no batch can be proven to be its own")
    try:
        candidates = _candidates(client, state, submission_id, n_requests + 1, intent_at, skew_seconds)
        pending = []
        for batch in candidates:
            if batch.processing_status != "ended":
                pending.append(batch.id)
                continue
            verdict = _carries_marker(client, state, batch.id, marker)
            if verdict is None:
                pending.append(batch.id)
            elif verdict:
                state.mark_submitted(submission_id, batch)
                logger.info(f"{what}: adopted batch {batch.id}, whose results carry this submission's marker {marker}")
                return batch.id
            else:
                state.record_foreign(submission_id, batch.id, f"no marker {marker}")
                logger.info(f"{what}: batch {batch.id} is not ours (its results lack marker {marker}); "
                            "it is never harvested")
    except anthropic.APIConnectionError as exc:
        logger.warning(f"{what}: could not list batches to settle it ({_cause(exc)}); the next run tries again")
        state.mark_submission(submission_id, "in_doubt", "listing failed")
        return None
    except anthropic.APIStatusError as exc:
        logger.warning(f"{what}: could not list batches to settle it (HTTP {exc.status_code}); the next run tries again")
        state.mark_submission(submission_id, "in_doubt", "listing failed")
        return None
    if pending:
        note = f"proof pending: {len(pending)} candidate batch(es) not ended yet: {', '.join(pending)}"
        state.mark_submission(submission_id, "in_doubt", note)
        logger.warning(f"{what}: {note}; its rows wait until they end")
        return None
    return _wait_or_abandon(state, submission_id, age, grace_seconds, what,
                            sorted(state.foreign_batch_ids(submission_id)), "no batch carries its marker")


def _wait_or_abandon(state: State, submission_id: str, age: float, grace_seconds: float, what: str,
                     foreign: list[str], why: str) -> None:
    checked = f"; foreign candidates: {', '.join(foreign)}" if foreign else ""
    if age > grace_seconds:
        state.mark_submission(submission_id, "abandoned", f"{why} after {grace_seconds:g}s{checked}")
        logger.warning(f"{what}: abandoned: {why} after the grace period of {grace_seconds:g}s{checked}; "
                       "its rows will be submitted again")
        return None
    state.mark_submission(submission_id, "in_doubt", f"{why} yet{checked}")
    logger.warning(f"{what}: still in doubt ({why} yet{checked}); its rows wait; it is abandoned "
                   f"{max(0.0, grace_seconds - age):.0f}s from now if no batch proves to be its own")
    return None


def _candidates(client, state: State, submission_id: str, n_lines: int, intent_at, skew_seconds: float) -> list:
    """Listed batches that may be this submission's: unknown here, not yet shown foreign, created after
    the intent (less the allowed clock skew), with the right number of requests."""
    earliest = intent_at - timedelta(seconds=skew_seconds)
    foreign = state.foreign_batch_ids(submission_id)
    found = []
    for batch in client.messages.batches.list(limit=100):
        if as_utc(batch.created_at) < earliest:
            break  # newest first: everything further down is older still
        counts = batch.request_counts
        total = counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired
        if total == n_lines and batch.id not in foreign:
            found.append(batch)
    known = state.known_batch_ids([b.id for b in found])
    return [b for b in found if b.id not in known]


def _carries_marker(client, state: State, batch_id: str, marker: str) -> bool | None:
    """Whether an ended batch's results hold the marker line; None when they cannot be read now."""
    with scratch() as tmp:
        path = os.path.join(tmp, "candidate.jsonl")
        try:
            download_results(client, batch_id, path)
        except anthropic.NotFoundError:
            return False  # results gone: nothing can prove it is ours
        except DownloadIncomplete:
            return None
        return bool(state.run(
            f"select count(*) from read_json({literal(path)}, format = 'newline_delimited', "
            "columns = {'custom_id': 'VARCHAR'}) where custom_id = ?", [marker])[0][0])


def settle_unsettled(client: anthropic.Anthropic, state: State, grace_seconds: float, skew_seconds: float) -> None:
    """Before anything new is submitted, settle creates a crash or a lost answer left open."""
    for submission_id, *_ in state.unsettled_submissions():
        settle(client, state, submission_id, grace_seconds, skew_seconds)


def _cause(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    return redact(f"{type(cause).__name__}: {cause}") if cause else type(exc).__name__


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
    if "credit balance" in _message(exc).lower():
        # A 400 like a bad request, but nothing in the request is wrong: the API's own words say what is.
        return (f"Batch create refused (HTTP {status}): {_message(exc).rstrip('.')}; nothing was submitted and the "
                "rows stay pending: add credits to the account (Anthropic console, Plans & Billing), then run again.")
    what = {
        401: "the API key was not accepted: check ANTHROPIC_API_KEY",
        403: "the API key may not create batches: check its workspace permissions",
        402: "billing problem on the account: check the Anthropic console",
        404: "the API has no such endpoint: check ANTHROPIC_BASE_URL" + base_url_hint(),
        413: "the batch is too large for the API: lower `max_batch_bytes`",
        429: "rate limited repeatedly: run again later",
        529: "the API is overloaded: run again later",
    }.get(status, "fix the request settings and run again")
    return f"Batch create refused (HTTP {status}): {what}; nothing was submitted for these rows.\n{_message(exc)}"
