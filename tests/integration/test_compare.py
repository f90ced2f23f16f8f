"""Compare a prompt change on a sample: `dbt-claude-batch compare` (the `claude_batch_compare` var), through
real dbt runs against the emulator. Six dbt invocations: the first run buys answers, the comparison
after a template edit (sync), the same comparison via batch (sent; asked again while in flight; collected
once ended), and the next normal run, which re-buys as it always did and leaves the comparison batch alone."""

from __future__ import annotations

import json
import subprocess
import sys

import duckdb
from dbt_harness import create_calls, row_requests

from dbt_claude_batch.state.inspect import spend

FAST = {"wait_seconds": 60, "poll_interval_seconds": 0.05}
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["label", "note"],
          "properties": {"label": {"type": "string", "enum": ["billing", "bug", "other"]}, "note": {"type": "string"}}}
OLD = "Labels: billing, bug, other\n{{ body }}"
NEW = "Labels: billing (charged), bug (crash), other\n{{ body }}"  # synonyms move rows 1 and 4
ROWS = {1: "I was charged twice", 2: "A billing question on my invoice", 3: "The app has a bug",
        4: "It will crash on start", 5: "Hello there", 6: "A bug in billing"}
# The emulator answers the first label (or synonym) found in the text, else the last label.
OLD_LABEL = {1: "other", 2: "billing", 3: "bug", 4: "other", 5: "other", 6: "billing"}
NEW_LABEL = {1: "billing", 2: "billing", 3: "bug", 4: "bug", 5: "other", 6: "billing"}


def test_compare_reports_agreement_on_a_stratified_sample_and_changes_nothing_held(project, emulator):
    project.write("prompts/item.j2", OLD)
    project.configure(replace=False, output_schema=SCHEMA, **FAST)
    project.load_table("items", [{"id": i, "body": b} for i, b in ROWS.items()])
    project.run()
    results_before = project.results()
    assert {k: json.loads(r["output_json"])["label"] for k, r in results_before.items()} == OLD_LABEL
    answers_before = project.query("select * from dbt_claude_batch.answers order by custom_id")
    creates = create_calls(emulator)

    project.write("prompts/item.j2", NEW)
    proc = subprocess.run(
        [sys.executable, "-m", "dbt_claude_batch.observe.cli", "compare", "--model", project.model, "--sample", "5",
         "--json"], cwd=project.root, env=project.env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert f"comparison {doc['compare_id']} (sync" in proc.stderr  # the run logs the same summary (dbt output: stderr)

    rows = project.query(
        "select id, field, old_value, new_value, exact_match, normalised_match, request_changed, result_type, "
        "stratum, cost_usd, compare_id from main.items_batch__compare order by id, field_no")
    sampled = sorted({r[0] for r in rows})
    # Round-robin over the held answers' kinds: 2 billing, 1 bug, 2 of the 3 other, whatever md5 order picked.
    assert sorted(OLD_LABEL[k] for k in sampled) == ["billing", "billing", "bug", "other", "other"]
    assert [(r[0], r[1]) for r in rows] == [(k, f) for k in sampled for f in ("label", "note")]
    for key, field, old, new, exact, normalised, changed, result_type, stratum, _, compare_id in rows:
        assert (old, new) == (OLD_LABEL[key], NEW_LABEL[key])
        assert exact == normalised == (OLD_LABEL[key] == NEW_LABEL[key])
        assert (changed, result_type, compare_id) == (True, "succeeded", doc["compare_id"])
    agree = sum(OLD_LABEL[k] == NEW_LABEL[k] for k in sampled)
    assert doc["fields"] == [
        {"field": f, "compared": 5, "exact": agree, "normalised": agree, "exact_rate": agree / 5,
         "normalised_rate": agree / 5} for f in ("label", "note")]
    assert {(r["key"], r["field"], r["old"], r["new"]) for r in doc["changed_rows"]} == {
        (json.dumps({"id": k}, separators=(",", ":")), f, OLD_LABEL[k], NEW_LABEL[k])
        for k in sampled if OLD_LABEL[k] != NEW_LABEL[k] for f in ("label", "note")}
    assert (doc["held_keys"], doc["sampled_keys"], doc["changed_keys"], doc["answered"]) == (6, 5, 5, 5)

    # Five synchronous calls, no batch; their cost is the emulator's bill, counted as spend by the state.
    assert create_calls(emulator) == creates
    assert len(emulator.ledger()["messages"]) == 5
    billed = emulator.ledger(requests=False)["bill"]["sync_usd"]
    assert abs(doc["sample_cost_usd"] - billed) < 1e-9 and abs(sum(r[9] or 0 for r in rows) - billed) < 1e-9
    # Every held key's request changed in the sample: the full re-run is 6 keys at the mean cost, at batch prices.
    assert abs(doc["estimated_full_rerun_usd"] - billed / 5 * 0.5 * 6) < 1e-9
    spend = project.query("select count(*), sum(n_submitted) from dbt_claude_batch.batches b join "
                          "dbt_claude_batch.submissions s using (submission_id) where b.kind = 'sample' "
                          "and s.note like 'prompt comparison%'")
    assert spend == [(1, 5)]

    # Nothing held changed: the results table and the answers are as they were.
    assert project.results() == results_before
    assert project.query("select * from dbt_claude_batch.answers order by custom_id") == answers_before

    # The same comparison via batch: sent as one small batch, said to be in flight, never sent twice.
    billed_before = _billed(project)
    emulator.configure(processing_delay=3600)
    sent = _compare(project, "--via", "batch")
    assert sent["status"] == "in_flight" and sent["requests"] == 5 and sent["sampled_keys"] == 5, sent
    assert sent["sent_now"] is True
    compare_batch = emulator.ledger()["batches"][-1]["id"]
    assert sent["batch_id"] == compare_batch and create_calls(emulator) == creates + 1
    assert sorted(r["custom_id"] for r in row_requests(emulator) if r["batch_id"] == compare_batch) == sorted(
        r[0] for r in project.query("select distinct custom_id from main.items_batch__compare"))
    assert project.query("select kind, n_submitted from dbt_claude_batch.batches where batch_id = ?",
                         [compare_batch]) == [("compare", 5)]
    again = _compare(project, "--via", "batch")
    assert (again["status"], again["batch_id"], create_calls(emulator)) == ("in_flight", compare_batch, creates + 1)
    assert again["sent_now"] is False

    emulator.advance_clock(3601)
    emulator.configure(processing_delay=0)
    # Edited again before it is collected: what is collected compares the edit it was sent for, and says so.
    project.write("prompts/item.j2", NEW + "\nAnswer in one word.")
    collected, log = _compare(project, "--via", "batch", log=True)
    assert ("was sent for an earlier edit of the prompt or settings: the requests of all 5 of its sampled keys "
            "differ from what the model renders now") in log, log
    project.write("prompts/item.j2", NEW)
    assert create_calls(emulator) == creates + 1 and collected["via"] == "batch"
    assert (collected["held_keys"], collected["sampled_keys"], collected["changed_keys"], collected["answered"]) == (
        6, 5, 5, 5)
    assert collected["fields"] == doc["fields"]  # the emulator answers the same request the same way
    batch_rows = project.query(
        "select id, field, old_value, new_value, via, result_type, cost_usd from main.items_batch__compare "
        "where compare_id = ? order by id, field_no", [collected["compare_id"]])
    assert [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in batch_rows] == [
        (k, f, OLD_LABEL[k], NEW_LABEL[k], "batch", "succeeded") for k in sampled for f in ("label", "note")]
    # Billed at batch prices: the sample is half the synchronous one, and the state's bill grew by what the
    # emulator billed for the batch (its marker request included).
    batch_billed = emulator.ledger(requests=False)["bill"]["by_batch"][compare_batch]
    assert abs(collected["sample_cost_usd"] - billed / 2) < 1e-9
    assert abs(sum(r[6] or 0 for r in batch_rows) - billed / 2) < 1e-9
    assert abs(_billed(project) - billed_before - batch_billed) < 1e-9
    assert abs(collected["estimated_full_rerun_usd"] - doc["estimated_full_rerun_usd"]) < 1e-9
    assert project.results() == results_before
    assert project.query("select * from dbt_claude_batch.answers order by custom_id") == answers_before
    compare_outcomes = project.query("select count(*) from dbt_claude_batch.outcomes where batch_id = ?",
                                     [compare_batch])
    assert compare_outcomes == [(6,)]  # five rows and the marker, for the bill

    # The next normal run re-buys every row of the edited template as a batch, as before; it neither
    # harvests the comparison's batch nor takes its answers as held ones. With delete_batches_after_harvest
    # the collected comparison batch is deleted from the API with the model's own.
    project.configure(replace=False, delete_batches_after_harvest=True)
    project.run()
    deleted = {b["id"]: b["deleted"] for b in emulator.ledger(requests=False)["batches"]}
    assert deleted[compare_batch] and all(deleted.values()), deleted
    assert project.query("select count(*) from dbt_claude_batch.batches where api_deleted_at is null "
                         "and kind in ('batch', 'compare')") == [(0,)]
    assert create_calls(emulator) == creates + 2
    assert emulator.ledger()["batches"][-1]["id"] != compare_batch
    assert project.query("select count(*) from dbt_claude_batch.outcomes where batch_id = ?",
                         [compare_batch]) == compare_outcomes
    assert project.query("select count(*) from dbt_claude_batch.answers where batch_id = ?", [compare_batch]) == [(0,)]
    assert len([r for r in row_requests(emulator) if r["batch_id"] == emulator.ledger()["batches"][-1]["id"]]) == 6
    assert {k: json.loads(r["output_json"])["label"] for k, r in project.results().items()} == NEW_LABEL
    assert len(project.query("select * from main.items_batch__compare")) == 20  # both kept for review


def _compare(project, *args: str, log: bool = False):
    """The comparison's JSON summary (and, with `log`, the run's log: dbt's output goes to stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", "dbt_claude_batch.observe.cli", "compare", "--model", project.model, "--sample", "5",
         "--json", "--project-dir", str(project.root), *args],
        cwd=project.root.parent, env=project.env(), capture_output=True, text=True, timeout=300)  # from elsewhere
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return (json.loads(proc.stdout), proc.stderr) if log else json.loads(proc.stdout)


def _billed(project) -> float:
    con = duckdb.connect(str(project.db_path), read_only=True)
    try:
        return spend(con, "dbt_claude_batch")["main." + project.model]["billed_usd"]
    finally:
        con.close()
