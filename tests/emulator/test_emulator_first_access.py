"""Contract tests: a fresh batch is never already ended on its first access, whatever the
processing delay; after that first access it follows the delay and the emulated clock."""

from __future__ import annotations

import anthropic
import pytest

from emulator_contract import checked_client, lines_by_id, raw_results, request, retrieve_ended

DAY = 86_400


def make_requests(n: int, prefix: str = "r") -> list[dict]:
    return [request(f"{prefix}{i}", f"row {i}") for i in range(n)]


def assert_fresh(batch, n: int) -> None:
    assert batch.processing_status == "in_progress"
    counts = batch.request_counts
    assert (counts.processing, counts.succeeded, counts.errored, counts.canceled, counts.expired) == (n, 0, 0, 0, 0)
    assert batch.results_url is None and batch.ended_at is None and batch.cancel_initiated_at is None


def test_delay_0_create_and_first_retrieve_in_progress_second_ended(api, emulator):
    assert emulator.configure()["processing_delay"] == 0
    batch = api.messages.batches.create(requests=make_requests(4))
    assert_fresh(batch, 4)
    assert_fresh(api.messages.batches.retrieve(batch.id), 4)
    ended = api.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended" and ended.request_counts.succeeded == 4
    assert ended.request_counts.processing == 0 and ended.results_url is not None
    assert ended.ended_at >= ended.created_at
    assert len(lines_by_id(raw_results(api, batch.id))) == 4


def test_delay_0_first_list_shows_every_new_batch_in_progress(api):
    ids = [api.messages.batches.create(requests=make_requests(2, f"b{i}_")).id for i in range(3)]
    first = api.messages.batches.list()
    assert [b.id for b in first.data] == list(reversed(ids))
    for batch in first.data:
        assert_fresh(batch, 2)
    second = api.messages.batches.list()
    assert {b.processing_status for b in second.data} == {"ended"}
    assert all(b.request_counts.succeeded == 2 for b in second.data)


def test_first_access_by_list_then_retrieve_counts_once(api):
    batch = api.messages.batches.create(requests=make_requests(1))
    assert_fresh(api.messages.batches.list().data[0], 1)
    assert api.messages.batches.retrieve(batch.id).processing_status == "ended"


def test_delay_0_cancel_right_after_create_is_canceling_then_ended(api, emulator):
    batch = api.messages.batches.create(requests=make_requests(3))
    canceling = api.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at is not None
    assert canceling.request_counts.processing == 3 and canceling.results_url is None
    assert canceling.ended_at is None
    ended = api.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended" and ended.cancel_initiated_at == canceling.cancel_initiated_at
    counts = ended.request_counts
    # With no processing delay every request was done by the time the cancel arrived.
    assert (counts.processing, counts.succeeded, counts.canceled) == (0, 3, 0)
    results = lines_by_id(raw_results(api, batch.id))
    assert {r["type"] for r in results.values()} == {"succeeded"}
    assert emulator.ledger()["bill"]["by_batch"][batch.id] > 0


def test_delayed_cancel_right_after_create_cancels_everything_unbilled(api, emulator):
    emulator.configure(processing_delay=600)
    batch = api.messages.batches.create(requests=make_requests(3))
    canceling = api.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at is not None
    ended = api.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended"
    assert (ended.request_counts.canceled, ended.request_counts.succeeded) == (3, 0)
    assert {r["type"] for r in lines_by_id(raw_results(api, batch.id)).values()} == {"canceled"}
    assert emulator.ledger()["bill"]["by_batch"][batch.id] == 0


def test_first_access_after_the_delay_still_in_progress_and_ended_at_not_before_it(api, emulator):
    emulator.configure(processing_delay=3600)
    batch = api.messages.batches.create(requests=make_requests(2))
    emulator.advance_clock(3601)
    assert_fresh(api.messages.batches.retrieve(batch.id), 2)
    ended = api.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended" and ended.request_counts.succeeded == 2
    assert (ended.ended_at - ended.created_at).total_seconds() >= 3601  # the first access, not the delay


def test_delete_right_after_create_is_refused(api):
    batch = api.messages.batches.create(requests=make_requests(1))
    with pytest.raises(anthropic.BadRequestError) as err:
        api.messages.batches.delete(batch.id)
    assert "in_progress" in err.value.body["error"]["message"]
    retrieve_ended(api, batch.id, accesses=1)
    assert api.messages.batches.delete(batch.id).type == "message_batch_deleted"


def test_first_access_after_expires_at_shows_the_batch_as_it_is(api, emulator):
    done = api.messages.batches.create(requests=make_requests(2, "d"))
    emulator.add_scenario({"name": "never_end"})
    stuck = api.messages.batches.create(requests=make_requests(2, "s"))
    emulator.advance_clock(DAY + 60)
    ended = api.messages.batches.retrieve(done.id)
    assert ended.processing_status == "ended" and ended.request_counts.succeeded == 2
    assert ended.ended_at == ended.created_at  # delay 0: nobody looked at it within its 24 h
    expired = api.messages.batches.retrieve(stuck.id)
    assert expired.processing_status == "ended" and expired.request_counts.expired == 2


def test_first_access_state_survives_restart(emulator):
    client = checked_client(emulator, max_retries=0)
    fresh = client.messages.batches.create(requests=make_requests(2, "f"))
    seen = client.messages.batches.create(requests=make_requests(2, "s"))
    assert_fresh(client.messages.batches.retrieve(seen.id), 2)
    emulator.restart()
    client = checked_client(emulator, max_retries=0)
    assert_fresh(client.messages.batches.retrieve(fresh.id), 2)
    assert client.messages.batches.retrieve(seen.id).processing_status == "ended"
    assert retrieve_ended(client, fresh.id, accesses=1).request_counts.succeeded == 2
    assert client.schema_violations == []
