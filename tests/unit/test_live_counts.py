"""`status --watch` asks the API for the live counts of the batches in flight: read-only, rate-limited per batch."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

from dbt_claude_batch.observe.live_counts import LiveCounts
from dbt_claude_batch.observe.status import render_text

NOW = dt.datetime(2026, 3, 1, 12, 0, 0)


class Batches:
    """The SDK's `messages.batches` with `retrieve` only: a create, cancel or delete would raise AttributeError."""

    def __init__(self):
        self.calls: list[str] = []
        self.live: dict[str, dict] = {}

    def retrieve(self, batch_id):
        self.calls.append(batch_id)
        counts = self.live[batch_id]
        return SimpleNamespace(id=batch_id, processing_status=counts.get("status", "in_progress"),
                               ended_at=None, request_counts=SimpleNamespace(**{
                                   k: counts.get(k, 0) for k in ("processing", "succeeded", "errored", "canceled",
                                                                 "expired")}))


def _batch(batch_id, kind="batch", n=10):
    return {"batch_id": batch_id, "kind": kind, "processing_status": "in_progress", "has_marker": True,
            "created_at": "2026-03-01T11:59:00Z", "expires_at": "2026-03-02T11:59:00Z", "ended_at": None,
            "polled_at": "2026-03-01T11:59:01Z", "n_submitted": n, "n_processing": n, "n_succeeded": 0,
            "n_errored": 0, "n_canceled": 0, "n_expired": 0, "age_seconds": 3600.0, "expires_in_seconds": 82800.0,
            "eta_at": None, "eta_seconds": None, "eta_note": "no request finished yet"}


def _doc(*batches):
    return {"state_schema": "dbt_claude_batch", "state_version": 5, "generated_at": "2026-03-01T12:00:00Z",
            "source": {"kind": "database", "database": "w.duckdb"},
            "models": [{"model_id": "main.t", "last_run": {"at": None, "from": "models.updated_at"},
                        "in_flight": {"batches": len(batches), "requests": 10, "creates_in_doubt": 0},
                        "batches_in_flight": list(batches), "spend": {
                            "billed_usd": 0.0, "billed_from": "outcomes", "billed_requests": 0, "unpriced_outcomes": 0,
                            "committed_usd": None, "avg_request_usd": None, "requests_in_flight": 10},
                        "failures": None, "health": None}]}


def test_watch_shows_the_apis_counts_retrieving_each_batch_at_most_once_per_interval():
    api, clock = Batches(), [0.0]
    api.live["msgbatch_a"] = {"processing": 7, "succeeded": 4}  # the marker is one of them: 10 rows + 1
    live = LiveCounts(lambda: SimpleNamespace(messages=SimpleNamespace(batches=api)), min_interval=30,
                      clock=lambda: clock[0])

    doc = live.apply(_doc(_batch("msgbatch_a"), _batch("sync_b", kind="sync")), now=NOW)

    assert api.calls == ["msgbatch_a"]  # a synchronous pass has nothing to ask the API about
    a = doc["models"][0]["batches_in_flight"][0]
    assert (a["n_succeeded"], a["n_processing"], a["counts_from"]) == (4, 6, "api")  # marker taken out
    assert a["eta_note"] == "at 4.0 requests/min" and a["eta_seconds"] == 90.0  # 6 left at the rate of its first minute
    assert doc["live"]["enabled"] and doc["models"][0]["batches_in_flight"][1]["counts_from"] == "state"
    text = render_text(doc, now=NOW)
    assert "msgbatch_a  [############..................]  4 succeeded, 0 errored, 6 processing of 10" in text
    assert "counts live from the API, polled 0s ago" in text
    assert "read-only, each batch at most every 30s" in text

    api.live["msgbatch_a"] = {"processing": 1, "succeeded": 10}
    clock[0] = 29.0
    doc = live.apply(_doc(_batch("msgbatch_a")), now=NOW + dt.timedelta(seconds=29))
    assert api.calls == ["msgbatch_a"]  # too soon: the last answer, with its age
    assert doc["models"][0]["batches_in_flight"][0]["n_succeeded"] == 4
    assert "polled 29s ago" in render_text(doc, now=NOW + dt.timedelta(seconds=29))
    clock[0] = 30.0
    doc = live.apply(_doc(_batch("msgbatch_a")), now=NOW + dt.timedelta(seconds=30))
    assert api.calls == ["msgbatch_a"] * 2 and doc["models"][0]["batches_in_flight"][0]["n_succeeded"] == 10


def test_many_batches_are_asked_about_a_few_per_refresh_the_longest_unasked_first():
    api, clock = Batches(), [0.0]
    for b in "abc":
        api.live[f"msgbatch_{b}"] = {"processing": 11}
    live = LiveCounts(lambda: SimpleNamespace(messages=SimpleNamespace(batches=api)), min_interval=30,
                      clock=lambda: clock[0], per_refresh=2)
    doc = _doc(*(_batch(f"msgbatch_{b}") for b in "abc"))
    live.apply(doc, now=NOW)
    clock[0] = 1.0
    live.apply(doc, now=NOW)
    assert api.calls == ["msgbatch_a", "msgbatch_b", "msgbatch_c"]


def test_without_a_key_or_a_reachable_api_the_counts_are_the_states_and_say_so(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    doc = LiveCounts(min_interval=30).apply(_doc(_batch("msgbatch_a")), now=NOW)
    assert doc["live"] == {"enabled": False, "min_interval_seconds": 30,
                           "note": "ANTHROPIC_API_KEY is not set: counts are as of dbt's last poll"}
    text = render_text(doc, now=NOW)
    assert "live counts off: ANTHROPIC_API_KEY is not set: counts are as of dbt's last poll" in text
    assert "counts as of dbt's last poll (59s ago)" in text

    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    doc = LiveCounts(min_interval=30).apply(_doc(_batch("msgbatch_a")), now=NOW)
    assert doc["live"]["enabled"] and doc["live"]["note"].startswith(
        "Cannot reach the API at http://127.0.0.1:9: counts are as of dbt's last poll")
    assert "test-key" not in repr(doc)
