"""Turning submitted requests into results: outcomes, completions, billing, the JSONL lines.

Requests are processed in submitted order (so within one batch the first request writes the
prompt cache and the later ones read it). The results file lists one line per request in a
shuffled order that is deterministic per batch (seeded by the emulator seed and the batch id).
"""

from __future__ import annotations

import json
import random

from . import completions, tokens, validation
from .scenarios import OUTCOME_MESSAGES


def _line(custom_id: str, result: dict) -> bytes:
    return (json.dumps({"custom_id": custom_id, "result": result}, separators=(",", ":"),
                       ensure_ascii=False) + "\n").encode("utf-8")


def errored(kind: str, message: str) -> dict:
    return {"type": "errored",
            "error": {"type": "error", "error": {"type": kind, "message": message}, "request_id": None}}


def process_batch(state, record: dict, requests: list[dict], done: int, now: float,
                  expire_rest: bool) -> tuple[dict, list[bytes]]:
    """Results for a batch ending at emulated time `now`.

    The first `done` requests (submitted order) are processed; the others are `expired`
    (expire_rest) or `canceled`. Returns (request_counts, results lines in file order).
    """
    batch_id = record["id"]
    version = record.get("version", validation.VERSION_NEW)
    processed_ids = [r["custom_id"] for r in requests[:done]]
    forced = state.scenarios.outcomes_for_batch(batch_id, processed_ids)
    counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    entries: list[tuple[str, dict]] = []
    for i, req in enumerate(requests):
        cid, params = req["custom_id"], req["params"]
        if i >= done:
            result = {"type": "expired"} if expire_rest else {"type": "canceled"}
        elif cid in forced:
            outcome = forced[cid]
            result = {"type": "expired"} if outcome == "expired" else errored(outcome, OUTCOME_MESSAGES[outcome])
        else:
            try:
                params, _ = validation.check_params(params, version, in_batch=True, files=state.files)
            except validation.ParamsError as e:
                result = errored("invalid_request_error", e.message)
            else:
                usage = state.cache.usage(params, now, batch=True)
                message = completions.build_message(
                    params, usage, completions.message_id(f"{batch_id}/{cid}"))
                state.ledger.charge(params["model"], message["usage"], batch_id)
                result = {"type": "succeeded", "message": message}
        counts[result["type"]] += 1
        entries.append((cid, result))
    missing = state.scenarios.missing_for_batch(
        [cid for cid, result in entries if result["type"] == "succeeded"])
    rng = random.Random(f"{state.seed}|{batch_id}")
    rng.shuffle(entries)
    lines = [_line(cid, result) for cid, result in entries if cid not in missing]
    return counts, lines


def run_message(state, params: object, version: str) -> tuple[int, dict]:
    """A synchronous POST /v1/messages: (HTTP status, body)."""
    if not isinstance(params, dict):
        return 400, {"type": "invalid_request_error", "message": "body: Input should be a valid dictionary"}
    p_hash = tokens.params_hash(params)
    model = str(params.get("model"))
    try:
        params, _ = validation.check_params(params, version, in_batch=False, files=state.files)
    except validation.ParamsError as e:
        state.ledger.record_message(p_hash, model, e.status)
        return e.status, {"type": e.kind, "message": e.message}
    usage = state.cache.usage(params, state.clock.now(), batch=False)
    message = completions.build_message(params, usage, completions.message_id(f"sync/{p_hash}/{state.clock.now()}"))
    state.ledger.charge(params["model"], message["usage"], None)
    state.ledger.record_message(p_hash, model, 200)
    return 200, message


def count_tokens(state, params: object) -> tuple[int, dict]:
    """POST /v1/messages/count_tokens: (HTTP status, body); a prompt over the context limit is counted."""
    if not isinstance(params, dict):
        return 400, {"type": "invalid_request_error", "message": "body: Input should be a valid dictionary"}
    probe = dict(params)
    probe.setdefault("max_tokens", 1)
    try:
        _, n = validation.check_params(probe, validation.VERSION_OLD, in_batch=False, files=state.files,
                                       count_only=True)
    except validation.ParamsError as e:
        return e.status, {"type": e.kind, "message": e.message}
    return 200, {"input_tokens": n}
