"""Contract tests of the fault scenarios, driven through the real anthropic SDK."""

from __future__ import annotations

import json
import urllib.error

import anthropic
import httpx2
import pytest

from emulator_contract import checked_client, lines_by_id, raw_results, request, retrieve_ended

CREATE = "POST /v1/messages/batches"
RETRIEVE = "GET /v1/messages/batches/{message_batch_id}"
RESULTS = "GET /v1/messages/batches/{message_batch_id}/results"


def reqs(n, prefix="r"):
    return [request(f"{prefix}{i}", f"text {i}") for i in range(n)]


def ended_batch(client, n=5, prefix="r"):
    batch = client.messages.batches.create(requests=reqs(n, prefix))
    return retrieve_ended(client, batch.id)


@pytest.mark.parametrize("status,exc", [(429, anthropic.RateLimitError), (500, anthropic.InternalServerError),
                                        (529, anthropic.APIStatusError)])
def test_sdk_retries_survive_transient_errors(emulator, status, exc):
    client = checked_client(emulator, max_retries=2)
    batch = client.messages.batches.create(requests=reqs(2))
    assert client.messages.batches.retrieve(batch.id).processing_status == "in_progress"  # first access
    emulator.add_scenario({"name": "http_error", "status": status, "route": "retrieve", "times": 2,
                           "retry_after": 0.01})
    assert client.messages.batches.retrieve(batch.id).processing_status == "ended"
    calls = emulator.ledger()["calls"]
    assert calls[RETRIEVE] == {str(status): 2, "200": 2}
    assert emulator.scenarios() == []  # spent
    emulator.add_scenario({"name": "http_error", "status": status, "route": "retrieve", "times": 3,
                           "retry_after": 0.01})
    with pytest.raises(exc) as err:
        client.messages.batches.retrieve(batch.id)
    assert err.value.status_code == status
    expected = {429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}[status]
    assert err.value.body["error"]["type"] == expected
    assert err.value.response.headers["retry-after"] == "0.01"
    assert client.schema_violations == []


def test_http_error_targets_route_and_any(emulator):
    client = checked_client(emulator, max_retries=0)
    emulator.set_scenarios([{"name": "http_error", "status": 500, "route": "list", "times": 1}])
    batch = client.messages.batches.create(requests=reqs(1))  # create unaffected
    with pytest.raises(anthropic.InternalServerError):
        client.messages.batches.list()
    assert [b.id for b in client.messages.batches.list()] == [batch.id]
    emulator.set_scenarios([{"name": "http_error", "status": 529, "route": "any", "times": 2}])
    with pytest.raises(anthropic.APIStatusError):
        client.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.APIStatusError):
        client.messages.count_tokens(model="claude-haiku-4-5", messages=[{"role": "user", "content": "x"}])
    assert client.messages.count_tokens(model="claude-haiku-4-5",
                                        messages=[{"role": "user", "content": "x"}]).input_tokens == 5
    calls = emulator.ledger()["calls"]
    assert calls["GET /v1/messages/batches"] == {"500": 1, "200": 1}
    assert calls["POST /v1/messages"] == {"529": 1}
    assert calls["POST /v1/messages/count_tokens"] == {"529": 1, "200": 1}
    assert client.schema_violations == []


def test_create_retried_after_429_counts_both_calls(emulator):
    emulator.add_scenario({"name": "http_error", "status": 429, "route": "create", "times": 1, "retry_after": 0.01})
    client = checked_client(emulator, max_retries=2)
    batch = client.messages.batches.create(requests=reqs(3))
    ledger = emulator.ledger()
    assert ledger["calls"][CREATE] == {"429": 1, "200": 1}
    assert [b["id"] for b in ledger["batches"]] == [batch.id]  # a 429 creates nothing


def test_lose_create_response(emulator):
    emulator.add_scenario({"name": "lose_create_response", "times": 1})
    client = checked_client(emulator, max_retries=0)
    with pytest.raises(anthropic.APIConnectionError):
        client.messages.batches.create(requests=reqs(3))
    listed = client.messages.batches.list().data
    assert len(listed) == 1 and listed[0].request_counts.processing + listed[0].request_counts.succeeded == 3
    ledger = emulator.ledger()
    assert ledger["calls"][CREATE] == {"lost": 1}
    assert len(ledger["requests"]) == 3
    again = client.messages.batches.create(requests=reqs(1, "s"))  # spent after one
    assert again.id != listed[0].id
    assert client.schema_violations == []


def test_result_errors_rates_are_deterministic_per_batch_and_reroll(api, emulator):
    emulator.add_scenario({"name": "result_errors", "rates": {"api_error": 0.3, "overloaded_error": 0.2,
                                                              "expired": 0.1}, "seed": 7})
    outcomes = []
    for _ in range(2):
        # 200 lines: every kind shows up, but for odds of about 1e-9 (with 60, no `expired` line came up
        # 0.9^60, once in 550 batches: a CI run met it)
        batch = ended_batch(api, n=200)
        results = lines_by_id(raw_results(api, batch.id))
        kinds = {cid: (r["error"]["error"]["type"] if r["type"] == "errored" else r["type"])
                 for cid, r in results.items()}
        counts = batch.request_counts
        assert counts.errored == sum(k in ("api_error", "overloaded_error") for k in kinds.values())
        assert counts.expired == sum(k == "expired" for k in kinds.values())
        assert counts.succeeded == sum(k == "succeeded" for k in kinds.values())
        assert 90 <= sum(k != "succeeded" for k in kinds.values()) <= 150  # 120 expected, sd 7
        assert set(kinds.values()) == {"succeeded", "api_error", "overloaded_error", "expired"}
        outcomes.append(kinds)
    assert outcomes[0] != outcomes[1]  # a resubmission in a new batch re-rolls


def test_result_outcome_targets_custom_ids_for_n_batches(api, emulator):
    emulator.add_scenario({"name": "result_outcome", "custom_ids": ["r1", "r3"], "outcome": "overloaded_error",
                           "times": 1})
    emulator.add_scenario({"name": "result_outcome", "custom_ids": ["r2"], "outcome": "invalid_request_error"})
    first = lines_by_id(raw_results(api, ended_batch(api).id))
    assert first["r1"]["error"]["error"]["type"] == "overloaded_error"
    assert first["r3"]["error"]["error"]["type"] == "overloaded_error"
    assert first["r2"]["error"]["error"]["type"] == "invalid_request_error"
    assert first["r0"]["type"] == first["r4"]["type"] == "succeeded"
    second = lines_by_id(raw_results(api, ended_batch(api).id))
    assert second["r1"]["type"] == second["r3"]["type"] == "succeeded"  # times=1 spent
    assert second["r2"]["type"] == "errored"  # unlimited
    emulator.set_scenarios([{"name": "result_outcome", "custom_ids": ["r0"], "outcome": "expired"}])
    third = lines_by_id(raw_results(api, ended_batch(api).id))
    assert third["r0"] == {"type": "expired"}


def test_only_succeeded_requests_are_billed(api, emulator):
    emulator.add_scenario({"name": "result_outcome", "custom_ids": ["r0", "r1"], "outcome": "api_error"})
    batch = ended_batch(api, n=4)
    results = lines_by_id(raw_results(api, batch.id))
    paid = sum((r["message"]["usage"]["input_tokens"] * 1 + r["message"]["usage"]["output_tokens"] * 5) / 1e6 * 0.5
               for r in results.values() if r["type"] == "succeeded")
    assert emulator.ledger()["bill"]["by_batch"][batch.id] == pytest.approx(paid)
    assert emulator.ledger()["bill"]["tokens"]["output_tokens"] == sum(
        r["message"]["usage"]["output_tokens"] for r in results.values() if r["type"] == "succeeded")


def test_cut_download_drops_connection_once(emulator):
    client = checked_client(emulator, max_retries=0)
    batch = ended_batch(client, n=20)
    full = raw_results(client, batch.id)
    emulator.add_scenario({"name": "cut_download", "after_bytes": 100})
    plain = emulator.client(max_retries=0)  # no schema-checking transport: see the stream as it comes
    received = b""
    with pytest.raises((httpx2.HTTPError, anthropic.APIConnectionError)):
        with plain.messages.batches.with_streaming_response.results(batch.id) as response:
            for chunk in response.iter_bytes():
                received += chunk
    assert received == full[:100]
    assert raw_results(client, batch.id) == full  # spent after one
    assert emulator.ledger()["calls"][RESULTS] == {"200": 2, "cut": 1}


def test_missing_results_count_and_custom_ids(api, emulator):
    emulator.add_scenario({"name": "missing_results", "count": 2, "times": 1})
    batch = ended_batch(api, n=6)
    assert batch.request_counts.succeeded == 6
    assert len(lines_by_id(raw_results(api, batch.id))) == 4
    emulator.add_scenario({"name": "missing_results", "custom_ids": ["r5"], "times": 1})
    batch = ended_batch(api, n=6)
    results = lines_by_id(raw_results(api, batch.id))
    assert set(results) == {f"r{i}" for i in range(5)} and batch.request_counts.succeeded == 6
    assert len(lines_by_id(raw_results(api, ended_batch(api, n=6).id))) == 6  # both spent


def test_archive_results(api, emulator):
    batch = ended_batch(api)
    assert len(lines_by_id(raw_results(api, batch.id))) == 5
    emulator.add_scenario({"name": "archive_results"})
    archived = api.messages.batches.retrieve(batch.id)
    assert archived.archived_at is not None and archived.processing_status == "ended"
    with pytest.raises(anthropic.NotFoundError):
        raw_results(api, batch.id)
    with pytest.raises(anthropic.NotFoundError):
        list(api.messages.batches.results(batch.id))


def test_never_end_then_cancel_cancels_everything(api, emulator):
    emulator.add_scenario({"name": "never_end"})
    batch = api.messages.batches.create(requests=reqs(3))
    emulator.advance_clock(3600)
    api.messages.batches.cancel(batch.id)
    ended = api.messages.batches.retrieve(batch.id)
    assert ended.request_counts.canceled == 3
    emulator.clear_scenarios()
    assert ended_batch(api).request_counts.succeeded == 5  # only batches created while armed


def test_scenario_control_api(emulator):
    assert emulator.scenarios() == []
    emulator.set_scenarios([{"name": "never_end"}, {"name": "http_error", "status": 500, "route": "list"}])
    assert [s["name"] for s in emulator.add_scenario({"name": "cut_download", "after_bytes": 1})] == \
        ["never_end", "http_error", "cut_download"]
    assert emulator.scenarios()[2]["times"] == 1
    assert emulator.clear_scenarios() == []
    for bad in ({"name": "no_such_thing"}, {"name": "http_error"}, {"name": "result_outcome", "outcome": "x"}):
        with pytest.raises(urllib.error.HTTPError) as err:
            emulator.add_scenario(bad)
        assert err.value.code == 400
        assert json.loads(err.value.read())["error"]["type"] == "invalid_request_error"


def test_scenarios_from_command_line_and_persisted_across_restart(emulator_factory):
    emu = emulator_factory("--scenario", json.dumps({"name": "http_error", "status": 529, "route": "list",
                                                     "times": 3}))
    client = checked_client(emu, max_retries=0)
    with pytest.raises(anthropic.APIStatusError):
        client.messages.batches.list()
    assert emu.scenarios()[0]["times"] == 2
    emu.extra_args = []  # restart without --scenario: the armed list comes back from the state dir
    emu.restart()
    client = checked_client(emu, max_retries=0)
    assert emu.scenarios()[0]["times"] == 2
    with pytest.raises(anthropic.APIStatusError):
        client.messages.batches.list()
    assert emu.ledger()["calls"]["GET /v1/messages/batches"] == {"529": 2}
