"""Contract tests of the `queue_limit` scenario: the workspace's processing queue (requests of
batches not yet ended, every key) may hold at most `max_requests`; a create that would exceed it
is refused with 429 rate_limit_error and a retry-after header, and nothing is created. Driven
through the real anthropic SDK; the queue is read on GET /_emulator/queue."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from types import SimpleNamespace

import anthropic
import pytest

from dbt_claude_batch.emulator import batches
from dbt_claude_batch.emulator.scenarios import Scenarios
from emulator_contract import checked_client, request

CREATE = "POST /v1/messages/batches"
DAY = 86_400


def reqs(n, prefix="r"):
    return [request(f"{prefix}{i}", f"text {i}") for i in range(n)]


def queue(emulator) -> dict:
    with urllib.request.urlopen(emulator.url + "/_emulator/queue", timeout=10) as response:
        return json.loads(response.read())


def refused(client, n, prefix="x"):
    with pytest.raises(anthropic.RateLimitError) as err:
        client.messages.batches.create(requests=reqs(n, prefix))
    return err.value


def test_scenario_defaults_and_empty_queue(emulator):
    assert queue(emulator) == {"queued_requests": 0, "queued_batches": 0, "limit": None}
    emulator.add_scenario({"name": "queue_limit", "max_requests": 10})
    assert emulator.scenarios() == [{"name": "queue_limit", "max_requests": 10, "retry_after": 60,
                                     "times": None}]
    assert queue(emulator) == {"queued_requests": 0, "queued_batches": 0, "limit": 10}
    ledger = emulator.ledger(requests=False)
    assert ledger["queue"] == {"queued_requests": 0, "queued_batches": 0, "limit": 10}
    assert ledger["queue_refusals"] == []


def test_under_the_limit_accepted_over_it_refused_with_retry_after_and_nothing_created(api, emulator):
    emulator.add_scenario({"name": "queue_limit", "max_requests": 10})
    first = api.messages.batches.create(requests=reqs(4, "a"))
    second = api.messages.batches.create(requests=reqs(6, "b"))  # exactly at the limit: accepted
    assert queue(emulator) == {"queued_requests": 10, "queued_batches": 2, "limit": 10}
    err = refused(api, 1)
    response = err.response
    assert response.status_code == 429 and response.headers["retry-after"] == "60"
    body = err.body
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    assert body["request_id"] == response.headers["request-id"]
    message = body["error"]["message"]
    assert "processing queue" in message and "limit of 10" in message
    assert "queued: 10" in message and "in this request: 1" in message
    ledger = emulator.ledger()
    assert ledger["calls"][CREATE] == {"200": 2, "429": 1}
    assert ledger["queue_refusals"] == [{"queued": 10, "requested": 1, "limit": 10}]
    assert [b["id"] for b in ledger["batches"]] == [first.id, second.id]
    assert len(ledger["requests"]) == 10
    assert ledger["queue"]["queued_requests"] == 10  # counting did not access the batches
    # The first access (this list) still shows both fresh batches in progress.
    listed = api.messages.batches.list()
    assert [b.id for b in listed.data] == [second.id, first.id]
    assert {b.processing_status for b in listed.data} == {"in_progress"}
    assert emulator.scenarios() != []  # unlimited by default


def test_room_comes_back_as_batches_end_on_the_clock(api, emulator):
    emulator.configure(processing_delay=600)
    emulator.add_scenario({"name": "queue_limit", "max_requests": 10})
    accessed = api.messages.batches.create(requests=reqs(6, "a"))
    assert api.messages.batches.retrieve(accessed.id).processing_status == "in_progress"  # first access
    fresh = api.messages.batches.create(requests=reqs(4, "b"))  # never accessed
    assert queue(emulator)["queued_requests"] == 10
    refused(api, 3)
    emulator.advance_clock(601)
    # The accessed batch ended on the clock (even before its next access); the fresh one is in
    # progress until its first access, which the real API would never skip.
    assert queue(emulator) == {"queued_requests": 4, "queued_batches": 1, "limit": 10}
    assert api.messages.batches.retrieve(accessed.id).processing_status == "ended"
    refused(api, 7)
    assert api.messages.batches.retrieve(fresh.id).processing_status == "in_progress"
    assert api.messages.batches.retrieve(fresh.id).processing_status == "ended"
    assert queue(emulator)["queued_requests"] == 0
    full = api.messages.batches.create(requests=reqs(10, "c"))
    assert queue(emulator) == {"queued_requests": 10, "queued_batches": 1, "limit": 10}
    ledger = emulator.ledger(requests=False)
    assert ledger["calls"][CREATE] == {"200": 3, "429": 2}
    assert ledger["queue_refusals"] == [{"queued": 10, "requested": 3, "limit": 10},
                                        {"queued": 4, "requested": 7, "limit": 10}]
    assert [b["id"] for b in ledger["batches"]] == [accessed.id, fresh.id, full.id]


def test_the_limit_counts_the_batches_of_every_key(emulator):
    emulator.add_scenario({"name": "queue_limit", "max_requests": 10})
    dev = checked_client(emulator, max_retries=0, api_key="key-dev")
    prod = checked_client(emulator, max_retries=0, api_key="key-prod")
    mine = dev.messages.batches.create(requests=reqs(7, "dev"))
    err = refused(prod, 4, "prod")
    assert "queued: 7" in err.body["error"]["message"] and "in this request: 4" in err.body["error"]["message"]
    prod.messages.batches.create(requests=reqs(3, "prod"))
    assert queue(emulator)["queued_requests"] == 10
    refused(dev, 1, "more")
    assert emulator.ledger(requests=False)["queue_refusals"] == [{"queued": 7, "requested": 4, "limit": 10},
                                                                 {"queued": 10, "requested": 1, "limit": 10}]
    assert mine.id in [b.id for b in prod.messages.batches.list()]
    assert dev.schema_violations == [] and prod.schema_violations == []


def test_canceling_counts_until_the_access_that_ends_it(api, emulator):
    emulator.configure(processing_delay=600)
    emulator.add_scenario({"name": "queue_limit", "max_requests": 10})
    batch = api.messages.batches.create(requests=reqs(8))
    assert api.messages.batches.cancel(batch.id).processing_status == "canceling"
    assert queue(emulator)["queued_requests"] == 8
    refused(api, 5)
    assert api.messages.batches.retrieve(batch.id).processing_status == "ended"
    assert queue(emulator)["queued_requests"] == 0
    api.messages.batches.create(requests=reqs(5, "y"))


def test_expired_and_deleted_batches_do_not_count(api, emulator):
    emulator.add_scenario({"name": "never_end"})
    stuck = api.messages.batches.create(requests=reqs(5, "s"))
    emulator.clear_scenarios()
    emulator.add_scenario({"name": "queue_limit", "max_requests": 5})
    refused(api, 1)
    emulator.advance_clock(DAY + 1)
    # Never accessed, but past expires_at: its first access shows it ended (all expired).
    assert queue(emulator)["queued_requests"] == 0
    done = api.messages.batches.create(requests=reqs(5, "d"))
    assert api.messages.batches.retrieve(stuck.id).request_counts.expired == 5
    api.messages.batches.retrieve(done.id)
    api.messages.batches.retrieve(done.id)
    api.messages.batches.delete(done.id)
    assert queue(emulator) == {"queued_requests": 0, "queued_batches": 0, "limit": 5}


def test_sdk_retries_honour_retry_after_and_times_counts_refusals(emulator):
    emulator.add_scenario({"name": "queue_limit", "max_requests": 2, "retry_after": 0.05, "times": 2})
    client = checked_client(emulator, max_retries=1)
    with pytest.raises(anthropic.RateLimitError) as err:
        client.messages.batches.create(requests=reqs(3))
    assert err.value.response.headers["retry-after"] == "0.05"
    ledger = emulator.ledger(requests=False)
    assert ledger["calls"][CREATE] == {"429": 2}  # the SDK retried once, in vain
    assert len(ledger["queue_refusals"]) == 2 and ledger["batches"] == []
    assert emulator.scenarios() == []  # spent after two refusals
    client.messages.batches.create(requests=reqs(3))
    assert client.schema_violations == []


def test_the_tightest_of_several_limits_applies(api, emulator):
    emulator.set_scenarios([{"name": "queue_limit", "max_requests": 100},
                            {"name": "queue_limit", "max_requests": 3}])
    assert queue(emulator)["limit"] == 3
    err = refused(api, 4)
    assert "limit of 3" in err.body["error"]["message"]


def test_queue_survives_a_restart(emulator):
    emulator.add_scenario({"name": "queue_limit", "max_requests": 10})
    client = emulator.client(max_retries=0)
    client.messages.batches.create(requests=reqs(9))
    client.close()
    emulator.restart()
    assert queue(emulator) == {"queued_requests": 9, "queued_batches": 1, "limit": 10}
    client = checked_client(emulator, max_retries=0)
    refused(client, 2)
    assert emulator.ledger(requests=False)["queue_refusals"] == [{"queued": 9, "requested": 2, "limit": 10}]
    client.close()


def test_a_create_that_is_invalid_is_400_not_429(api, emulator):
    emulator.add_scenario({"name": "queue_limit", "max_requests": 0})
    with pytest.raises(anthropic.BadRequestError):
        api.messages.batches.create(requests=[request("same", "a"), request("same", "b")])
    refused(api, 1)
    assert emulator.ledger(requests=False)["queue_refusals"] == [{"queued": 0, "requested": 1, "limit": 0}]


@pytest.mark.parametrize("bad", [{"name": "queue_limit"}, {"name": "queue_limit", "max_requests": -1},
                                 {"name": "queue_limit", "max_requests": "200000"},
                                 {"name": "queue_limit", "max_requests": True},
                                 {"name": "queue_limit", "max_requests": 5, "retry_after": -1},
                                 {"name": "queue_limit", "max_requests": 5, "times": 0}])
def test_invalid_queue_limit_scenarios_are_400(emulator, bad):
    with pytest.raises(urllib.error.HTTPError) as err:
        emulator.add_scenario(bad)
    assert err.value.code == 400
    assert json.loads(err.value.read())["error"]["type"] == "invalid_request_error"


def test_counting_a_million_queued_requests_reads_only_the_batch_records():
    """1M requests in ten 100k batches: the count sums the records' request_count (no request
    bodies exist here, so any per-request work would fail)."""
    now = 1_000_000.0
    records = {}
    for i in range(10):
        records[f"b{i}"] = {"id": f"b{i}", "request_count": 100_000, "processing_status": "in_progress",
                            "deleted": False, "first_access_pending": i % 2 == 0, "never_end": False,
                            "created_at": now, "end_at": now + 3600, "expires_at": now + DAY}
    records["ended"] = {**records["b1"], "id": "ended", "processing_status": "ended"}
    records["due"] = {**records["b1"], "id": "due", "end_at": now - 1}
    state = SimpleNamespace(records=records, clock=SimpleNamespace(now=lambda: now),
                            scenarios=Scenarios([{"name": "queue_limit", "max_requests": 1_000_000}]))
    view = batches.queue_view(state)
    assert view == {"queued_requests": 1_000_000, "queued_batches": 10, "limit": 1_000_000}
    assert state.scenarios.queue_refusal(view["queued_requests"], 0) is None
    assert state.scenarios.queue_refusal(view["queued_requests"], 1) is not None
