"""Contract tests of the fake model: answers, stop reasons, structured output, tokens, caching."""

from __future__ import annotations

import hashlib
import json
import math

import anthropic
import pytest

from emulator_contract import lines_by_id, raw_results, request

MODEL = "claude-haiku-4-5"


def user(text):
    return [{"role": "user", "content": text}]


def tok(text: str) -> int:
    return math.ceil(len(text.encode("utf-8")) / 4)


def run_batch(api, reqs):
    batch = api.messages.batches.create(requests=reqs)
    api.messages.batches.retrieve(batch.id)
    return batch.id, lines_by_id(raw_results(api, batch.id))


def test_digest_answer_depends_on_last_user_message(api):
    msg = api.messages.create(model=MODEL, max_tokens=50, messages=[
        {"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}]}])
    assert msg.content[0].text == "digest:" + hashlib.sha256(b"part one\npart two").hexdigest()[:16]
    assert msg.stop_reason == "end_turn" and msg.usage.service_tier == "standard"
    assert msg.usage.input_tokens == tok("first") + tok("ok") + tok("part one") + tok("part two") + 3 * 4
    assert msg.usage.output_tokens == tok(msg.content[0].text)


@pytest.mark.parametrize("text,system,expected", [
    ("Labels: billing, bug, other\nMy invoice is wrong: billing issue", None, "billing"),
    ("Labels: billing, bug, other\nThe app crashes, a BUG for sure", None, "bug"),
    ("Labels: billing, bug, other\nbillingual debugging", None, "other"),  # no whole-word match -> last
    ("Ticket: refund my Billing please", "Classify.\nlabels: bug, billing, other", "billing"),
    ("nothing relevant", "LABELS: spam, ham", "ham"),
])
def test_labels_rule(api, text, system, expected):
    kw = {"system": system} if system else {}
    msg = api.messages.create(model=MODEL, max_tokens=50, messages=user(text), **kw)
    assert msg.content[0].text == expected


SYNONYM_LABELS = ("Labels: billing (invoice, charge, refund), bug (error, crash, broken), "
                  "feature_request (feature request, suggestion, would love), account (login, password, access), other")


@pytest.mark.parametrize("text,expected", [
    ("Please REFUND the duplicate charge", "billing"),              # synonym, any case -> label name only
    ("The export is broken again", "bug"),
    ("We would love a dark mode", "feature_request"),              # multi-word synonym
    ("Feature Request: default project", "feature_request"),       # multi-word synonym, any case
    ("I forgot my password", "account"),
    ("Our billing contact changed", "billing"),                     # the label name itself still matches
    ("A crash after I reset my password", "bug"),                  # first label in list order wins
    ("The app crashes, refunds pending, no accessibility", "other"),  # no whole-word match -> last label
    ("We would lovely like a feature", "other"),                   # phrase must match whole; "feature" alone is not a synonym
    ("Thanks for the great support", "other"),
])
def test_labels_with_synonyms(api, text, expected):
    msg = api.messages.create(model=MODEL, max_tokens=50, messages=user(f"{SYNONYM_LABELS}\n{text}"))
    assert msg.content[0].text == expected


def test_labels_with_synonyms_in_system_prompt_and_batch(api):
    system = "Classify the ticket.\nlabels: spam (unsubscribe, winner), ham"
    msg = api.messages.create(model=MODEL, max_tokens=50, system=system, messages=user("You are a WINNER!"))
    assert msg.content[0].text == "spam"
    texts = {"a": "invoice attached", "b": "it is broken", "c": "hello there"}
    _, results = run_batch(api, [request(cid, f"Labels: billing (invoice), bug (broken), other\n{t}")
                                 for cid, t in texts.items()])
    answers = {cid: r["message"]["content"][0]["text"] for cid, r in results.items()}
    assert answers == {"a": "billing", "b": "bug", "c": "other"}


def test_labels_with_synonyms_in_json_schema_enum(api):
    schema = {"type": "object", "properties": {"category": {"type": "string", "enum": ["billing", "bug", "other"]}},
              "required": ["category"], "additionalProperties": False}
    msg = api.messages.create(model=MODEL, max_tokens=50,
                              messages=user("Labels: billing (refund), bug (crash), other\nRefund me"),
                              output_config={"format": {"type": "json_schema", "schema": schema}})
    assert json.loads(msg.content[0].text) == {"category": "billing"}


def test_same_answers_in_batch_and_sync_for_each_row(api):
    texts = {f"row{i}": f"Labels: red, green, blue\nitem {i} is {['red', 'green', 'blue', 'pink'][i % 4]}"
             for i in range(8)}
    _, results = run_batch(api, [request(cid, t) for cid, t in texts.items()])
    for cid, text in texts.items():
        sync = api.messages.create(model=MODEL, max_tokens=64, messages=user(text)).content[0].text
        assert results[cid]["message"]["content"][0]["text"] == sync
    assert results["row3"]["message"]["content"][0]["text"] == "blue"  # pink: no label -> last


def test_max_tokens_truncates(api):
    msg = api.messages.create(model=MODEL, max_tokens=5, messages=user("[[emulator:words=50]]"))
    assert msg.stop_reason == "max_tokens"
    assert msg.usage.output_tokens == 5 and len(msg.content[0].text.encode()) == 20
    full = api.messages.create(model=MODEL, max_tokens=1000, messages=user("[[emulator:words=50]]"))
    assert full.stop_reason == "end_turn" and len(full.content[0].text.split()) == 50
    assert full.content[0].text.startswith(msg.content[0].text)


def test_stop_sequences_cut_before_first_occurrence(api):
    full = api.messages.create(model=MODEL, max_tokens=1000, messages=user("[[emulator:words=30]] x")).content[0].text
    words = full.split()
    stop = words[3]
    cut = api.messages.create(model=MODEL, max_tokens=1000, messages=user("[[emulator:words=30]] x"),
                              stop_sequences=["never-there", stop])
    assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == stop
    assert cut.content[0].text == full[: full.find(stop)]


def test_json_schema_output_is_valid_and_carries_label(api):
    schema = {"type": "object", "properties": {
        "category": {"type": "string", "enum": ["billing", "bug", "other"]},
        "summary": {"type": "string"}, "confidence": {"type": "number"}, "urgent": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}}},
        "required": ["category", "summary", "confidence", "urgent", "tags"], "additionalProperties": False}
    msg = api.messages.create(model=MODEL, max_tokens=200, messages=user("Labels: billing, bug, other\nA bug!"),
                              output_config={"format": {"type": "json_schema", "schema": schema}})
    value = json.loads(msg.content[0].text)
    import jsonschema
    jsonschema.validate(value, schema)
    assert value["category"] == "bug" and value["summary"] == "bug"
    bad = api.messages.create(model=MODEL, max_tokens=200, messages=user("[[emulator:bad_json]] hi"),
                              output_config={"format": {"type": "json_schema", "schema": schema}})
    with pytest.raises(ValueError):
        json.loads(bad.content[0].text)


def test_refusal(api):
    msg = api.messages.create(model=MODEL, max_tokens=100, messages=user("please [[emulator:refuse]]"))
    assert msg.stop_reason == "refusal"
    assert msg.stop_details.type == "refusal" and msg.stop_details.explanation
    assert msg.content[0].text


def test_sync_invalid_requests_are_http_errors(api, emulator):
    with pytest.raises(anthropic.NotFoundError) as err:
        api.messages.create(model="claude-nonexistent-9", max_tokens=10, messages=user("hi"))
    assert err.value.body["error"]["message"] == "model: claude-nonexistent-9"
    with pytest.raises(anthropic.BadRequestError) as err:
        api.messages.create(model=MODEL, max_tokens=10, messages=user("hi"), extra_body={"temperature": 0.5})
    assert "temperature" in err.value.body["error"]["message"]
    long_text = "x" * (4 * 200_001)
    with pytest.raises(anthropic.BadRequestError) as err:
        api.messages.create(model=MODEL, max_tokens=10, messages=user(long_text))
    assert err.value.body["error"]["message"] == f"prompt is too long: {200_001 + 4} tokens > 200000 maximum"
    statuses = [m["status"] for m in emulator.ledger()["messages"]]
    assert statuses == [404, 400, 400]
    assert emulator.ledger()["bill"]["sync_usd"] == 0


def test_old_api_version_accepts_sampling_params(emulator):
    old = emulator.client(max_retries=0, default_headers={"anthropic-version": "2023-06-01"})
    msg = old.messages.create(model="claude-haiku-4-5-20251001", max_tokens=10, messages=user("hi"),
                              extra_body={"temperature": 0.2, "top_p": 0.9, "top_k": 5})
    assert msg.model == "claude-haiku-4-5-20251001"


def test_invalid_params_come_back_as_errored_results(api, emulator):
    base = {"model": MODEL, "max_tokens": 10, "messages": user("hi")}
    reqs = [
        {"custom_id": "ok", "params": base},
        {"custom_id": "unknown_model", "params": {**base, "model": "claude-imaginary"}},
        {"custom_id": "no_max_tokens", "params": {k: v for k, v in base.items() if k != "max_tokens"}},
        {"custom_id": "temperature", "params": {**base, "temperature": 0}},
        {"custom_id": "empty_messages", "params": {**base, "messages": []}},
        {"custom_id": "stream", "params": {**base, "stream": True}},
        {"custom_id": "too_long", "params": {**base, "messages": user("y" * 800_100)}},
    ]
    batch_id, results = run_batch(api, reqs)
    assert results["ok"]["type"] == "succeeded"
    for cid in [r["custom_id"] for r in reqs[1:]]:
        assert results[cid]["type"] == "errored", cid
        assert results[cid]["error"]["type"] == "error" and results[cid]["error"]["request_id"] is None
        assert results[cid]["error"]["error"]["type"] == "invalid_request_error", cid
    assert results["too_long"]["error"]["error"]["message"] == "prompt is too long: 200029 tokens > 200000 maximum"
    assert "claude-imaginary" in results["unknown_model"]["error"]["error"]["message"]
    assert "max_tokens" in results["no_max_tokens"]["error"]["error"]["message"]
    counts = api.messages.batches.retrieve(batch_id).request_counts
    assert (counts.succeeded, counts.errored) == (1, 6)


def test_count_tokens(api):
    system = "You are terse."
    count = api.messages.count_tokens(model=MODEL, system=system, messages=user("hello there"))
    assert count.input_tokens == tok(system) + tok("hello there") + 4
    with pytest.raises(anthropic.NotFoundError):
        api.messages.count_tokens(model="nope-model", messages=user("hi"))


def cached_params(row: str, ttl: str = "1h") -> dict:
    instructions = "Classify support tickets. " * 40
    return {"model": MODEL, "max_tokens": 20,
            "system": [{"type": "text", "text": instructions, "cache_control": {"type": "ephemeral", "ttl": ttl}}],
            "messages": user(row)}


def test_cache_write_then_read_in_batch_and_sync(api, emulator):
    prefix = tok("Classify support tickets. " * 40)
    batch_id, results = run_batch(api, [{"custom_id": f"c{i}", "params": cached_params(f"row {i}")}
                                        for i in range(3)])
    first = results["c0"]["message"]["usage"]
    assert first["cache_creation_input_tokens"] == prefix and first["cache_read_input_tokens"] == 0
    assert first["cache_creation"] == {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": prefix}
    assert first["input_tokens"] == tok("row 0") + 4
    for cid in ("c1", "c2"):
        usage = results[cid]["message"]["usage"]
        assert usage["cache_read_input_tokens"] == prefix and usage["cache_creation_input_tokens"] == 0
    sync = api.messages.create(**cached_params("row 9"))
    assert sync.usage.cache_read_input_tokens == prefix  # batches and sync share the cache
    emulator.advance_clock(3601)
    expired = api.messages.create(**cached_params("row 10"))
    assert expired.usage.cache_read_input_tokens == 0 and expired.usage.cache_creation_input_tokens == prefix
    other_model = api.messages.create(**{**cached_params("row 11"), "model": "claude-sonnet-4-6"})
    assert other_model.usage.cache_creation_input_tokens == prefix


def test_bill_matches_prices(api, emulator):
    batch_id, results = run_batch(api, [{"custom_id": "a", "params": cached_params("row a", ttl="5m")},
                                        {"custom_id": "b", "params": cached_params("row b", ttl="5m")}])
    usd = 0.0
    for cid in ("a", "b"):
        u = results[cid]["message"]["usage"]
        usd += (u["input_tokens"] * 1 + u["output_tokens"] * 5 + u["cache_creation_input_tokens"] * 1.25
                + u["cache_read_input_tokens"] * 0.1) / 1e6 * 0.5
    bill = emulator.ledger()["bill"]
    assert bill["by_batch"][batch_id] == pytest.approx(usd)
    assert bill["batch_usd"] == pytest.approx(usd) and bill["sync_usd"] == 0
    msg = api.messages.create(model="claude-opus-4-6", max_tokens=20, messages=user("price me"))
    sync_usd = (msg.usage.input_tokens * 5 + msg.usage.output_tokens * 25) / 1e6
    bill = emulator.ledger()["bill"]
    assert bill["sync_usd"] == pytest.approx(sync_usd)
    assert bill["total_usd"] == pytest.approx(usd + sync_usd)
    assert bill["by_model"]["claude-opus-4-6"] == pytest.approx(sync_usd)
