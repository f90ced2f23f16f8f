"""Plan before you pay: `claude_batch_plan` and the re-buy guard, through real dbt runs (8 dbt invocations).

The plan's counts are held to what the very next run does (its log line of reasons, its reuse count,
its batch on the emulator) and its cost range to what that run cost.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import jsonschema

from dbt_harness import create_calls, created_batches, marker_cost

from dbt_claude_batch.base.plan_document import PLAN_SCHEMA

FAST = {"wait_seconds": 60, "poll_interval_seconds": 0.05}
PLAN = {"claude_batch_plan": True}
CLI = os.path.join(os.path.dirname(sys.executable), "dbt-claude-batch")


def rows(bodies: dict[int, str]) -> list[dict]:
    return [{"id": k, "body": v} for k, v in sorted(bodies.items())]


def last_plan(project) -> dict:
    found = project.query("select plan from dbt_claude_batch.plans order by planned_at desc limit 1")
    return json.loads(found[0][0])


def submitted_reasons(out: str) -> dict[str, int]:
    """The run's own account of what it sent, from its log line `N to submit (a new, b changed, ...)`."""
    found = re.search(r"\d+ to submit \(([^)]*)\)", out)
    if not found:
        return {}
    return {k: int(n) for n, k in (part.split(" ", 1) for part in found.group(1).split(", "))}


def planned_reasons(plan: dict) -> dict[str, int]:
    r = plan["rows"]
    return {k: r[k] for k in ("new", "changed", "retry", "rerun", "resubmit_canceled") if r.get(k)}


def last_run(project) -> dict:
    names = ("n_submitted", "n_reused", "cost_usd", "outcome")
    return dict(zip(names, project.query(
        f"select {', '.join(names)} from dbt_claude_batch.runs order by started_at desc limit 1")[0]))


def test_plan_counts_hold_for_the_next_run_and_the_guard_stops_a_mass_rebuy(project, emulator):
    project.rebuy_guard = True
    project.write("prompts/item.j2", "Item: {{ body }}")
    project.configure(key="id", prompt_template="prompts/item.j2", model="claude-haiku-4-5", max_tokens=64,
                      system="Answer briefly.", **FAST)
    bodies = {i: f"ticket text number {i}, somewhat longer to count" for i in range(1, 11)}
    project.load_table("items", rows(bodies))
    emulator.add_scenario({"name": "result_outcome", "custom_ids": ["3"], "outcome": "api_error", "times": 1})

    # 1. A plan before the first run: builds an empty table, calls nothing, records the plan.
    out = project.run(vars=PLAN).stdout
    assert emulator.ledger(requests=False)["calls"] == {}
    assert project.results() == {}
    plan = last_plan(project)
    jsonschema.validate(plan, PLAN_SCHEMA)
    assert "plan for main.items_batch: 10 source rows: 10 new, 0 changed" in out
    assert plan["rows"]["unchanged"] == 0 and plan["rows"]["reusable"] == 0
    assert plan["requests"] == {**plan["requests"], "to_send": 10, "batches": 1, "route": "batch"}
    assert plan["rebuy"]["rows"] == 0 and not plan["rebuy"]["stops"]
    assert plan["tokens"]["basis"].startswith("byte heuristic")

    # 2. The real run does exactly that, for a cost inside the plan's range.
    out = project.run().stdout
    assert submitted_reasons(out) == planned_reasons(plan) == {"new": 10}
    assert [b["request_count"] for b in created_batches(emulator)] == [10]
    run = last_run(project)
    cost = run["cost_usd"] - marker_cost(project)
    assert plan["cost_usd"]["low"] <= cost <= plan["cost_usd"]["high"], (cost, plan["cost_usd"])
    assert sorted(project.results()) == [i for i in range(1, 11) if i != 3]  # 3 failed, retryable

    # 3. Edits: one row's text, a new row, a new row asking what row 1 asked (held: reused), the failed row.
    bodies[5] = "ticket text number 5, edited by a person"
    bodies[11] = "a brand new ticket"
    bodies[12] = bodies[1]
    project.load_table("items", rows(bodies))
    project.configure(replace=False, count_tokens_sample=2)  # the plan may ask count_tokens (free) about 2
    out = project.run(vars=PLAN).stdout
    plan = last_plan(project)
    counted = emulator.ledger(requests=False)["calls"]["POST /v1/messages/count_tokens"]
    assert sum(counted.values()) == 2
    # The emulator counts as the byte heuristic does: the sample's ratio is exactly 1.
    assert "input scaled by 1.000, the ratio count_tokens gave on 2 sampled request(s)" in plan["tokens"]["basis"]
    assert planned_reasons(plan) == {"new": 1, "changed": 1, "retry": 1}
    assert plan["rows"]["reusable"] == 1 and plan["rows"]["unchanged"] == 8
    assert plan["changed_why"] == {"prompt text": 1}
    assert plan["retry_by_kind"] == {"errored": 1}
    assert plan["tokens"]["basis"].startswith("this model's usage history (9 answered request(s)")
    assert plan["turnaround_hours"]["batches_seen"] == 1
    assert create_calls(emulator) == 1  # the plan created nothing

    out = project.run().stdout
    assert submitted_reasons(out) == planned_reasons(plan)
    run = last_run(project)
    assert run["n_reused"] == plan["rows"]["reusable"] and run["n_submitted"] == plan["requests"]["to_send"] == 3
    assert [b["request_count"] for b in created_batches(emulator)] == [10, 3]
    assert sorted(project.results()) == list(range(1, 13))

    # 4. A one-character template edit: `dbt-claude-batch plan --json` shows the re-buy the guard will stop.
    project.write("prompts/item.j2", "Item; {{ body }}")
    # From another directory, as a scheduler runs it: the dbt it starts must plan on the project's own
    # database (the profile's path is relative), and no stray database may appear where it was run.
    elsewhere = project.root.parent
    before = set(os.listdir(elsewhere))
    proc = subprocess.run([CLI, "plan", "--json", "--select", "items_batch", "--project-dir", str(project.root)],
                          cwd=elsewhere, env=project.env(), capture_output=True, text=True, timeout=600)
    assert set(os.listdir(elsewhere)) == before
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    assert document["schema_version"] == 1 and len(document["plans"]) == 1
    plan = document["plans"][0]
    jsonschema.validate(plan, PLAN_SCHEMA)
    assert plan["rebuy"] == {"rows": 12, "held": 12, "limit": 2, "stops": True, "why": {"template": 12},
                             "usd": plan["rebuy"]["usd"], "held_elsewhere": {}}
    assert planned_reasons(plan) == {"changed": 12} and plan["changed_why"] == {"template": 12}
    assert plan["requests"]["to_send"] == 11 and plan["requests"]["deduplicated"] == 1  # rows 1 and 12 ask alike

    failed = project.run(expect_ok=False).stdout
    first = next(line for line in failed.splitlines() if "would buy again" in line)
    assert (f"This run would buy again 12 of the 12 answers held for main.items_batch (template changed for 12; "
            f"estimated at most ${plan['rebuy']['usd']:.4f}), over max_rebuy_fraction (limit 2 rows)") in first
    assert "--vars '{claude_batch_allow_rebuy: true}'" in first
    assert create_calls(emulator) == 2  # stopped before any create

    out = project.run(vars={"claude_batch_allow_rebuy": True}).stdout
    assert submitted_reasons(out) == {"changed": 12}
    assert [b["request_count"] for b in created_batches(emulator)] == [10, 3, 11]

    # 5. Another edit: row 12's last request shared row 1's line (de-duplicated), and is still known as
    # its last request: the plan says what changed for it too, not "unknown".
    project.write("prompts/item.j2", "Item - {{ body }}")
    project.run(vars=PLAN)
    plan = last_plan(project)
    assert plan["changed_why"] == {"template": 12} and plan["rebuy"]["why"] == {"template": 12}
