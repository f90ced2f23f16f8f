"""Compare a prompt change on a sample: `dbt-claude-batch compare` (the `claude_batch_compare` var), through
real dbt runs against the emulator. Three dbt invocations: the first run buys answers, the comparison
after a template edit, and the next normal run, which re-buys as it always did."""

from __future__ import annotations

import json
import subprocess
import sys

from dbt_harness import create_calls, row_requests

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

    # The next normal run re-buys every row of the edited template as a batch, as before.
    project.run()
    assert create_calls(emulator) == creates + 1
    assert len([r for r in row_requests(emulator) if r["batch_id"] == emulator.ledger()["batches"][-1]["id"]]) == 6
    assert {k: json.loads(r["output_json"])["label"] for k, r in project.results().items()} == NEW_LABEL
    assert len(project.query("select * from main.items_batch__compare")) == 10  # kept for review
