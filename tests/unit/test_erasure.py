"""erasure.py: the forget macro runs the same statements as the CLI; keys parse; a key is erased from
every state table and the tables next to the model, recorded without content, and refused while in flight."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import duckdb
import pytest

from dbt_claude_batch.base.errors import StateError
from dbt_claude_batch.state import erasure
from dbt_claude_batch.state.state import LIVE_STATUSES, State

MACRO = Path(__file__).resolve().parents[2] / "macros" / "forget.sql"


def test_the_macro_erases_with_the_same_statements_as_the_cli():
    block = re.search(r"{%- set erasure = (\[.*?\]) -%}", MACRO.read_text(), re.S).group(1)
    assert ast.literal_eval(block) == [tuple(e) for e in erasure.ERASURE]
    scrub = re.search(r"{%- set scrub = ({.*?}) -%}", MACRO.read_text(), re.S).group(1)
    assert ast.literal_eval(scrub) == erasure.SCRUB
    references = re.search(r"{%- set references = (\[.*?\]) -%}", MACRO.read_text(), re.S).group(1)
    assert ast.literal_eval(references) == erasure.REFERENCES
    assert erasure.erased_id_sql("t.x") == "'erased-' || left(sha256(t.x), 32)"  # the macro's spelling
    # The same requests count as in flight, and the same tables next to the model are erased from.
    assert f"s.status in {LIVE_STATUSES}" in MACRO.read_text()
    # The erasure is recorded with the same row digest planning compares.
    assert f"arg_max({erasure.ROW_DIGEST_OF_REQUEST}, attempt)" in MACRO.read_text()
    for suffix in ("__compare", erasure.SAMPLE_SUFFIX, "__dbt_tmp"):
        assert f"""'{{{{ model | replace("'", "''") }}}}{suffix}'""" in MACRO.read_text(), suffix


def test_keys_parse_from_column_value_pairs_and_json():
    assert erasure.parse_key(["ticket_id=42"]) == {"ticket_id": "42"}
    assert erasure.parse_key(['{"tenant": "acme", "n": 1}']) == {"tenant": "acme", "n": 1}
    assert erasure.parse_key(["tenant=acme", "n=1"]) == {"tenant": "acme", "n": "1"}
    with pytest.raises(StateError, match="names no column"):
        erasure.parse_key(["42"])


def _held(con, state, key, text, harvested=True):
    sub, batch = f"s-{key}", f"b-{key}"
    state.run(f"insert into {state.table('submissions')} (submission_id, model_id, status, batch_id, n_requests, n_bytes, "
              "intent_at) values (?, ?, 'submitted', ?, 1, 1, now())", [sub, state.model_id, batch])
    state.run(f"insert into {state.table('batches')} (batch_id, model_id, submission_id, n_submitted, harvested_at) "
              "values (?, ?, ?, 1, ?)", [batch, state.model_id, sub, "2026-01-01" if harvested else None])
    state.run(f"insert into {state.table('requests')} (submission_id, model_id, custom_id, key_custom_id, key_json, "
              "input_hash, request_hash, attempt, components) values (?, ?, ?, ?, ?, 'in', 'rq', 1, ?)",
              [sub, state.model_id, key, key, f'{{"id": {key[1:]}}}',
               f'{{"template": "t", "text": "text-of-{key}", "attachments": null}}'])
    if harvested:
        state.run(f"insert into {state.table('outcomes')} (batch_id, custom_id, model_id, result_type, output_text, "
                  "harvested_at) values (?, ?, ?, 'succeeded', ?, '2026-01-01')", [batch, key, state.model_id, text])
        state.run(f"insert into {state.table('answers')} (model_id, custom_id, attempt, key_json, output_text) "
                  "values (?, ?, 1, ?, ?)", [state.model_id, key, f'{{"id": {key[1:]}}}', text])


def test_forget_leaves_no_row_of_the_key_and_records_it_without_content():
    con = duckdb.connect()
    state = State(con, "dbt_claude_batch", "main.items")
    state.ensure()
    state.record_model(["id"], {"id": "BIGINT"})
    con.execute("create table main.items as select 1 as id, 'k1' as custom_id, 'SECRET one' as output_text "
                "union all select 2, 'k2', 'kept two'")
    # Next to the model: a comparison's rows and a sample preview's, by the key columns.
    con.execute("create table main.items__compare as select 1 as id, 'SECRET one' as old_value "
                "union all select 2, 'kept two'")
    con.execute("create table main.items__sample as select 1 as id, 'SECRET one prompt' as prompt "
                "union all select 2, 'kept two prompt'")
    _held(con, state, "k1", "SECRET one")
    _held(con, state, "k2", "kept two")
    _held(con, state, "k3", None, harvested=False)

    # An answer imported from another environment's export for k1's exact request (answers import).
    for request_hash in ("rq", "other"):
        state.run(f"insert into {state.table('imported_answers')} (request_hash, model, answer, source, imported_at) "
                  "values (?, 'prod.items', '{\"output_text\": \"SECRET one\"}', 'prod.parquet', now())",
                  [request_hash])

    # k1 and k2 were sampled by a prompt comparison sent as a batch: their held answers wait there too.
    for key, text in (("k1", "SECRET one"), ("k2", "kept two")):
        state.run(f"insert into {state.table('compare_requests')} (compare_id, model_id, custom_id, key_json, "
                  "request_changed, sent, old_output) values ('c1', ?, ?, '{}', true, true, ?)",
                  [state.model_id, key, text])

    # Runs whose note (the first line of the error that failed them) names a key, as the product's
    # messages do: with the key_json state holds. Another model's note naming the same JSON stays.
    k1, k2 = (con.execute(f"select key_json from {state.table('requests')} where custom_id = ?", [k]).fetchone()[0]
              for k in ("k1", "k2"))
    for run_id, model_id, note in (("r1", "main.items", f"The request for key {k1} is 300000000 bytes, over"),
                                   ("r2", "main.items", f"The prompt rendered empty (first: key {k2}): give"),
                                   ("r3", "main.other", f"The request for key {k1} is 300000000 bytes, over"),
                                   ("r4", "main.items", None),
                                   # as DuckDB packs a key (state's key_json above is spelled otherwise)
                                   ("r5", "main.items", 'The prompt for key {"id":1} is empty'),
                                   ("r6", "main.items", 'The prompt for key {"id":11} is empty')):
        state.run(f"insert into {state.table('runs')} (run_id, model_id, started_at, outcome, note) "
                  "values (?, ?, now(), 'error', ?)", [run_id, model_id, note])

    removed = erasure.forget(con, "dbt_claude_batch", "main.items", {"id": 1})

    assert removed == {"outcomes": 1, "answers": 1, "input_aliases": 0, "prompts": 0, "compare_requests": 1,
                       "imported_answers": 1, "runs": 2, "requests": 1, "results": 3, "results.shared_from": 0,
                       "answers.shared_from": 0, "outcomes.shared_from": 0, "requests.dedup_of": 0}
    assert con.execute(f"select run_id, note from {state.table('runs')} order by 1").fetchall() == [
        ("r1", erasure.ERASED_NOTE), ("r2", f"The prompt rendered empty (first: key {k2}): give"),
        ("r3", f"The request for key {k1} is 300000000 bytes, over"), ("r4", None), ("r5", erasure.ERASED_NOTE),
        ("r6", 'The prompt for key {"id":11} is empty')]
    for table in ("items", "items__compare", "items__sample"):
        assert con.execute(f"select id from main.{table}").fetchall() == [(2,)], table
    assert con.execute(f"select custom_id, old_output from {state.table('compare_requests')}").fetchall() == [
        ("k2", "kept two")]
    assert con.execute(f"select request_hash from {state.table('imported_answers')}").fetchall() == [("other",)]
    for table in ("requests", "answers"):
        assert [r[0] for r in con.execute(f"select custom_id from {state.table(table)} order by 1").fetchall()] == (
            ["k2"] if table != "requests" else ["k2", "k3"])
    # The outcome stays for the bill, without its text or its custom_id.
    assert con.execute(f"select custom_id like 'erased-%', output_text from {state.table('outcomes')} "
                       "order by 1").fetchall() == [(False, "kept two"), (True, None)]
    erased = con.execute(f"select * exclude (erased_at) from {state.table('erased')}").fetchall()
    # No content: a hash of the key, its input hash, its row digest (the row's text digest, no attachments) and
    # its last request's hash.
    assert erased == [("main.items", con.execute("select sha256('k1')").fetchone()[0], "in", "text-of-k1|", "rq")]
    with pytest.raises(StateError, match="has a request in flight"):
        erasure.forget(con, "dbt_claude_batch", "main.items", {"id": 3})
    with pytest.raises(StateError, match=r"is not the key of main.items \(id\), nor one it had before"):
        erasure.forget(con, "dbt_claude_batch", "main.items", {"ticket": 3})


def test_forget_takes_an_earlier_key_and_finds_only_what_is_held_under_it():
    """After a key change from id to (id, tenant), `id` is an earlier key: it finds the history the rebuild
    retired under it, never the rows of the current key that share its column."""
    con = duckdb.connect()
    state = State(con, "dbt_claude_batch", "main.items")
    state.ensure()
    state.record_model(["id", "tenant"], {"id": "BIGINT", "tenant": "VARCHAR"})
    _held(con, state, "k1", "SECRET old one")  # key_json {"id": 1}, retired at the key change:
    for table in ("requests", "outcomes"):
        state.run(f"update {state.table(table)} set custom_id = 'retired~20261207T000000~k1' where custom_id = 'k1'")
    state.run(f"update {state.table('requests')} set key_custom_id = custom_id")
    state.run(f"delete from {state.table('answers')}")
    _held(con, state, "k2", "kept new one")  # the current key's (1, 'a')
    state.run(f"update {state.table('requests')} set key_json = '{{\"id\": 1, \"tenant\": \"a\"}}' "
              "where custom_id = 'k2'")
    con.execute("create table main.items as select 1 as id, 'a' as tenant, 'kept new one' as output_text")

    removed = erasure.forget(con, "dbt_claude_batch", "main.items", {"id": "1"})

    assert removed["requests"] == 1 and removed["outcomes"] == 1 and removed["results"] == 0
    assert [r[0] for r in con.execute(f"select custom_id from {state.table('requests')}").fetchall()] == ["k2"]
    assert con.execute(f"select count(*) from {state.table('outcomes')} where output_text like 'SECRET%'"
                       ).fetchone()[0] == 0
    assert con.execute("select count(*) from main.items").fetchone()[0] == 1
    with pytest.raises(StateError, match=r"is not the key of main.items \(id, tenant\), nor one it had before"):
        erasure.forget(con, "dbt_claude_batch", "main.items", {"ticket": "1"})


def test_rewriting_the_file_keeps_the_data_and_drops_deleted_bytes(tmp_path):
    path = str(tmp_path / "ware.house.duckdb")
    con = duckdb.connect(path)
    con.execute("create schema s; create sequence s.q; create table s.t (i int primary key, v varchar)")
    con.execute("insert into s.t values (1, 'kept'), (2, 'GONE-TEXT-91')")
    con.execute("select nextval('s.q')").fetchall()
    con.execute("delete from s.t where i = 2")
    con.close()
    assert b"GONE-TEXT-91" in Path(path).read_bytes()  # what a delete leaves behind
    erasure.rewrite_file(path)
    assert b"GONE-TEXT-91" not in Path(path).read_bytes()
    con = duckdb.connect(path)
    assert con.execute("select * from s.t").fetchall() == [(1, "kept")]
    assert con.execute("select nextval('s.q')").fetchone() == (2,)


def test_a_note_names_a_key_as_its_key_json_does_and_no_other_key():
    con = duckdb.connect()
    tenant = 'ac"me'
    note = con.execute("select 'The request for key ' || to_json(struct_pack(tenant := ?, n := 1)) || ' is over'",
                       [tenant]).fetchone()[0]

    def names(key: dict) -> bool:
        return con.execute(f"select {erasure.note_names_key_sql(key)} from (select ? as note) t", [note]).fetchone()[0]

    assert names({"tenant": tenant, "n": "1"}) and names({"tenant": tenant, "n": 1})
    for other in ({"tenant": tenant, "n": "11"}, {"tenant": "acme", "n": "1"}, {"tenant": tenant, "n": ""}):
        assert not names(other), other


def test_a_key_is_matched_as_its_type_writes_it_and_nothing_held_is_refused_unless_missing_ok():
    con = duckdb.connect()
    state = State(con, "dbt_claude_batch", "main.items")
    state.ensure()
    state.record_model(["id"], {"id": "BIGINT"})
    con.execute("create table main.items as select 7 as id, 'k7' as custom_id, 'SECRET seven' as output_text")
    _held(con, state, "k7", "SECRET seven")
    # Written as the source might not write it: a leading zero, as a BIGINT it is 7.
    removed = erasure.forget(con, "dbt_claude_batch", "main.items", {"id": "07"})
    assert removed["requests"] == 1 and removed["answers"] == 1 and removed["results"] == 1
    with pytest.raises(StateError) as info:  # gone now: nothing held for it
        erasure.forget(con, "dbt_claude_batch", "main.items", {"id": "7"})
    assert str(info.value).splitlines()[0].startswith(
        'Nothing is held for key {"id": "7"} of main.items: no request, answer, results row or run note has it.')
    assert "--missing-ok" in str(info.value) and "nothing was erased" in str(info.value)
    assert erasure.forget(con, "dbt_claude_batch", "main.items", {"id": "7"}, missing_ok=True)["requests"] == 0
    with pytest.raises(StateError, match=r"--key id='abc' is not a BIGINT, the type of key column id"):
        erasure.forget(con, "dbt_claude_batch", "main.items", {"id": "abc"})
