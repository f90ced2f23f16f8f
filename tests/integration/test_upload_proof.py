"""Files API uploads (run/uploads.py) against the emulator over the real SDK, on a DuckDB state in memory.

No dbt here: these drive the upload and release steps directly, each with the state a crash or another
run would leave, and read the emulator's ledger for what was uploaded and deleted.
"""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import duckdb
import pytest
from media_builders import pdf_bytes

from dbt_claude_batch.base.errors import ApiError
from dbt_claude_batch.run import uploads
from dbt_claude_batch.run.planning import PENDING, RENDERED
from dbt_claude_batch.state.state import State, utcnow

PDF = pdf_bytes(3, "held once")
SHA = hashlib.sha256(PDF).hexdigest()


def _state() -> State:
    state = State(duckdb.connect(), "dbt_claude_batch", "main.docs")
    state.ensure()
    return state


def _rendered(state: State, tmp_path, include: bool = True) -> uploads.Stash:
    """What the spool pass leaves for one line naming PDF: the verdict, the ref, the stashed bytes."""
    state.run(f"create or replace temp table {RENDERED} as select 1::bigint as ordinal, '1' as custom_id, "
              "?::boolean as include, null::varchar as dedup_of, 'req-1' as request_hash", [include])
    state.run(f"create or replace temp table {PENDING} as select 1::bigint as __cb_ordinal, 1 as __cb_attempt")
    stash = uploads.Stash(str(tmp_path))
    stash.add(1, [(SHA, "application/pdf", PDF)])
    stash.load(state)
    return stash


def _died_after_upload(state: State, client, copies: int, data: bytes = PDF) -> None:
    """A run that recorded its intent, uploaded (`copies` times), and died before recording the id."""
    state.run(f"insert into {state.table('uploaded_files')} (upload_id, sha256, filename, model_id, n_bytes, "
              "media_type, status, intent_at) values ('u0', ?, ?, 'main.docs', ?, 'application/pdf', 'uploading', ?)",
              [SHA, uploads.placeholder(SHA), len(PDF), utcnow()])
    for _ in range(copies):
        client.files.upload(file=(uploads.placeholder(SHA), data, "application/pdf"))


def _live(emulator) -> list[dict]:
    return [f for f in emulator.ledger(requests=False)["files"] if f["deleted_at"] is None]


def test_a_content_is_uploaded_once_and_held_files_are_reused(emulator, tmp_path):
    state, client = _state(), emulator.client()
    first = uploads.upload_needed(client, state, _rendered(state, tmp_path))
    again = uploads.upload_needed(client, state, _rendered(state, tmp_path / "b"))
    assert first == again and list(first) == [SHA]
    assert [f["id"] for f in emulator.ledger(requests=False)["files"]] == [first[SHA]]
    line = b'{"custom_id":"1","params":{"content":[{"type":"document","source":{"type":"file","file_id":"' + \
        uploads.placeholder(SHA).encode() + b'"}}]}}\n'
    assert uploads.swap(line, first) == line.replace(uploads.placeholder(SHA).encode(), first[SHA].encode())
    with pytest.raises(ApiError, match="^A request names content"):
        uploads.swap(line, {})


@pytest.mark.parametrize("copies", [1, 2])
def test_an_upload_a_dead_run_never_recorded_is_adopted_by_proof_and_copies_deleted(emulator, tmp_path, copies):
    state, client = _state(), emulator.client()
    _died_after_upload(state, client, copies)
    ids = uploads.upload_needed(client, state, _rendered(state, tmp_path))
    live = _live(emulator)
    assert [f["id"] for f in live] == [ids[SHA]] and len(emulator.ledger(requests=False)["files"]) == copies
    assert state.run(f"select status, file_id from {state.table('uploaded_files')}") == [("held", ids[SHA])]


def test_a_file_of_the_same_name_but_another_size_is_not_adopted(emulator, tmp_path):
    state, client = _state(), emulator.client()
    _died_after_upload(state, client, 1, data=PDF + b"\n% not ours")
    ids = uploads.upload_needed(client, state, _rendered(state, tmp_path))
    uploaded = emulator.ledger(requests=False)["files"]
    assert len(uploaded) == 2 and ids[SHA] == uploaded[1]["id"] and uploaded[1]["sha256"] == SHA
    assert sorted(state.run(f"select status from {state.table('uploaded_files')}")) == [("abandoned",), ("held",)]


def test_a_held_file_is_deleted_only_once_no_request_needs_it(emulator, tmp_path):
    state, client = _state(), emulator.client()
    api = SimpleNamespace(get=lambda: client)
    ids = uploads.upload_needed(client, state, _rendered(state, tmp_path))
    # The line is still waiting in this run (say the queue was full): kept.
    assert uploads.release_unneeded(api, state, 4096, False) == 0 and len(_live(emulator)) == 1
    # A request with that hash in flight: kept.
    state.run(f"insert into {state.table('submissions')} (submission_id, model_id, status, batch_id, n_requests, "
              "n_bytes, intent_at) values ('s1', 'main.docs', 'submitted', 'b1', 1, 1, ?)", [utcnow()])
    state.run(f"insert into {state.table('batches')} (batch_id, model_id, submission_id, n_submitted, kind) "
              "values ('b1', 'main.docs', 's1', 1, 'batch')")
    state.run(f"insert into {state.table('requests')} (submission_id, model_id, custom_id, key_json, input_hash, "
              "request_hash, attempt) values ('s1', 'main.docs', '1', '{\"id\":1}', 'i', 'req-1', 1)")
    assert uploads.release_unneeded(api, state, 4096, False) == 0 and len(_live(emulator)) == 1
    # Harvested in this same run (the line, sent, is no longer waiting): deleted through the API and recorded.
    state.run(f"update {state.table('batches')} set harvested_at = ?", [utcnow()])
    assert uploads.release_unneeded(api, state, 4096, False) == 1 and _live(emulator) == []
    assert state.run(f"select status, file_id, deleted_at is not null from {state.table('uploaded_files')}") == [
        ("deleted", ids[SHA], True)]


def test_an_orphan_upload_nothing_needs_is_adopted_then_deleted(emulator):
    state, client = _state(), emulator.client()
    _died_after_upload(state, client, 1)
    assert uploads.release_unneeded(SimpleNamespace(get=lambda: client), state, 4096, False) == 1
    assert _live(emulator) == []


def test_a_file_another_row_records_is_never_adopted_nor_deleted_as_a_copy(emulator, tmp_path):
    state, client = _state(), emulator.client()
    theirs = client.files.upload(file=(uploads.placeholder(SHA), PDF, "application/pdf")).id
    state.run(f"insert into {state.table('uploaded_files')} (upload_id, sha256, filename, model_id, n_bytes, "
              "media_type, status, file_id, intent_at, uploaded_at) values ('t', ?, ?, 'main.other', ?, "
              "'application/pdf', 'deleted', ?, ?, ?)", [SHA, uploads.placeholder(SHA), len(PDF), theirs, utcnow(),
                                                         utcnow()])
    _died_after_upload(state, client, 1)
    ids = uploads.upload_needed(client, state, _rendered(state, tmp_path))
    assert ids[SHA] != theirs and {f["id"] for f in _live(emulator)} == {theirs, ids[SHA]}


def test_a_held_file_deleted_outside_the_state_is_uploaded_again(emulator, tmp_path):
    state, client = _state(), emulator.client()
    first = uploads.upload_needed(client, state, _rendered(state, tmp_path))[SHA]
    client.files.delete(first)
    second = uploads.upload_needed(client, state, _rendered(state, tmp_path / "b"))[SHA]
    assert second != first and [f["id"] for f in _live(emulator)] == [second]
    assert sorted(state.run(f"select status from {state.table('uploaded_files')}")) == [("deleted",), ("held",)]
