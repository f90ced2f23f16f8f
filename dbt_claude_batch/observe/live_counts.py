"""Live request counts for `status --watch`: the batches in flight as the API shows them now.

`status` reads the state (or, while a running dbt holds the file's lock, its snapshot), whose counts
are those of dbt's last poll. While watching, it also asks the API, read-only: one `retrieve` per
batch in flight, never a create, cancel or delete; at most one per batch every `min_interval`
seconds (`--api-interval`, default `LIVE_INTERVAL`), and at most `per_refresh` batches a refresh (the
longest unasked first), so neither many batches nor a fast refresh can use up the workspace's rate
limit. Nothing is written: `status` never writes, and the next dbt run records what it polls itself.
The key comes from the environment only (`ANTHROPIC_API_KEY`, with `ANTHROPIC_BASE_URL`), through
`client.py`; without it the counts stay the state's, and the document says so.
"""

from __future__ import annotations

import math
import os
import time
from datetime import datetime
from typing import Any, Callable

from dbt_claude_batch.api.client import API_KEY_ENV, BASE_URL_ENV, LazyClient
from dbt_claude_batch.base.errors import ConfigError, MissingApiKeyError
from dbt_claude_batch.state.inspect import iso, live_batch
from dbt_claude_batch.state.state import utcnow

LIVE_INTERVAL = 30.0
PER_REFRESH = 20
STALE = "counts are as of dbt's last poll"


def _client():
    # No retries: a retrieve that fails is simply asked again at the next interval.
    return LazyClient(max_retries=0, timeout=15.0).get()


class LiveCounts:
    """Overlays the API's counts on the batches in flight of status documents, rate-limited per batch."""

    def __init__(self, client_factory: Callable[[], Any] | None = None, min_interval: float = LIVE_INTERVAL,
                 per_refresh: int = PER_REFRESH, clock: Callable[[], float] = time.monotonic):
        self._factory = client_factory or _client
        self._client = None
        self.min_interval, self.per_refresh, self._clock = min_interval, per_refresh, clock
        self._asked: dict[str, float] = {}  # batch id -> clock of its last retrieve, answered or not
        self._answers: dict[str, tuple[datetime, Any]] = {}  # batch id -> (when, the API's batch)
        self._gone: set[str] = set()

    def apply(self, doc: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
        """Ask the API about the batches due, then show every batch with its latest answer; returns `doc`.

        Each answer is stamped with the time it came back (or `now`, when given, as tests do)."""
        doc["live"] = live = {"enabled": True, "min_interval_seconds": self.min_interval, "note": ""}
        try:
            self._client = self._client or self._factory()
        except MissingApiKeyError:
            live.update(enabled=False, note=f"{API_KEY_ENV} is not set: {STALE}")
        except ConfigError as exc:
            live.update(enabled=False, note=f"{str(exc).splitlines()[0]} ({STALE})")
        if live["enabled"]:
            self._ask(doc, now, live)
        shown_at = now or utcnow()
        for m in doc["models"]:
            m["batches_in_flight"] = [self._shown(b, shown_at) for b in m["batches_in_flight"]]
        return doc

    def _ask(self, doc: dict[str, Any], now: datetime | None, live: dict[str, Any]) -> None:
        import anthropic

        due = [b["batch_id"] for m in doc["models"] for b in m["batches_in_flight"]
               if b["kind"] == "batch" and b["batch_id"] not in self._gone
               and self._clock() - self._asked.get(b["batch_id"], -math.inf) >= self.min_interval]
        due.sort(key=lambda batch_id: self._asked.get(batch_id, -math.inf))
        for batch_id in due[: self.per_refresh]:
            self._asked[batch_id] = self._clock()
            try:
                batch = self._client.messages.batches.retrieve(batch_id)
                self._answers[batch_id] = (now or utcnow(), batch)
            except anthropic.NotFoundError:
                self._gone.add(batch_id)
            except anthropic.APIConnectionError:
                url = os.environ.get(BASE_URL_ENV) or "https://api.anthropic.com"
                live["note"] = f"Cannot reach the API at {url}: {STALE}; asked again in {self.min_interval:g}s"
                return
            except anthropic.APIStatusError as exc:
                live["note"] = f"The API answered HTTP {exc.status_code} to a retrieve: {STALE}"
                return

    def _shown(self, b: dict[str, Any], now: datetime) -> dict[str, Any]:
        if b["batch_id"] in self._gone:
            return {**b, "counts_from": "state", "live_note": "the API does not know this batch (deleted, or "
                                                              "another workspace's key)"}
        if b["batch_id"] not in self._answers:
            return {**b, "counts_from": "state"}
        polled_at, batch = self._answers[b["batch_id"]]
        return {**live_batch(b, batch, polled_at, now), "counts_from": "api", "api_polled_at": iso(polled_at)}
