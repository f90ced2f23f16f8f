"""Synchronous Messages API calls with bounded concurrency, recorded exactly like a batch.

Used by `mode: sync`, by `mode: auto` for small or urgent work, and for keys named in
`claude_batch_rerun_keys`. Each answer is written as a line in the results-file format and loaded
by the same harvest code as batch results, so failures have the same kinds and the same retries.
The SDK retries 429, 529 and 5xx answers itself, honouring `retry-after`. Answers are written to the
state as they complete, at least every half second: a crash loses at most those, which the next run
records as `missing` and resubmits.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from datetime import timedelta
from types import SimpleNamespace
from typing import Any, Mapping

from dbt_claude_batch.base.errors import ApiError
from dbt_claude_batch.run import answers
from dbt_claude_batch.run.harvest import finish_batch, load_lines
from dbt_claude_batch.base.log import logger
from dbt_claude_batch.run.planning import pending_requests_sql
from dbt_claude_batch.base.settings import Settings
from dbt_claude_batch.run.spool_files import Chunk, Spool
from dbt_claude_batch.state.queries import NOT_SENT
from dbt_claude_batch.state.state import State, utcnow
from dbt_claude_batch.state.workdir import scratch

SYNC_RETRIES = 6
# Paid answers reach the state at least this often, so a crash loses (and the next run pays again for)
# at most half a second of answers.
_FLUSH_EVERY = 50
_FLUSH_SECONDS = 0.5


class AccountRefused(Exception):
    """A call refused for the account, not the request (credit balance, key, permissions, spend limit)."""

    def __init__(self, exc):
        super().__init__(str(exc))
        self.status_code = exc.status_code
        self.message = _api_message(exc)


def call_messages(client, params: Mapping[str, Any], account_errors: bool = False) -> dict[str, Any]:
    """One Messages API call; the answer as a batch `result` object (succeeded or errored).

    With `account_errors`, a refusal no change to the request cures (see `_for_the_account`) raises
    `AccountRefused` instead of becoming the row's error.
    """
    import anthropic

    try:
        raw = client.messages.with_raw_response.create(**params)
        return {"type": "succeeded", "message": json.loads(raw.http_response.text)}
    except anthropic.APIStatusError as exc:
        if account_errors and _for_the_account(exc):
            raise AccountRefused(exc) from None
        body = exc.body if isinstance(exc.body, dict) else {}
        error = body.get("error") if isinstance(body.get("error"), dict) else {}
        kind = error.get("type") or ("invalid_request_error" if 400 <= exc.status_code < 500 else "api_error")
        if exc.status_code == 404 and kind == "not_found_error":
            kind = "invalid_request_error"  # unknown model: the request must change
        return {"type": "errored", "error": {"type": "error", "error": {"type": kind, "message": error.get("message") or str(exc)}}}
    except anthropic.APIConnectionError as exc:
        return {"type": "errored", "error": {"type": "error", "error": {"type": "api_error", "message": f"connection failed: {exc}"}}}


_ACCOUNT_FIX = {400: "add credits to the account (Anthropic console, Plans & Billing)",
                401: "check ANTHROPIC_API_KEY", 402: "fix billing in the Anthropic console",
                403: "give the API key's workspace access to this model", 429: "raise the workspace's spend limit "
                "in the Anthropic console (Settings > Limits) or wait until it resets"}


def _api_message(exc) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    return str(error.get("message") or exc)


def _for_the_account(exc) -> bool:
    """A refusal of the account rather than of this request: every other call would get it too."""
    from dbt_claude_batch.run.submission import is_spend_limit

    return (exc.status_code in (401, 402, 403) or is_spend_limit(exc)
            or (exc.status_code == 400 and "credit balance" in _api_message(exc).lower()))


def run_sync(client, state: State, spool: Spool, chunk: Chunk, settings: Settings, stop=None) -> tuple[int, int]:
    """Send one chunk's requests synchronously and record them as a pseudo-batch of kind `sync`.

    Returns (answered, not sent): once `stop` (an `interruption.StopFlag`) is set, or the account
    refuses a call, requests not yet started are not sent. They end as `missing` of error type
    `not_sent`, which is no attempt (`queries.latest_outcomes_sql` does not count it): the next run
    sends them, whatever `max_attempts`.
    """
    concurrency, schema, keep = settings.sync_concurrency, settings.output_schema, settings.keep_message
    batch_id = "sync_" + uuid.uuid4().hex[:24]
    submission_id = str(uuid.uuid4())
    lines = spool.lines_of(chunk).splitlines()
    state.record_intent(submission_id, chunk.n, chunk.n_bytes, pending_requests_sql(state, chunk.index))
    now = utcnow()
    state.mark_submitted(submission_id, _pseudo_batch(batch_id, len(lines), now), kind="sync")
    logger.info(f"sending {len(lines)} requests synchronously ({concurrency} at a time) as {batch_id}")
    sync_client = client.with_options(max_retries=SYNC_RETRIES)

    def one(line: bytes) -> bytes:
        request = json.loads(line)
        result = call_messages(sync_client, request["params"], account_errors=True)
        return json.dumps({"custom_id": request["custom_id"], "result": result}, separators=(",", ":")).encode()

    with scratch() as tmp:
        everything = os.path.join(tmp, "all.jsonl")
        group, group_no, flushed_at, recorded, sent = [], 0, time.monotonic(), 0, 0
        refused: AccountRefused | None = None
        unsent: list[str] = []
        with ThreadPoolExecutor(max_workers=concurrency) as pool, open(everything, "wb") as out:
            ids = {pool.submit(one, line): json.loads(line)["custom_id"] for line in lines}
            pending = set(ids)
            while pending or group:
                if refused is not None or (stop is not None and stop.requested):
                    unsent += [ids[f] for f in pending if f.cancel()]
                    pending = {f for f in pending if not f.cancelled()}
                done, pending = wait(pending, timeout=_FLUSH_SECONDS, return_when=FIRST_COMPLETED)
                for future in done:
                    try:
                        answer = future.result()
                    except AccountRefused as exc:  # refused, so not billed: never sent, as far as money goes
                        refused = refused or exc
                        unsent.append(ids[future])
                        continue
                    sent += 1
                    out.write(answer + b"\n")
                    group.append(answer)
                if group and (len(group) >= _FLUSH_EVERY or not pending
                              or time.monotonic() - flushed_at >= _FLUSH_SECONDS):
                    _flush(state, batch_id, tmp, group_no, group, schema, keep)
                    recorded += len(group)
                    logger.info(f"{batch_id}: recorded {recorded} of {len(lines)} answers")
                    group, group_no, flushed_at = [], group_no + 1, time.monotonic()
        with state.transaction():
            load_lines(state, batch_id, everything, schema, keep)
            if unsent:
                why = (f"the account refused the run's calls (HTTP {refused.status_code}: {refused.message})"
                       if refused is not None else "the run was stopped (Ctrl-C) before its call began")
                _not_sent(state, batch_id, submission_id, unsent,
                          f"not sent: {why}; the next run sends it, and it counts as no attempt")
            _end(state, batch_id)
            notes = finish_batch(state, batch_id)
            answers.refresh(state, [batch_id])
    if refused is not None:
        raise ApiError(
            f"Synchronous calls refused (HTTP {refused.status_code}): {refused.message.rstrip('.')}; {sent} answer(s) "
            f"were recorded and the other {len(lines) - sent} request(s) stay pending (no row is marked as a bad "
            f"request): {_ACCOUNT_FIX.get(refused.status_code, 'fix the account in the Anthropic console')}, then run "
            "again.")
    if notes and sent == len(lines):
        logger.warning(f"synchronous run {batch_id} did not reconcile: {'; '.join(notes)}")
    return sent, len(unsent)


def _not_sent(state: State, batch_id: str, submission_id: str, custom_ids: list[str], message: str) -> None:
    """Requests of a synchronous pass whose call never began (or was refused for the account): `missing`
    of error type NOT_SENT, nothing bought. Rows sharing them get a copy in `finish_batch`."""
    state.run(
        f"""insert or ignore into {state.table('outcomes')} (batch_id, custom_id, model_id, result_type, error_type,
            error_message, harvested_at, harvest_seq)
        select ?, q.custom_id, q.model_id, 'missing', ?, ?, ?, {state.next_seq_sql()}
        from {state.table('requests')} q
        where q.submission_id = ? and q.dedup_of is null and list_contains(?, q.custom_id)""",
        [batch_id, NOT_SENT, message, utcnow(), submission_id, custom_ids])


def finish_interrupted(state: State, batch_id: str) -> None:
    """A synchronous run that stopped midway: requests without an answer become `missing` (resubmitted)."""
    with state.transaction():
        _end(state, batch_id)
        finish_batch(state, batch_id)
        answers.refresh(state, [batch_id])
    logger.warning(f"synchronous run {batch_id} was interrupted; requests without an answer will be sent again")


def _flush(state: State, batch_id: str, tmp: str, group_no: int, group: list[bytes], output_schema,
           keep_message: bool) -> None:
    path = os.path.join(tmp, f"group-{group_no}.jsonl")
    with open(path, "wb") as f:
        f.write(b"\n".join(group) + b"\n")
    with state.transaction():
        load_lines(state, batch_id, path, output_schema, keep_message)
        answers.refresh(state, [batch_id])


def _end(state: State, batch_id: str) -> None:
    outcomes = state.table("outcomes")
    state.run(
        f"""update {state.table('batches')} set processing_status = 'ended', ended_at = ?, n_processing = 0,
            n_succeeded = (select count(*) from {outcomes} where batch_id = ? and shared_from is null
                           and result_type not in ('errored', 'missing')),
            n_errored = n_submitted - (select count(*) from {outcomes} where batch_id = ? and shared_from is null
                                       and result_type not in ('errored', 'missing')),
            n_canceled = 0, n_expired = 0
        where batch_id = ?""",
        [utcnow(), batch_id, batch_id, batch_id],
    )


def _pseudo_batch(batch_id: str, n: int, now) -> SimpleNamespace:
    return SimpleNamespace(
        id=batch_id, processing_status="in_progress", created_at=now, expires_at=now + timedelta(hours=24),
        ended_at=None, cancel_initiated_at=None, archived_at=None,
        request_counts=SimpleNamespace(processing=n, succeeded=0, errored=0, canceled=0, expired=0),
    )
