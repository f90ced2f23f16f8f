"""Bounded state and erasure, end to end: compaction buys nothing again and keeps the bill, harvested
batches are deleted from the API and never retrieved again, rows gone from the source leave the results
table, and a forgotten key leaves no trace in any table or file, its sample preview and its prompt
comparison included, even one in flight when it is forgotten (6 dbt invocations, 2 more by `compare`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb

from dbt_harness import TEMPLATE, created_batches, emulator_answer, expected_answer, items, row_requests

CLI = str(Path(sys.executable).parent / "dbt-claude-batch")
STATE = "dbt_claude_batch"
SETTINGS = {"wait_seconds": 60, "poll_interval_seconds": 0.05, "keep_history_days": 0,
            "delete_batches_after_harvest": True, "on_source_delete": "delete", "store_prompts": True}
SECRET_2, SECRET_3 = "SECRET-TWO-xq7 private text", "SECRET-THREE-zk9 private text"
COMPARED = "Item {{ id }}; {{ body }}"  # an edited template, compared on a sample of held answers


def _cli(project, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args, "--project-dir", str(project.root)], cwd=project.root.parent,
                          env=project.env(), capture_output=True, text=True, timeout=60)


def _every_value(project) -> str:
    """Every value of every table and view in every schema of the DuckDB file, as one text."""
    relations = project.query("select table_schema, table_name from information_schema.tables "
                              "where table_catalog = current_database()")
    return "\n".join(str(project.query(f'select * from "{s}"."{t}"')) for s, t in relations)


def _files_holding(roots, needles: list[bytes]) -> list[str]:
    found = []
    for root in roots:
        for path in Path(root).rglob("*"):
            if path.is_file() and not path.is_symlink() and any(n in path.read_bytes() for n in needles):
                found.append(str(path))
    return found


def _compare(project) -> dict:
    proc = _cli(project, "compare", "--model", "items_batch", "--sample", "4", "--via", "batch", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def _bill(project) -> float:
    return project.query(f"select sum(billed_usd) from {STATE}.all_spend")[0][0]


def test_compaction_batch_deletion_source_deletes_and_forget(project, emulator, tmp_path):
    workdir = tmp_path / "work"
    project.env_overrides["DBT_CLAUDE_BATCH_WORKDIR"] = str(workdir)
    rows = items(5)
    rows[1]["body"], rows[2]["body"] = SECRET_2, SECRET_3
    project.load_table("items", rows)
    project.configure(replace=False, **SETTINGS)
    project.run()
    assert {b["id"]: b["deleted"] for b in emulator.ledger(requests=False)["batches"]} == {
        b["id"]: True for b in created_batches(emulator)}

    # Row 1 changes (bought again: its first attempt is compacted away), row 5 leaves the source.
    rows[0]["body"] = "a new body for row 1"
    project.load_table("items", rows[:4])
    out = project.run().stdout

    assert "removed 1 result row(s) whose key is no longer in the source" in out, out
    results = project.results()
    assert sorted(results) == [1, 2, 3, 4], (results.get(5), results.get(4))
    assert results[1]["output_text"] == expected_answer(1, rows[0]["body"]) and results[1]["attempt"] == 2
    assert project.query(f"select attempt from {STATE}.requests where key_custom_id = '1'") == [(2,)]
    assert project.query(f"select count(*) from {STATE}.daily_spend")[0][0] >= 1
    assert project.query(f"select count(*) from {STATE}.models where compacted_at is not null") == [(1,)]
    # store_prompts: the requests as sent, one per key (row 1's first request went with its compacted attempt).
    prompts = dict(project.query(f"select key_custom_id, params::varchar from {STATE}.prompts"))
    assert sorted(prompts) == ["1", "2", "3", "4", "5"] and rows[0]["body"] in prompts["1"]
    assert SECRET_2 in prompts["2"]
    billed = emulator.ledger(requests=False)["bill"]["total_usd"]
    assert abs(_bill(project) - billed) < 1e-9  # the compacted attempt and its batch's marker are still billed
    ledger = emulator.ledger(requests=False)
    assert all(b["deleted"] for b in ledger["batches"]) and len(ledger["batches"]) == 2
    assert project.query(f"select count(*) from {STATE}.batches where kind = 'batch' and api_deleted_at is null") == [
        (0,)]

    # Next to the model, a sample preview and a prompt comparison sent as a batch also hold keys 2 and 3's
    # text; the comparison is still in flight when they are forgotten.
    billed = emulator.ledger(requests=False)["bill"]["total_usd"]
    project.run(vars={"claude_batch_sample": 4})
    # The run's cost counts the sample's calls, though keep_history_days 0 compacts them away as it ends.
    cost = project.query(f"select cost_usd from {STATE}.runs order by started_at desc limit 1")[0][0]
    assert cost > 0 and abs(cost - (emulator.ledger(requests=False)["bill"]["total_usd"] - billed)) < 1e-9
    assert [r[0] for r in project.query("select id from main.items_batch__sample order by id")] == [1, 2, 3, 4]
    project.write("prompts/item.j2", COMPARED)
    emulator.configure(processing_delay=3600)
    sent = _compare(project)
    assert (sent["status"], sent["requests"]) == ("in_flight", 4), sent
    project.write("prompts/item.j2", TEMPLATE)

    # Runs an error failed name a key in their note: keys 2 and 3, and keys 98 and 99, which failed before
    # any request of theirs was recorded (over the size limit); key 21's note stays.
    con = duckdb.connect(str(project.db_path))
    try:
        for key in (2, 3, 98, 99, 21):
            con.execute(f"insert into {STATE}.runs (run_id, model_id, started_at, outcome, note) values "
                        "(?, 'main.items_batch', now(), 'error', ?)",
                        [f"n{key}", f'The request for key {{"id":{key}}} is 300000000 bytes, over the limit'])
    finally:
        con.close()

    # Key 2 erased from dbt, key 3 with the CLI after leaving the source (the CLI rewrites the file).
    project.dbt("run-operation", "dbt_claude_batch.forget", "--args", "{model: items_batch, key: {id: 2}}")
    project.dbt("run-operation", "dbt_claude_batch.forget", "--args", "{model: items_batch, key: {id: 99}}")
    assert sorted(project.results()) == [1, 3, 4]
    kept = [r for r in rows[:4] if r["id"] != 3] + items(1, start=6)
    project.load_table("items", kept)
    forgot = _cli(project, "forget", "--model", "main.items_batch", "--key", "id=3", "--json")
    assert forgot.returncode == 0, forgot.stderr
    assert json.loads(forgot.stdout)["removed"]["answers"] == 1
    again = _cli(project, "forget", "--model", "main.items_batch", "--key", "id=3")
    assert again.returncode == 1 and "was erased by forget already (at 20" in again.stderr, again.stderr
    assert _cli(project, "forget", "--model", "main.items_batch", "--key", "id=98").returncode == 0
    notes = dict(project.query(f"select run_id, note from {STATE}.runs where run_id like 'n%'"))
    assert notes == {**{f"n{k}": "(this note named a key since erased by forget)" for k in (2, 3, 98, 99)},
                     "n21": notes["n21"]} and '"id":21}' in notes["n21"]
    assert [r[0] for r in project.query("select id from main.items_batch__sample order by id")] == [1, 4]

    # Collected once ended: the erased keys' answers are dropped, their requests still billed (below).
    emulator.advance_clock(3601)
    emulator.configure(processing_delay=0)
    collected = _compare(project)
    assert collected["answered"] == 2 and collected["compare_id"] == sent["compare_id"], collected
    assert [r[0] for r in project.query("select distinct id from main.items_batch__compare order by id")] == [1, 4]

    before = len(row_requests(emulator))
    project.run()

    # Only the new row is bought: nothing compacted is bought again, the erased key 2 (unchanged in the
    # source) is not sent again, and no deleted batch is retrieved (a retrieve of one is a 404).
    sent = row_requests(emulator)[before:]
    assert [r["custom_id"] for r in sent] == ["6"]
    assert sorted(project.results()) == [1, 4, 6]
    calls = emulator.ledger(requests=False)["calls"]
    assert "404" not in calls.get("GET /v1/messages/batches/{message_batch_id}", {})
    assert abs(_bill(project) - emulator.ledger(requests=False)["bill"]["total_usd"]) < 1e-9
    assert project.query(f"select count(*), count(distinct key_hash) from {STATE}.erased") == [(2, 2)]

    # No trace: the erased text and answers in no table (the source still holds key 2's row: the
    # user's own data) and in no file, the database file's free blocks included.
    answers = [expected_answer(2, SECRET_2), expected_answer(3, SECRET_3), emulator_answer(f"Item 2; {SECRET_2}"),
               emulator_answer(f"Item 3; {SECRET_3}")]
    everything = _every_value(project)
    assert SECRET_3 not in everything and not any(a in everything for a in answers)
    assert everything.count(SECRET_2) == 2  # raw.items and the stg_items view over it
    needles = [a.encode() for a in answers] + [SECRET_3.encode()]
    assert _files_holding([project.root, workdir], needles) == []

    doc = json.loads(_cli(project, "status", "--json").stdout)
    assert doc["disk_bytes"] == project.db_path.stat().st_size
    assert "disk used:" in _cli(project, "status").stdout

    # store_prompts switched off: the prompts stored so far go, on the next run though it has nothing to do.
    assert project.query(f"select count(*) from {STATE}.prompts")[0][0] > 0
    project.configure(replace=False, store_prompts=False)
    before = len(row_requests(emulator))
    project.run()
    assert len(row_requests(emulator)) == before
    assert project.query(f"select count(*) from {STATE}.prompts") == [(0,)]


def test_a_forgotten_key_is_not_sent_while_its_row_is_unchanged_and_answers_its_own_row_when_it_changes(
        project, emulator):
    """A key forgotten while its row stays in the source: a template edit does not send it again (its row
    is unchanged; the keys view says `erased` and no_key_dropped holds); an edited row is sent, and so
    is the row put back as it was, which gets its own answer, not the edited row's (7 dbt invocations)."""
    rows = items(3)
    project.load_table("items", rows)
    project.configure(replace=False, wait_seconds=60, poll_interval_seconds=0.05)
    project.run()
    # A key written otherwise than the source writes it (id is a BIGINT: 02 is 2) is the same key; a key
    # nothing holds is an error (a misspelt key must not pass for erased) unless that is expected.
    assert _cli(project, "forget", "--model", "main.items_batch", "--key", "id=02").returncode == 0
    for args, ok in (("{model: items_batch, key: {id: 42}}", False),
                     ("{model: items_batch, key: {id: 42}, missing_ok: true}", True)):
        out = project.dbt("run-operation", "dbt_claude_batch.forget", "--args", args, expect_ok=ok).stdout
        assert ok or 'Nothing is held for key {"id": 42} of main.items_batch' in out, out
    failed = _cli(project, "forget", "--model", "main.items_batch", "--key", "id=42")
    assert failed.returncode == 1 and "Nothing is held for key" in failed.stderr, failed.stderr

    project.write("prompts/item.j2", COMPARED)
    project.write(f"models/{project.model}.yml", "version: 2\nmodels:\n  - name: items_batch\n"
                  "    data_tests: [dbt_claude_batch.no_key_dropped]\n")
    before = len(row_requests(emulator))
    project.dbt("build", "-s", f"+{project.model}")
    assert sorted(r["custom_id"] for r in row_requests(emulator)[before:]) == ["1", "3"]
    assert sorted(project.results()) == [1, 3]
    assert project.query("select id, status from main.items_batch__keys order by id") == [
        (1, "result"), (2, "erased"), (3, "result")]

    def own_answer(body: str) -> str:
        return emulator_answer(f"Item 2; {body}")

    for body in ("an edited row 2", rows[1]["body"]):  # edited, then put back as it was
        project.load_table("items", [rows[0], {"id": 2, "body": body}, rows[2]])
        before = len(row_requests(emulator))
        project.run()
        assert [r["custom_id"] for r in row_requests(emulator)[before:]] == ["2"], body
        assert project.results()[2]["output_text"] == own_answer(body)
