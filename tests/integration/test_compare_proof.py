"""A prompt comparison sent as a batch (run/compare_batch.py) against the emulator over the real SDK, on a
DuckDB state in memory. No dbt here: each test leaves the state a crash would leave between the committed
intent and the recorded batch id, then runs what the next comparison run of the model runs
(`collect_pending`), and reads the emulator's ledger for what was created.
"""

from __future__ import annotations

import hashlib
import json
import uuid

import duckdb
from dbt_harness import create_calls

from dbt_claude_batch.base.identifiers import qualified
from dbt_claude_batch.base.prompts import canonical_json, request_params
from dbt_claude_batch.base.settings import Settings
from dbt_claude_batch.run import compare_batch
from dbt_claude_batch.run.interruption import StopFlag
from dbt_claude_batch.run.spool_files import marker_id, marker_line
from dbt_claude_batch.state import compare_table, comparisons
from dbt_claude_batch.state.state import State

SETTINGS = {"key": "id", "prompt_column": "body", "model": "claude-haiku-4-5", "max_tokens": 16}
TARGET = qualified("memory", "main", "m__compare")
KEY_TYPES = {"id": "BIGINT"}


def _state() -> State:
    state = State(duckdb.connect().cursor(), "dbt_claude_batch", "main.m")
    state.ensure()
    return state


def _calls(settings: Settings) -> list[dict]:
    """Two sampled keys whose edited request is to be sent."""
    out = []
    for key, text in ((1, "one"), (2, "two")):
        params = request_params(settings, f"{text} (edited)", settings.model)
        out.append({"custom_id": f"k{key}", "key_json": json.dumps({"id": key}), "stratum": "s",
                    "request_changed": True, "sent": True, "old_request_hash": "held",
                    "new_request_hash": hashlib.sha256(canonical_json(params).encode()).hexdigest(),
                    "old_output": "an answer", "prompt": params["messages"][-1]["content"], "local_result": None,
                    "params": params, "result": None})
    return out


def _requests(calls: list[dict], marker: str | None) -> list[dict]:
    lines = [{"custom_id": c["custom_id"], "params": c["params"]} for c in calls]
    return lines + ([json.loads(marker_line(marker, SETTINGS["model"]))] if marker else [])


def _died_after_intent(state: State, client, calls: list[dict], created: bool) -> str | None:
    """A comparison run that committed its intent, created its batch (or not), and died before recording
    the batch id; return the batch id the API made."""
    submission_id = str(uuid.uuid4())
    marker = marker_id(submission_id)
    comparisons.record_intent(state, "c1", submission_id, marker, len(calls), 1000, 6, calls)
    return client.messages.batches.create(requests=_requests(calls, marker)).id if created else None


def _ended(client, *batch_ids: str) -> None:
    """Retrieve until each batch has ended (with processing delay 0, a fresh batch shows in_progress on its
    first access and ended on the second)."""
    for batch_id in batch_ids:
        statuses = [client.messages.batches.retrieve(batch_id).processing_status for _ in range(2)]
        assert statuses[-1] == "ended", (batch_id, statuses)


def _submission(state: State) -> tuple:
    return state.run(f"select status, batch_id, purpose from {state.table('submissions')}")[0]


def test_a_comparison_batch_created_before_a_crash_is_adopted_by_its_marker_and_collected_once(emulator):
    state, client, settings = _state(), emulator.client(), Settings.build(None, SETTINGS)
    calls = _calls(settings)
    ours = _died_after_intent(state, client, calls, created=True)
    # Another environment sharing the API key made a batch of the same size after the intent, without the marker.
    extra = {"custom_id": "theirs", "params": calls[0]["params"]}
    foreign = client.messages.batches.create(requests=[*_requests(calls, None), extra]).id
    assert state.unsettled_submissions() == []  # the model's own runs never settle a comparison's create
    _ended(client, ours, foreign)

    assert compare_batch.collect_pending(client, state, settings, TARGET, KEY_TYPES, "m") is True

    assert _submission(state) == ("submitted", ours, "compare")
    assert state.run(f"select batch_id, kind, n_submitted, harvested_at is not null from {state.table('batches')}") == [
        (ours, "compare", 2, True)]
    assert state.run(f"select batch_id from {state.table('foreign_batches')}") == [(foreign,)]
    rows = state.run(f"select id, via, result_type, request_changed, new_output is not null, compare_id "
                     f"from {TARGET} order by id")
    assert rows == [(1, "batch", "succeeded", True, True, "c1"), (2, "batch", "succeeded", True, True, "c1")]
    billed = state.run(f"select count(*), count(*) filter (where service_tier = 'batch') "
                       f"from {state.table('outcomes')} where batch_id = ?", [ours])
    assert billed == [(3, 3)]  # two rows and the marker, at batch prices; nothing of the foreign batch
    assert state.run(f"select count(*) from {state.table('answers')}") == [(0,)]
    assert state.run(f"select collected_at is not null from {state.table('comparisons')}") == [(True,)]
    assert create_calls(emulator) == 2

    # Collected once: the next comparison run finds nothing pending and writes nothing again.
    assert compare_batch.collect_pending(client, state, settings, TARGET, KEY_TYPES, "m") is False
    assert state.run(f"select count(*) from {TARGET}") == [(2,)]
    assert create_calls(emulator) == 2


def test_a_create_that_never_left_waits_for_proof_then_is_concluded_never_sent(emulator):
    state, client = _state(), emulator.client()
    patient = Settings.build(None, {**SETTINGS, "in_doubt_grace_seconds": 3600})
    _died_after_intent(state, client, _calls(patient), created=False)

    # Within the grace period nothing proves it either way: it waits, and nothing new is sent.
    assert compare_batch.collect_pending(client, state, patient, TARGET, KEY_TYPES, "m") is True
    assert _submission(state) == ("in_doubt", None, "compare")
    assert comparisons.pending(state.cursor, state.schema, state.model_id)["compare_id"] == "c1"

    # After it, no listed batch carries its marker: never sent, so no longer pending, and a new one may go.
    hasty = Settings.build(None, {**SETTINGS, "in_doubt_grace_seconds": 0})
    assert compare_batch.collect_pending(client, state, hasty, TARGET, KEY_TYPES, "m") is False
    assert _submission(state) == ("abandoned", None, "compare")
    assert comparisons.pending(state.cursor, state.schema, state.model_id) is None
    assert state.run(f"select collected_at from {state.table('comparisons')}") == [(None,)]
    assert state.run(f"select count(*) from {state.table('batches')}") == [(0,)]
    assert create_calls(emulator) == 0


def test_a_stop_before_the_create_sends_nothing_and_records_no_intent(emulator):
    state, client, settings = _state(), emulator.client(), Settings.build(None, SETTINGS)
    stop = StopFlag()
    stop.request()
    assert compare_batch.send(client, state, settings, _calls(settings), 6, TARGET, KEY_TYPES, "m", stop) is None
    assert state.run(f"select count(*) from {state.table('submissions')}") == [(0,)]
    assert create_calls(emulator) == 0

    # Unstopped, the same comparison is created once; in progress, it is pending, and collected once ended,
    # a request that expired in the batch reported as such.
    emulator.add_scenario({"name": "result_outcome", "custom_ids": ["k2"], "outcome": "expired"})
    batch_id = compare_batch.send(client, state, settings, _calls(settings), 6, TARGET, KEY_TYPES, "m", StopFlag())
    assert create_calls(emulator) == 1 and _submission(state) == ("submitted", batch_id, "compare")
    assert comparisons.pending(state.cursor, state.schema, state.model_id)["batch_id"] == batch_id
    assert compare_batch.collect_pending(client, state, settings, TARGET, KEY_TYPES, "m") is True
    assert state.run(f"select id, via, result_type, new_output <> '' from {TARGET} order by id") == [
        (1, "batch", "succeeded", True), (2, "batch", "expired", False)]
    doc = compare_table.summary(state.cursor, TARGET, compare_table.latest_compare_id(state.cursor, TARGET))
    assert (doc["via"], doc["answered"], doc["failed"]) == ("batch", 1, 1)
    assert doc["failed_rows"] == [{"key": '{"id": 2}', "result_type": "expired", "error_type": None,
                                   "error_message": None}]
    assert comparisons.pending(state.cursor, state.schema, state.model_id) is None
    assert create_calls(emulator) == 1
