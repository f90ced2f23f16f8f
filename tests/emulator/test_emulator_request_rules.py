"""Contract tests: requests the real API refuses (empty content, unknown params) and deleting a live batch.

In a batch, params are validated when the batch is processed: a refused request comes back as an
`errored` result with `invalid_request_error` and is not billed. The synchronous /v1/messages refuses
the same request with HTTP 400 and the error body.
"""

from __future__ import annotations

import anthropic
import pytest

from emulator_contract import lines_by_id, raw_results, retrieve_ended

MODEL = "claude-haiku-4-5"
EMPTY = "messages: text content blocks must be non-empty"
BLANK = "messages: text content blocks must contain non-whitespace text"


def params(content, **extra) -> dict:
    return {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": content}], **extra}


def run_batch(api, reqs) -> tuple[str, dict]:
    batch = api.messages.batches.create(requests=reqs)
    retrieve_ended(api, batch.id)
    return batch.id, lines_by_id(raw_results(api, batch.id))


def refusal(result: dict) -> str:
    assert result["type"] == "errored"
    assert result["error"]["error"]["type"] == "invalid_request_error"
    return result["error"]["error"]["message"]


CASES = {
    "empty_string": (params(""), EMPTY),
    "empty_block": (params([{"type": "text", "text": ""}]), EMPTY),
    "empty_blocks": (params([{"type": "text", "text": ""}, {"type": "text", "text": ""}]), EMPTY),
    "blank_string": (params("  \n\t"), BLANK),
    "blank_block": (params([{"type": "text", "text": " "}]), BLANK),
    "empty_after_history": ({**params("hi"), "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"},
        {"role": "user", "content": ""}]}, EMPTY),
    "unknown_param": (params("hi", foo_bar=1), "foo_bar: Extra inputs are not permitted"),
}


def test_refused_requests_come_back_errored_and_are_not_billed(api, emulator):
    reqs = [{"custom_id": "ok", "params": params("hi")}]
    reqs += [{"custom_id": cid, "params": body} for cid, (body, _) in CASES.items()]
    batch_id, results = run_batch(api, reqs)
    assert results["ok"]["type"] == "succeeded"
    for cid, (_, message) in CASES.items():
        assert refusal(results[cid]) == message, cid
    counts = api.messages.batches.retrieve(batch_id).request_counts
    assert (counts.succeeded, counts.errored) == (1, len(CASES))
    only_ok = emulator.ledger()["bill"]
    assert only_ok["tokens"]["output_tokens"] > 0
    _, again = run_batch(api, reqs[:1])
    assert emulator.ledger()["bill"]["total_usd"] == pytest.approx(2 * only_ok["total_usd"])


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_refused_synchronous_request_is_an_http_400(api, emulator, case):
    body, message = CASES[case]
    with pytest.raises(anthropic.BadRequestError) as err:
        api.messages.create(**{k: v for k, v in body.items() if k != "foo_bar"},
                            extra_body={"foo_bar": 1} if "foo_bar" in body else None)
    assert err.value.status_code == 400
    assert err.value.body["type"] == "error"
    assert err.value.body["error"] == {"type": "invalid_request_error", "message": message}
    assert emulator.ledger()["bill"]["total_usd"] == 0


def test_every_messages_param_of_the_sdk_is_accepted(api):
    msg = api.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}],
                              metadata={"user_id": "u1"}, stop_sequences=["zz"], system="be brief",
                              service_tier="auto", extra_body={"thinking": {"type": "disabled"}})
    assert msg.stop_reason == "end_turn"


def test_a_canceling_batch_cannot_be_deleted_until_it_has_ended(api, emulator):
    emulator.configure(processing_delay=60)
    batch = api.messages.batches.create(requests=[{"custom_id": "a", "params": params("hi")}])
    api.messages.batches.retrieve(batch.id)
    assert api.messages.batches.cancel(batch.id).processing_status == "canceling"
    with pytest.raises(anthropic.BadRequestError) as err:
        api.messages.batches.delete(batch.id)
    assert err.value.status_code == 400
    error = err.value.body["error"]
    assert error["type"] == "invalid_request_error"
    assert "canceling" in error["message"] and "ended" in error["message"]
    assert retrieve_ended(api, batch.id).processing_status == "ended"
    assert api.messages.batches.delete(batch.id).type == "message_batch_deleted"


def test_an_in_progress_batch_cannot_be_deleted(api, emulator):
    emulator.configure(processing_delay=60)
    batch = api.messages.batches.create(requests=[{"custom_id": "a", "params": params("hi")}])
    for _ in range(2):  # the first access and a later one, both before the end
        with pytest.raises(anthropic.BadRequestError) as err:
            api.messages.batches.delete(batch.id)
        assert err.value.body["error"]["type"] == "invalid_request_error"
        assert "in_progress" in err.value.body["error"]["message"]
        assert "cancel" in err.value.body["error"]["message"]
    assert api.messages.batches.retrieve(batch.id).processing_status == "in_progress"
