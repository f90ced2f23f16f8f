"""Contract tests of the faults a batch create can meet: a spend limit, a connection dropped
before or after the batch exists. Driven through the real anthropic SDK."""

from __future__ import annotations

import json
import urllib.error

import anthropic
import pytest

from emulator_contract import checked_client, request, retrieve_ended

CREATE = "POST /v1/messages/batches"


def reqs(n, prefix="r"):
    return [request(f"{prefix}{i}", f"text {i}") for i in range(n)]


def test_spend_limit_is_429_without_retry_after_and_creates_nothing(api, emulator):
    emulator.add_scenario({"name": "spend_limit"})
    assert emulator.scenarios()[0] == {"name": "spend_limit", "route": "create", "times": None}
    with pytest.raises(anthropic.RateLimitError) as err:
        api.messages.batches.create(requests=reqs(3))
    response = err.value.response
    assert response.status_code == 429
    assert "retry-after" not in response.headers and "retry-after-ms" not in response.headers
    body = err.value.body
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    assert "workspace has reached its spend limit" in body["error"]["message"]
    assert body["request_id"] == response.headers["request-id"]
    ledger = emulator.ledger()
    assert ledger["calls"][CREATE] == {"429": 1}
    assert ledger["batches"] == [] and ledger["requests"] == []
    assert api.messages.batches.list().data == []
    assert emulator.scenarios() != []  # unlimited by default: waiting does not lift a spend limit


def test_spend_limit_survives_sdk_retries_and_times_spends_it(emulator):
    emulator.add_scenario({"name": "spend_limit", "times": 2})
    client = checked_client(emulator, max_retries=1)
    with pytest.raises(anthropic.RateLimitError):
        client.messages.batches.create(requests=reqs(2))
    assert emulator.ledger()["calls"][CREATE] == {"429": 2}  # the SDK retried once, in vain
    assert emulator.scenarios() == []
    batch = client.messages.batches.create(requests=reqs(2))
    assert [b["id"] for b in emulator.ledger()["batches"]] == [batch.id]
    assert client.schema_violations == []


def test_spend_limit_route_option(api, emulator):
    emulator.add_scenario({"name": "spend_limit", "route": "messages", "times": 1})
    batch = api.messages.batches.create(requests=reqs(1))  # create unaffected
    with pytest.raises(anthropic.RateLimitError) as err:
        api.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert "spend limit" in err.value.body["error"]["message"]
    assert "retry-after" not in err.value.response.headers
    calls = emulator.ledger()["calls"]
    assert calls[CREATE] == {"200": 1} and calls["POST /v1/messages"] == {"429": 1}
    assert emulator.ledger()["bill"]["sync_usd"] == 0
    assert [b.id for b in api.messages.batches.list()] == [batch.id]


def test_credit_balance_too_low_is_the_real_apis_400_and_creates_nothing(api, emulator):
    emulator.add_scenario({"name": "credit_balance_too_low", "times": 1})
    assert emulator.scenarios()[0] == {"name": "credit_balance_too_low", "route": "create", "times": 1}
    with pytest.raises(anthropic.BadRequestError) as err:
        api.messages.batches.create(requests=reqs(3))
    body = err.value.body
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"] == ("Your credit balance is too low to access the Anthropic API. Please go to "
                                        "Plans & Billing to upgrade or purchase credits.")
    ledger = emulator.ledger()
    assert ledger["calls"][CREATE] == {"400": 1}
    assert ledger["batches"] == [] and ledger["requests"] == []
    assert emulator.scenarios() == []  # spent
    batch = api.messages.batches.create(requests=reqs(1))
    assert [b["id"] for b in emulator.ledger()["batches"]] == [batch.id]


def test_drop_create_before_creates_nothing(emulator):
    emulator.add_scenario({"name": "drop_create", "when": "before"})
    assert emulator.scenarios()[0]["times"] == 1
    client = checked_client(emulator, max_retries=0)
    with pytest.raises(anthropic.APIConnectionError):
        client.messages.batches.create(requests=reqs(3))
    ledger = emulator.ledger()
    assert ledger["calls"][CREATE] == {"dropped": 1}
    assert ledger["dropped_creates"] == [{"when": "before", "batch_id": None}]
    assert ledger["batches"] == [] and ledger["requests"] == []
    assert client.messages.batches.list().data == []
    assert emulator.scenarios() == []  # spent after one
    client.messages.batches.create(requests=reqs(3))
    assert emulator.ledger()["calls"][CREATE] == {"dropped": 1, "200": 1}
    assert client.schema_violations == []


def test_drop_create_after_creates_a_batch_processed_and_billed_normally(emulator):
    emulator.add_scenario({"name": "drop_create", "when": "after", "times": 1})
    client = checked_client(emulator, max_retries=0)
    with pytest.raises(anthropic.APIConnectionError):
        client.messages.batches.create(requests=reqs(3))
    ledger = emulator.ledger()
    assert ledger["calls"][CREATE] == {"lost": 1}
    [dropped] = ledger["dropped_creates"]
    assert dropped["when"] == "after"
    assert [b["id"] for b in ledger["batches"]] == [dropped["batch_id"]]
    assert [r["custom_id"] for r in ledger["requests"]] == ["r0", "r1", "r2"]
    assert [b.id for b in client.messages.batches.list()] == [dropped["batch_id"]]
    ended = retrieve_ended(client, dropped["batch_id"])
    assert ended.request_counts.succeeded == 3
    assert emulator.ledger()["bill"]["by_batch"][dropped["batch_id"]] > 0
    assert client.schema_violations == []


@pytest.mark.parametrize("when,batches,statuses", [("before", 1, {"dropped": 1, "200": 1}),
                                                   ("after", 2, {"lost": 1, "200": 1})])
def test_sdk_retry_of_a_dropped_create(emulator, when, batches, statuses):
    """The SDK retries a connection error without an idempotency key: harmless before, a second
    batch (and a second bill) after."""
    emulator.add_scenario({"name": "drop_create", "when": when})
    client = checked_client(emulator, max_retries=1)
    answered = client.messages.batches.create(requests=reqs(2))
    ledger = emulator.ledger()
    assert ledger["calls"][CREATE] == statuses
    assert len(ledger["batches"]) == batches and ledger["batches"][-1]["id"] == answered.id
    assert [d["when"] for d in ledger["dropped_creates"]] == [when]
    assert client.schema_violations == []


def test_lose_create_response_is_drop_create_after(emulator):
    emulator.add_scenario({"name": "lose_create_response"})
    client = checked_client(emulator, max_retries=0)
    with pytest.raises(anthropic.APIConnectionError):
        client.messages.batches.create(requests=reqs(1))
    ledger = emulator.ledger()
    assert ledger["calls"][CREATE] == {"lost": 1}
    assert ledger["dropped_creates"] == [{"when": "after", "batch_id": ledger["batches"][0]["id"]}]
    assert emulator.scenarios() == []


@pytest.mark.parametrize("bad", [{"name": "drop_create"}, {"name": "drop_create", "when": "during"},
                                 {"name": "spend_limit", "route": "nowhere"}, {"name": "drop_create", "when": "after",
                                                                              "times": 0}])
def test_invalid_create_fault_scenarios_are_400(emulator, bad):
    with pytest.raises(urllib.error.HTTPError) as err:
        emulator.add_scenario(bad)
    assert err.value.code == 400
    assert json.loads(err.value.read())["error"]["type"] == "invalid_request_error"
