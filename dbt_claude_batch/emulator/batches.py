"""The batch lifecycle, evaluated lazily on the emulated clock.

A batch created at t ends at t + processing_delay (the delay in force when it was created),
evaluated whenever it is accessed, so a restarted emulator continues where it was.
The first access after creation (retrieve, list, cancel, results, delete) sees the batch
`in_progress` whatever the delay, as the real API never answers a fresh batch already ended; if
its end time has passed by then, it moves to that access, so `ended_at` never precedes a view
that showed the batch in progress. A batch first accessed after expires_at is shown as it is. Batches
created under `never_end`, or whose delay reaches past expires_at (t + 24 h), end at
expires_at with every request `expired`.
Cancel: the batch is `canceling` until the next access other than a delete, then `ended`; the first k requests in
submitted order keep their results, with k = n * elapsed / processing_delay at the moment of the
cancel, and the rest are `canceled`. Cancelling an ended batch returns it unchanged
(undocumented in the API reference; chosen so a cancel is idempotent).
Delete: only an ended batch; one in progress or canceling is refused with HTTP 400.
After 29 days from created_at (or while `archive_results` is armed) an ended batch is archived:
`archived_at` is set and its results return 404.
The processing queue (for the `queue_limit` scenario): every request of every batch that its next
access would still show `in_progress` or `canceling`, across all API keys (one workspace). It is
read from the records alone (no access, no processing, no per-request work): a batch never accessed
yet counts until its first access (or until expires_at), an accessed one until its end time on the
clock, a canceling one until the access that ends it.
"""

from __future__ import annotations

import secrets
import string

from . import pagination, processing, tokens
from .clock import rfc3339
from .validation import ParamsError

DAY = 86_400.0
EXPIRY = DAY
RETENTION = 29 * DAY
_ALNUM = string.ascii_letters + string.digits


class NotFound(Exception):
    pass


def new_batch_id() -> str:
    return "msgbatch_" + "".join(secrets.choice(_ALNUM) for _ in range(24))


def view(state, record: dict) -> dict:
    """The MessageBatch object, every field present."""
    ended = record["processing_status"] == "ended"
    return {
        "id": record["id"],
        "type": "message_batch",
        "processing_status": record["processing_status"],
        "request_counts": dict(record["request_counts"]),
        "created_at": rfc3339(record["created_at"]),
        "expires_at": rfc3339(record["expires_at"]),
        "ended_at": rfc3339(record["ended_at"]),
        "cancel_initiated_at": rfc3339(record["cancel_initiated_at"]),
        "archived_at": rfc3339(record["archived_at"]),
        "results_url": f"{state.base_url}/v1/messages/batches/{record['id']}/results" if ended else None,
    }


def create(state, raw_body: bytes, requests: list[dict], version: str) -> dict:
    hashes = [[r["custom_id"], tokens.params_hash(r["params"])] for r in requests]
    with state.lock:
        now = state.clock.now()
        never_end = bool(state.scenarios.active("never_end"))
        record = {
            "id": new_batch_id(), "seq": state.next_seq, "version": version,
            "created_at": now, "expires_at": now + EXPIRY,
            "end_at": now + state.processing_delay, "never_end": never_end,
            "ended_at": None, "cancel_initiated_at": None, "archived_at": None,
            "deleted": False, "first_access_pending": True,
            "processing_status": "in_progress", "request_count": len(requests),
            "request_counts": {"processing": len(requests), "succeeded": 0, "errored": 0,
                               "canceled": 0, "expired": 0},
        }
        state.next_seq += 1
        state.store.create_batch(record, raw_body, hashes)
        state.records[record["id"]] = record
        state.requests_cache[record["id"]] = requests
        state.ledger.ensure_batch(record["id"])
        return record


def in_queue(record: dict, now: float) -> bool:
    """Whether the batch's next access at `now` would show it not ended (see the module
    docstring); a pure reading of the record, so counting the queue changes nothing."""
    status = record["processing_status"]
    if record["deleted"] or status == "ended":
        return False
    if status == "canceling":
        return True  # ends on its next access
    if record.get("first_access_pending"):
        return now < record["expires_at"]  # the first access shows it in progress, unless expired
    runs_out = record["never_end"] or record["end_at"] >= record["expires_at"]
    return now < (record["expires_at"] if runs_out else record["end_at"])


def queue_size(state) -> tuple[int, int]:
    """(requests, batches) in the processing queue now: one pass over the batch records, summing
    their request counts. Caller holds state.lock."""
    now = state.clock.now()
    requests = batches = 0
    for record in state.records.values():
        if in_queue(record, now):
            requests += record["request_count"]
            batches += 1
    return requests, batches


def queue_view(state) -> dict:
    """The processing queue as the control API shows it. Caller holds state.lock."""
    requests, count = queue_size(state)
    armed = state.scenarios.queue_limit()
    return {"queued_requests": requests, "queued_batches": count,
            "limit": armed["max_requests"] if armed else None}


def _requests(state, batch_id: str) -> list[dict]:
    cached = state.requests_cache.pop(batch_id, None)
    return cached if cached is not None else state.store.load_requests(batch_id)


def _finish(state, record: dict, done: int, ended_at: float, expire_rest: bool) -> None:
    reqs = _requests(state, record["id"])
    counts, lines = processing.process_batch(state, record, reqs, done, ended_at, expire_rest)
    state.store.write_results(record["id"], lines)
    record.update(processing_status="ended", ended_at=ended_at, request_counts=counts)


def refresh(state, record: dict) -> dict:
    """Advance one batch to where the emulated clock says it is. Caller holds state.lock."""
    now = state.clock.now()
    changed = False
    status = record["processing_status"]
    n = record["request_count"]
    if status == "in_progress":
        runs_out = record["never_end"] or record["end_at"] >= record["expires_at"]
        if runs_out and now >= record["expires_at"]:
            _finish(state, record, 0, record["expires_at"], expire_rest=True)
            changed = True
        elif not runs_out and now >= record["end_at"]:
            _finish(state, record, n, record["end_at"], expire_rest=False)
            changed = True
    elif status == "canceling":
        span = record["end_at"] - record["created_at"]
        if record["never_end"]:
            done = 0
        elif span <= 0:
            done = n
        else:
            done = min(n, int(n * (record["cancel_initiated_at"] - record["created_at"]) / span))
        _finish(state, record, done, now, expire_rest=False)
        changed = True
    if record["processing_status"] == "ended" and record["archived_at"] is None:
        if now >= record["created_at"] + RETENTION:
            record["archived_at"] = record["created_at"] + RETENTION
        elif state.scenarios.active("archive_results"):
            record["archived_at"] = now
        if record["archived_at"] is not None:
            state.store.drop_results(record["id"])
            changed = True
    if changed:
        state.store.save_batch(record)
    return record


def access(state, record: dict) -> dict:
    """The record as an API call sees it now: the first access shows it in progress, later
    ones advance it on the clock (see the module docstring). Caller holds state.lock."""
    if record.get("first_access_pending"):
        record["first_access_pending"] = False
        now = state.clock.now()
        if now < record["expires_at"]:
            record["end_at"] = max(record["end_at"], now)
            state.store.save_batch(record)
            return record
    return refresh(state, record)


def get(state, batch_id: str) -> dict:
    """The batch `batch_id` as an API call sees it (one access), or NotFound."""
    record = state.records.get(batch_id)
    if record is None or record["deleted"]:
        raise NotFound(batch_id)
    return access(state, record)


def listing(state, limit: int, after_id: str | None, before_id: str | None) -> dict:
    """One page of the batch list, newest first; each batch on the page counts as accessed."""
    visible = sorted((r for r in state.records.values() if not r["deleted"]),
                     key=lambda r: r["seq"], reverse=True)
    window, has_more = pagination.select([r["id"] for r in visible], limit, after_id, before_id,
                                         "message batch")
    return pagination.envelope([view(state, access(state, r)) for r in visible[window]], has_more)


def cancel(state, batch_id: str) -> dict:
    record = get(state, batch_id)
    if record["processing_status"] == "in_progress":
        record.update(processing_status="canceling", cancel_initiated_at=state.clock.now())
        state.store.save_batch(record)
    return record


def delete(state, batch_id: str) -> dict:
    """Delete an ended batch; any other is refused (HTTP 400), as the real API refuses it. A delete
    does not advance a canceling batch: it stays canceling until a retrieve, list or results sees it end."""
    record = state.records.get(batch_id)
    if record is None or record["deleted"]:
        raise NotFound(batch_id)
    if record["processing_status"] != "canceling":
        record = access(state, record)
    if record["processing_status"] != "ended":
        raise ParamsError(f"Batch {batch_id} cannot be deleted while it is {record['processing_status']}: "
                          "only ended batches can be deleted; cancel it and wait for it to end first")
    record["deleted"] = True
    state.store.save_batch(record)
    state.store.drop_request_bodies(batch_id)
    return {"id": batch_id, "type": "message_batch_deleted"}


def results_path(state, batch_id: str):
    record = get(state, batch_id)
    if record["processing_status"] != "ended":
        raise ParamsError(f"Batch {batch_id} has not ended yet (processing_status "
                          f"{record['processing_status']}); results are not available")
    if record["archived_at"] is not None:
        raise NotFound(f"results of {batch_id} were archived")
    path = state.store.results_path(batch_id)
    if not path.exists():
        raise NotFound(f"results of {batch_id}")
    return path


def ledger_view(state, with_requests: bool) -> dict:
    records = sorted(state.records.values(), key=lambda r: r["seq"])
    out = state.ledger.snapshot()
    out["queue"] = queue_view(state)
    out["batches"] = [{"id": r["id"], "created_at": rfc3339(r["created_at"]), "request_count": r["request_count"],
                       "processing_status": r["processing_status"], "deleted": r["deleted"]} for r in records]
    out["files"] = state.files.ledger()
    if with_requests:
        out["requests"] = [{"batch_id": r["id"], "custom_id": cid, "params_hash": h}
                           for r in records for cid, h in state.store.load_hashes(r["id"])]
    return out
