"""A batch's create with the next batch's intent recorded while it is in flight (submission.create_batch).

Pure: a real State on an in-memory DuckDB and a stand-in for the client's `post` (the integration tests
in test_no_spend_habits.py drive the same path through dbt, the SDK and the emulator)."""

from __future__ import annotations

import threading
from datetime import datetime, timezone

import duckdb
import pytest
from anthropic.types.messages import MessageBatch

from dbt_claude_batch.base.errors import StateError
from dbt_claude_batch.run.submission import create_batch
from dbt_claude_batch.state.state import State


def _batch(batch_id: str) -> MessageBatch:
    now = datetime.now(timezone.utc)
    return MessageBatch(id=batch_id, type="message_batch", processing_status="in_progress", created_at=now,
                        expires_at=now, request_counts={"processing": 2, "succeeded": 0, "errored": 0,
                                                        "canceled": 0, "expired": 0},
                        results_url=None, archived_at=None, cancel_initiated_at=None, ended_at=None)


class _Client:
    """Answers a create only once `go` is set (so a create can be held while the caller works)."""

    def __init__(self, go: threading.Event | None = None):
        self.go = go
        self.bodies: list[bytes] = []

    def with_options(self, **_):
        return self

    def post(self, path, cast_to, content, options):
        if self.go is not None and not self.go.wait(30):
            raise AssertionError("the create was not overlapped: `during` never ran while it was in flight")
        self.bodies.append(content)
        return _batch(f"msgbatch_{len(self.bodies)}")


@pytest.fixture
def state():
    con = duckdb.connect()
    st = State(con, "dbt_claude_batch", "main.m")
    st.ensure()
    yield st
    con.close()


def _statuses(state: State) -> list[tuple]:
    return state.run(f"select submission_id, status from {state.table('submissions')} order by submission_id")


def _intent(state: State, status: str = "creating"):
    def intent(submission_id: str, marker: str) -> bytes:
        state.insert_intent(submission_id, 1, 10, marker, status=status)
        return b'{"requests": []}'
    return intent


def test_a_prepared_intent_is_made_creating_before_its_create_and_during_overlaps_it(state):
    go = threading.Event()
    state.insert_intent("a-first", 1, 10, "m", status="prepared")
    seen = []

    def during():
        seen.append(_statuses(state))  # the create is in flight (held until `go`): its intent is `creating`
        go.set()

    batch_id = create_batch(_Client(go), state, _intent(state), 1, 3600, 300, ("a-first", b"{}"), during)
    assert batch_id == "msgbatch_1"
    assert seen == [[("a-first", "creating")]]
    assert _statuses(state) == [("a-first", "submitted")]


def test_an_error_while_the_create_is_in_flight_is_raised_after_the_batch_is_recorded(state):
    def during():
        raise RuntimeError("the next intent could not be written")

    with pytest.raises(RuntimeError, match="next intent"):
        create_batch(_Client(), state, _intent(state), 1, 3600, 300, None, during)
    (submission_id, status), = _statuses(state)
    assert status == "submitted"  # the batch made is on record: nothing to settle by proof, nothing lost
    assert state.run(f"select batch_id from {state.table('batches')}") == [("msgbatch_1",)]


def test_only_a_prepared_intent_can_begin_a_create_and_only_prepared_ones_are_rejected_unsent(state):
    for submission_id, status in (("p1", "prepared"), ("p2", "prepared"), ("c1", "creating")):
        state.insert_intent(submission_id, 1, 10, None, status=status)
    with pytest.raises(StateError, match="no longer prepared"):
        state.begin_create("c1")
    assert state.reject_unsent("not sent: test", "p1") == 1
    with pytest.raises(StateError, match="no longer prepared"):
        state.begin_create("p1")  # rejected: it can never be sent now
    assert state.reject_unsent("not sent: test") == 1  # p2, the model's last prepared one
    assert _statuses(state) == [("c1", "creating"), ("p1", "rejected"), ("p2", "rejected")]
