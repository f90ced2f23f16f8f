"""Contract tests of the Models API (GET /v1/models, GET /v1/models/{id}) through the real SDK."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import anthropic
import httpx2
import pytest

from emulator_contract import check_body, lines_by_id, raw_results, request, retrieve_ended

# Every model the emulator prices, most recently released first (unknown release date = epoch).
NEWEST_FIRST = ["claude-opus-4-6", "claude-opus-4-5", "claude-haiku-4-5", "claude-sonnet-4-5", "claude-opus-4-1",
                "claude-sonnet-4-6", "claude-opus-4-7"]


def test_list_returns_every_priced_model_newest_first(api):
    page = api.models.list()
    assert [m.id for m in page.data] == NEWEST_FIRST
    assert page.has_more is False and page.first_id == NEWEST_FIRST[0] and page.last_id == NEWEST_FIRST[-1]
    dates = [m.created_at for m in page.data]
    assert dates == sorted(dates, reverse=True)
    assert dates[-1] == datetime(1970, 1, 1, tzinfo=timezone.utc)


def test_model_info_fields(api):
    model = api.models.retrieve("claude-haiku-4-5")
    assert model.type == "model" and model.id == "claude-haiku-4-5"
    assert model.display_name == "Claude Haiku 4.5" and model.line == "haiku"
    assert model.created_at == datetime(2025, 10, 1, tzinfo=timezone.utc)
    assert model.lifecycle == "active" and model.deprecated_at is None and model.retires_at is None
    assert model.max_input_tokens == 200_000 and model.max_tokens is None
    caps = model.capabilities
    assert caps.batch.supported and caps.structured_outputs.supported
    assert not caps.thinking.supported and caps.thinking.types.disabled.supported
    raw = json.loads(api.models.with_raw_response.retrieve("claude-opus-4-1").http_response.content)
    assert set(raw) == {"type", "id", "display_name", "created_at", "lifecycle", "deprecated_at", "retires_at",
                        "line", "max_input_tokens", "max_tokens", "capabilities"}
    assert raw["display_name"] == "Claude Opus 4.1" and raw["created_at"] == "2025-08-05T00:00:00Z"


def test_pagination_cursors_and_auto_pagination(api):
    first = api.models.list(limit=3)
    assert [m.id for m in first.data] == NEWEST_FIRST[:3] and first.has_more is True
    assert (first.first_id, first.last_id) == (NEWEST_FIRST[0], NEWEST_FIRST[2])
    assert [m.id for m in api.models.list(limit=2)] == NEWEST_FIRST  # SDK auto-pagination
    after = api.models.list(limit=3, after_id=NEWEST_FIRST[2])
    assert [m.id for m in after.data] == NEWEST_FIRST[3:6] and after.has_more is True
    last = api.models.list(limit=3, after_id=NEWEST_FIRST[5])
    assert [m.id for m in last.data] == NEWEST_FIRST[6:] and last.has_more is False
    before = api.models.list(limit=2, before_id=NEWEST_FIRST[4])
    assert [m.id for m in before.data] == NEWEST_FIRST[2:4] and before.has_more is True
    assert api.models.list(limit=1000).has_more is False


@pytest.mark.parametrize("query", [{"limit": 0}, {"limit": 1001}, {"after_id": "claude-imaginary"},
                                   {"after_id": "claude-opus-4-6", "before_id": "claude-opus-4-1"}])
def test_bad_list_queries_are_400(api, query):
    with pytest.raises(anthropic.BadRequestError) as err:
        api.models.list(**query)
    assert err.value.body["error"]["type"] == "invalid_request_error"


def test_lifecycle_filter(api):
    assert [m.id for m in api.models.list(lifecycle=["active"]).data] == NEWEST_FIRST
    retired = api.models.list(lifecycle=["retired"])
    assert retired.data == [] and retired.has_more is False and retired.first_id is retired.last_id is None
    with pytest.raises(anthropic.BadRequestError):
        api.models.list(extra_query={"lifecycle[]": "sunset"})


def test_retrieve_dated_name_and_unknown_model(api):
    dated = api.models.retrieve("claude-sonnet-4-5-20250929")
    assert dated.id == "claude-sonnet-4-5-20250929" and dated.display_name == "Claude Sonnet 4.5"
    with pytest.raises(anthropic.NotFoundError) as err:
        api.models.retrieve("claude-imaginary-9")
    body = err.value.body
    assert body["type"] == "error" and body["error"]["type"] == "not_found_error"
    assert body["error"]["message"] == "model: claude-imaginary-9"


def test_listed_models_succeed_in_a_batch_and_unknown_ones_error(api):
    listed = [m.id for m in api.models.list()]
    reqs = [request(f"m{i}", "hello", model=model) for i, model in enumerate(listed)]
    reqs.append(request("unknown", "hello", model="claude-imaginary-9"))
    batch = api.messages.batches.create(requests=reqs)
    ended = retrieve_ended(api, batch.id)
    assert (ended.request_counts.succeeded, ended.request_counts.errored) == (len(listed), 1)
    results = lines_by_id(raw_results(api, batch.id))
    assert all(results[f"m{i}"]["type"] == "succeeded" for i in range(len(listed)))
    error = results["unknown"]["error"]["error"]
    assert error["type"] in ("invalid_request_error", "not_found_error")
    assert "claude-imaginary-9" in error["message"]


def test_models_routes_need_auth_are_in_the_ledger_and_take_faults(api, emulator):
    none = httpx2.get(emulator.url + "/v1/models", headers={"anthropic-version": "2023-06-01"})
    assert none.status_code == 401 and check_body("GET", "/v1/models", 401, none.content) == []
    emulator.add_scenario({"name": "http_error", "status": 500, "route": "retrieve_model", "times": 1})
    with pytest.raises(anthropic.InternalServerError):
        api.models.retrieve("claude-haiku-4-5")
    api.models.retrieve("claude-haiku-4-5")
    api.models.list()
    calls = emulator.ledger()["calls"]
    assert calls["GET /v1/models/{model_id}"] == {"500": 1, "200": 1}
    assert calls["GET /v1/models"] == {"401": 1, "200": 1}


def test_schema_checker_knows_model_info():
    good = {"type": "model", "id": "m", "display_name": "M", "created_at": "2025-01-01T00:00:00Z",
            "capabilities": None, "max_input_tokens": None, "max_tokens": None}
    assert check_body("GET", "/v1/models/m", 200, json.dumps(good).encode()) == []
    assert check_body("GET", "/v1/models/m", 200, json.dumps({**good, "type": "modle"}).encode())
    missing = {k: v for k, v in good.items() if k != "display_name"}
    assert check_body("GET", "/v1/models", 200, json.dumps(
        {"data": [missing], "has_more": False, "first_id": "m", "last_id": "m"}).encode())
