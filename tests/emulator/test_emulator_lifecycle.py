"""Contract tests of the batch lifecycle, driven only through the real anthropic SDK."""

from __future__ import annotations

import hashlib
import json
import re

import anthropic
import httpx2
import pytest

from emulator_contract import announce_oversized, check_body, checked_client, lines_by_id, raw_results, request

DAY = 86_400


def make_requests(n: int, prefix: str = "r") -> list[dict]:
    return [request(f"{prefix}{i}", f"row {i}: the quick brown fox") for i in range(n)]


def test_create_returns_in_progress_batch_with_all_fields(api, emulator):
    emulator.configure(processing_delay=600)
    batch = api.messages.batches.create(requests=make_requests(3))
    assert re.fullmatch(r"msgbatch_[A-Za-z0-9]{24}", batch.id)
    assert batch.type == "message_batch"
    assert batch.processing_status == "in_progress"
    assert batch.request_counts.processing == 3
    assert (batch.request_counts.succeeded, batch.request_counts.errored, batch.request_counts.canceled,
            batch.request_counts.expired) == (0, 0, 0, 0)
    assert batch.results_url is None and batch.ended_at is None and batch.archived_at is None
    assert (batch.expires_at - batch.created_at).total_seconds() == DAY
    raw = api.messages.batches.with_raw_response.retrieve(batch.id)
    body = json.loads(raw.http_response.content)
    assert set(body) == {"id", "type", "processing_status", "request_counts", "created_at", "expires_at",
                         "ended_at", "cancel_initiated_at", "archived_at", "results_url"}
    assert raw.http_response.headers["request-id"].startswith("req_")


def test_batch_stays_in_progress_until_processing_delay_then_ends(api, emulator):
    emulator.configure(processing_delay=3600)
    batch = api.messages.batches.create(requests=make_requests(4))
    emulator.advance_clock(3599)
    mid = api.messages.batches.retrieve(batch.id)
    assert mid.processing_status == "in_progress" and mid.request_counts.processing == 4
    assert mid.results_url is None
    emulator.advance_clock(2)
    done = api.messages.batches.retrieve(batch.id)
    assert done.processing_status == "ended"
    assert done.request_counts.succeeded == 4 and done.request_counts.processing == 0
    assert (done.ended_at - done.created_at).total_seconds() == pytest.approx(3600, abs=1e-3)
    assert done.results_url == f"{emulator.url}/v1/messages/batches/{batch.id}/results"


def test_results_decode_through_sdk_and_match_raw_bytes(api):
    batch = api.messages.batches.create(requests=make_requests(5))
    api.messages.batches.retrieve(batch.id)
    decoded = {r.custom_id: r for r in api.messages.batches.results(batch.id)}
    assert set(decoded) == {f"r{i}" for i in range(5)}
    raw = raw_results(api, batch.id)
    assert raw.endswith(b"\n") and b"\n\n" not in raw and raw.count(b"\n") == 5
    by_id = lines_by_id(raw)
    for cid, item in decoded.items():
        assert item.result.type == "succeeded"
        msg = item.result.message
        assert msg.usage.service_tier == "batch"
        assert msg.model == "claude-haiku-4-5" and msg.role == "assistant" and msg.stop_reason == "end_turn"
        text = f"row {cid[1:]}: the quick brown fox"
        assert msg.content[0].text == "digest:" + hashlib.sha256(text.encode()).hexdigest()[:16]
        assert by_id[cid]["message"]["content"][0]["text"] == msg.content[0].text


def test_results_are_shuffled_deterministically(api, emulator):
    batch = api.messages.batches.create(requests=make_requests(40))
    api.messages.batches.retrieve(batch.id)
    order = [json.loads(line)["custom_id"] for line in raw_results(api, batch.id).splitlines()]
    assert sorted(order) == sorted(f"r{i}" for i in range(40))
    assert order != [f"r{i}" for i in range(40)]
    again = [json.loads(line)["custom_id"] for line in raw_results(api, batch.id).splitlines()]
    assert again == order
    emulator.restart()
    client = checked_client(emulator, max_retries=0)
    assert [json.loads(x)["custom_id"] for x in raw_results(client, batch.id).splitlines()] == order
    assert client.schema_violations == []


def test_list_newest_first_with_cursors_and_auto_pagination(api):
    ids = [api.messages.batches.create(requests=make_requests(1)).id for _ in range(7)]
    newest_first = list(reversed(ids))
    page = api.messages.batches.list(limit=3)
    assert [b.id for b in page.data] == newest_first[:3]
    assert page.has_more is True and page.first_id == newest_first[0] and page.last_id == newest_first[2]
    assert [b.id for b in api.messages.batches.list(limit=3)] == newest_first  # SDK auto-pagination
    after = api.messages.batches.list(limit=2, after_id=newest_first[2])
    assert [b.id for b in after.data] == newest_first[3:5] and after.has_more is True
    before = api.messages.batches.list(limit=2, before_id=newest_first[4])
    assert [b.id for b in before.data] == newest_first[2:4] and before.has_more is True
    all_before = [b.id for b in api.messages.batches.list(limit=2, before_id=newest_first[6])]
    assert sorted(all_before) == sorted(newest_first[:6])
    last = api.messages.batches.list(limit=5, after_id=newest_first[4])
    assert [b.id for b in last.data] == newest_first[5:] and last.has_more is False
    default = api.messages.batches.list()
    assert len(default.data) == 7 and default.has_more is False


@pytest.mark.parametrize("limit", [0, 1001])
def test_list_limit_out_of_range_is_400(api, limit):
    with pytest.raises(anthropic.BadRequestError) as err:
        api.messages.batches.list(limit=limit)
    assert err.value.body["error"]["type"] == "invalid_request_error"


def test_cancel_keeps_done_requests_and_cancels_the_rest(api, emulator):
    emulator.configure(processing_delay=1000)
    batch = api.messages.batches.create(requests=make_requests(10))
    emulator.advance_clock(300)  # 30% of the way through
    canceling = api.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at is not None
    assert canceling.request_counts.processing == 10
    ended = api.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended"
    assert ended.request_counts.succeeded == 3 and ended.request_counts.canceled == 7
    results = lines_by_id(raw_results(api, batch.id))
    assert {cid for cid, r in results.items() if r["type"] == "succeeded"} == {"r0", "r1", "r2"}
    assert all(results[f"r{i}"] == {"type": "canceled"} for i in range(3, 10))
    assert emulator.ledger()["bill"]["by_batch"][batch.id] > 0


def test_cancel_unknown_batch_is_404(api):
    with pytest.raises(anthropic.NotFoundError) as err:
        api.messages.batches.cancel("msgbatch_doesnotexist000000000")
    assert err.value.body["error"]["type"] == "not_found_error"


def test_delete_only_once_ended(api, emulator):
    emulator.configure(processing_delay=60)
    batch = api.messages.batches.create(requests=make_requests(2))
    with pytest.raises(anthropic.BadRequestError):
        api.messages.batches.delete(batch.id)
    emulator.advance_clock(61)
    deleted = api.messages.batches.delete(batch.id)
    assert deleted.id == batch.id and deleted.type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        api.messages.batches.retrieve(batch.id)
    assert batch.id not in [b.id for b in api.messages.batches.list()]


def test_results_before_end_are_refused(api, emulator):
    emulator.configure(processing_delay=60)
    batch = api.messages.batches.create(requests=make_requests(1))
    with pytest.raises(anthropic.AnthropicError):
        api.messages.batches.results(batch.id)  # the SDK refuses: no results_url yet
    with pytest.raises(anthropic.BadRequestError):
        api.get(f"/v1/messages/batches/{batch.id}/results", cast_to=object)


def test_retrieve_unknown_is_404_with_error_body(api):
    with pytest.raises(anthropic.NotFoundError) as err:
        api.messages.batches.retrieve("msgbatch_nope")
    body = err.value.body
    assert body["type"] == "error" and body["error"]["type"] == "not_found_error"
    assert body["request_id"] == err.value.response.headers["request-id"]


@pytest.mark.parametrize("requests_,fragment", [
    ([], "at least 1"),
    ([request("bad id!", "x")], "custom_id"),
    ([request("x" * 65, "x")], "custom_id"),
    ([request("dup", "a"), request("dup", "b")], "unique"),
    ([{"custom_id": "no-params"}], "params"),
])
def test_create_envelope_validation_is_400(api, requests_, fragment):
    with pytest.raises(anthropic.BadRequestError) as err:
        api.messages.batches.create(requests=requests_)
    assert fragment in err.value.body["error"]["message"]


def test_more_than_100000_requests_is_400(api):
    tiny = {"model": "claude-haiku-4-5", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]}
    with pytest.raises(anthropic.BadRequestError) as err:
        api.messages.batches.create(requests=[{"custom_id": f"c{i}", "params": tiny} for i in range(100_001)])
    assert "100000" in err.value.body["error"]["message"]
    assert api.messages.batches.list().data == []


def test_body_over_limit_is_413_through_sdk(emulator_factory):
    emu = emulator_factory("--max-batch-bytes", "20000")
    client = checked_client(emu, max_retries=0)
    small = client.messages.batches.create(requests=make_requests(5))
    assert small.processing_status == "in_progress"
    big = [request(f"r{i}", "y" * 1000) for i in range(30)]  # ~35 KB
    with pytest.raises(anthropic.APIStatusError) as err:
        client.messages.batches.create(requests=big)
    assert err.value.status_code == 413
    assert err.value.body["error"]["type"] == "request_too_large"
    assert client.schema_violations == []
    assert len(client.messages.batches.list().data) == 1


def test_default_256mb_limit_rejects_on_content_length_without_reading(emulator):
    """The real limit (256 MiB), checked cheaply: announce a body one byte over it, send none."""
    head, body = announce_oversized(emulator, "/v1/messages/batches", 256 * 1024 * 1024, b'{"requests": [')
    assert head.startswith(b"HTTP/1.1 413")
    assert check_body("POST", "/v1/messages/batches", 413, body) == []
    assert json.loads(body)["error"]["type"] == "request_too_large"
    assert emulator.ledger()["batches"] == []


def test_auth_is_required_and_both_styles_accepted(emulator):
    url = emulator.url + "/v1/messages/batches"
    none = httpx2.get(url, headers={"anthropic-version": "2023-06-01"})
    assert none.status_code == 401 and none.json()["error"]["type"] == "authentication_error"
    assert check_body("GET", "/v1/messages/batches", 401, none.content) == []
    old = httpx2.get(url, headers={"x-api-key": "k", "anthropic-version": "2023-06-01"})
    new = httpx2.get(url, headers={"Authorization": "Bearer k", "anthropic-version": "2026-10-21"})
    assert old.status_code == 200 and new.status_code == 200
    missing_version = httpx2.get(url, headers={"x-api-key": "k"})
    assert missing_version.status_code == 400
    for r in (none, old, new, missing_version):
        assert r.headers["request-id"].startswith("req_")


def test_restart_keeps_batches_results_and_ledger(api, emulator):
    emulator.configure(processing_delay=100)
    pending = api.messages.batches.create(requests=make_requests(3, "p"))
    emulator.advance_clock(10)
    old_pid = emulator.pid
    emulator.restart()
    assert emulator.pid != old_pid
    client = checked_client(emulator, max_retries=0)
    still = client.messages.batches.retrieve(pending.id)
    assert still.processing_status == "in_progress"  # the clock continued, it did not reset
    emulator.advance_clock(91)
    ended = client.messages.batches.retrieve(pending.id)
    assert ended.processing_status == "ended" and ended.request_counts.succeeded == 3
    assert ended.results_url.startswith(emulator.url)
    assert len(lines_by_id(raw_results(client, pending.id))) == 3
    ledger = emulator.ledger()
    assert [b["id"] for b in ledger["batches"]] == [pending.id]
    assert ledger["calls"]["POST /v1/messages/batches"] == {"200": 1}
    assert client.schema_violations == []


def test_expiry_with_never_end_and_clock_jump(api, emulator):
    emulator.add_scenario({"name": "never_end"})
    batch = api.messages.batches.create(requests=make_requests(4))
    emulator.advance_clock(23 * 3600)
    assert api.messages.batches.retrieve(batch.id).processing_status == "in_progress"
    emulator.advance_clock(2 * 3600)
    ended = api.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended" and ended.request_counts.expired == 4
    assert ended.ended_at == ended.expires_at
    assert set(r["type"] for r in lines_by_id(raw_results(api, batch.id)).values()) == {"expired"}
    assert emulator.ledger()["bill"]["by_batch"][batch.id] == 0


def test_retention_archives_after_29_days(api, emulator):
    batch = api.messages.batches.create(requests=make_requests(2))
    api.messages.batches.retrieve(batch.id)
    assert len(lines_by_id(raw_results(api, batch.id))) == 2
    emulator.advance_clock(30 * DAY)
    archived = api.messages.batches.retrieve(batch.id)
    assert archived.archived_at is not None
    assert (archived.archived_at - archived.created_at).total_seconds() == pytest.approx(29 * DAY, abs=1e-3)
    with pytest.raises(anthropic.NotFoundError) as err:
        raw_results(api, batch.id)
    assert err.value.body["error"]["type"] == "not_found_error"


def test_clock_endpoint_reports_emulated_time(emulator):
    before = emulator.clock()["epoch_seconds"]
    after = emulator.advance_clock(3600)["epoch_seconds"]
    assert 3600 <= after - before < 3660
    assert emulator.clock()["now"].endswith("Z")


def test_schema_checker_catches_missing_and_malformed_fields():
    good = {"id": "msgbatch_x", "type": "message_batch", "processing_status": "ended",
            "request_counts": {"processing": 0, "succeeded": 1, "errored": 0, "canceled": 0, "expired": 0},
            "created_at": "2026-01-01T00:00:00.000000Z", "expires_at": "2026-01-02T00:00:00.000000Z",
            "ended_at": None, "cancel_initiated_at": None, "archived_at": None, "results_url": None}
    assert check_body("GET", "/v1/messages/batches/x", 200, json.dumps(good).encode()) == []
    missing = {k: v for k, v in good.items() if k != "archived_at"}
    assert check_body("GET", "/v1/messages/batches/x", 200, json.dumps(missing).encode())
    wrong_status = {**good, "processing_status": "completed"}
    assert check_body("GET", "/v1/messages/batches/x", 200, json.dumps(wrong_status).encode())
    no_z = {**good, "created_at": "2026-01-01T00:00:00+00:00"}
    assert check_body("GET", "/v1/messages/batches/x", 200, json.dumps(no_z).encode())
    bad_line = b'{"custom_id": "a", "result": {"type": "errored", "error": {"type": "invalid_request"}}}\n'
    assert check_body("GET", "/v1/messages/batches/x/results", 200, bad_line)
    assert check_body("GET", "/v1/messages/batches/x/results", 200, b'{"custom_id":"a","result":{"type":"canceled"}}\n\n')


def test_every_key_shares_one_workspace(emulator):
    """A batch created "from another environment" (another client, another key, the other auth
    header style) is listed, retrieved and cancellable from here, and the other way round."""
    here = checked_client(emulator, max_retries=0, api_key="key-of-this-run")
    other = checked_client(emulator, max_retries=0, api_key="key-of-another-environment",
                           default_headers={"anthropic-version": "2023-06-01"})
    emulator.configure(processing_delay=600)
    mine = here.messages.batches.create(requests=make_requests(1, "mine"))
    theirs = other.messages.batches.create(requests=make_requests(2, "theirs"))
    assert [b.id for b in here.messages.batches.list()] == [theirs.id, mine.id]
    assert [b.id for b in other.messages.batches.list()] == [theirs.id, mine.id]
    assert here.messages.batches.retrieve(theirs.id).request_counts.processing == 2
    assert here.messages.batches.cancel(theirs.id).processing_status == "canceling"
    assert other.messages.batches.retrieve(theirs.id).processing_status == "ended"
    old_style = httpx2.get(emulator.url + "/v1/messages/batches",
                           headers={"x-api-key": "a-third-key", "anthropic-version": "2023-06-01"})
    assert [b["id"] for b in old_style.json()["data"]] == [theirs.id, mine.id]
    assert here.schema_violations == [] and other.schema_violations == []
