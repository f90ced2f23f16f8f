"""What the emulator was asked and what it would have charged.

`calls` counts HTTP calls per route template and status (faults included; a create whose
connection was closed after the batch was created counts as "lost", one closed before anything
was created as "dropped", a cut download as "cut"). `dropped_creates` lists those unanswered
creates in order, {"when": "before"|"after", "batch_id": id or None}, so a test can tell whether
a batch exists. `queue_refusals` lists the creates the `queue_limit` scenario refused, in order,
{"queued": requests already in the processing queue, "requested": requests in the refused create,
"limit": max_requests}. The bill counts succeeded requests only: batch results at 50%, synchronous
messages at full price.
"""

from __future__ import annotations

import threading

from . import pricing

TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def _empty_bill() -> dict:
    return {"total_usd": 0.0, "batch_usd": 0.0, "sync_usd": 0.0, "by_batch": {}, "by_model": {},
            "tokens": {f: 0 for f in TOKEN_FIELDS}}


class Ledger:
    def __init__(self, saved: dict | None = None) -> None:
        saved = saved or {}
        self._lock = threading.Lock()
        self.calls: dict[str, dict[str, int]] = saved.get("calls", {})
        self.messages: list[dict] = saved.get("messages", [])
        self.bill: dict = saved.get("bill") or _empty_bill()
        self.dropped_creates: list[dict] = saved.get("dropped_creates", [])
        self.queue_refusals: list[dict] = saved.get("queue_refusals", [])
        self.dirty = False

    def count_call(self, route: str, status: int | str) -> None:
        with self._lock:
            per = self.calls.setdefault(route, {})
            per[str(status)] = per.get(str(status), 0) + 1
            self.dirty = True

    def record_message(self, params_hash: str, model: str, status: int) -> None:
        with self._lock:
            self.messages.append({"params_hash": params_hash, "model": model, "status": status})
            self.dirty = True

    def record_dropped_create(self, when: str, batch_id: str | None) -> None:
        """A create left unanswered: `before` created nothing, `after` created `batch_id`."""
        with self._lock:
            self.dropped_creates.append({"when": when, "batch_id": batch_id})
            self.dirty = True

    def record_queue_refusal(self, queued: int, requested: int, limit: int) -> None:
        """A create refused by the queue_limit scenario (nothing was created)."""
        with self._lock:
            self.queue_refusals.append({"queued": queued, "requested": requested, "limit": limit})
            self.dirty = True

    def charge(self, model: str, usage: dict, batch_id: str | None) -> float:
        """Add one succeeded Message to the bill; batch_id None means a synchronous call."""
        usd = pricing.cost_usd(model, usage, batch=batch_id is not None)
        with self._lock:
            bill = self.bill
            bill["total_usd"] += usd
            if batch_id is None:
                bill["sync_usd"] += usd
            else:
                bill["batch_usd"] += usd
                bill["by_batch"][batch_id] = bill["by_batch"].get(batch_id, 0.0) + usd
            bill["by_model"][model] = bill["by_model"].get(model, 0.0) + usd
            for f in TOKEN_FIELDS:
                bill["tokens"][f] += usage.get(f) or 0
            self.dirty = True
        return usd

    def ensure_batch(self, batch_id: str) -> None:
        with self._lock:
            self.bill["by_batch"].setdefault(batch_id, 0.0)

    def snapshot(self) -> dict:
        with self._lock:
            return {"calls": {k: dict(v) for k, v in self.calls.items()},
                    "messages": list(self.messages),
                    "dropped_creates": [dict(d) for d in self.dropped_creates],
                    "queue_refusals": [dict(q) for q in self.queue_refusals],
                    "bill": {**self.bill, "by_batch": dict(self.bill["by_batch"]),
                             "by_model": dict(self.bill["by_model"]), "tokens": dict(self.bill["tokens"])}}
