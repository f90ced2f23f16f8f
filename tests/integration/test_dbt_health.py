"""The package's generic tests in `dbt build` / `dbt test`: red on a failure-heavy run, yellow with
warn severities (exit 0), green once the failures are resolved; `where`, `kinds` and `warn_if` as dbt has them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from dbt_harness import REPO_ROOT, create_calls, created_batches, items

FAST = {"wait_seconds": 60, "poll_interval_seconds": 0.05}
# 10 keys: 3 invalid requests (need a person), 1 server error (retried by itself), 1 without a result line
FAULTS = [{"name": "result_outcome", "custom_ids": ["1", "2", "3"], "outcome": "invalid_request_error"},
          {"name": "result_outcome", "custom_ids": ["4"], "outcome": "api_error"},
          {"name": "missing_results", "custom_ids": ["5"]}]


def _tests_yaml(project, tests: list) -> None:
    project.write(f"models/{project.model}.yml", yaml.safe_dump(
        {"version": 2, "models": [{"name": project.model, "data_tests": tests}]}, sort_keys=False))


def _outcomes(project) -> dict[str, tuple[str, int]]:
    """Per data test (its `name:`, else its generic test's name): (status, failures) of the last dbt command."""
    manifest = json.loads((project.root / "target" / "manifest.json").read_text())
    results = json.loads((project.root / "target" / "run_results.json").read_text())["results"]
    found = {}
    for r in results:
        node = manifest["nodes"][r["unique_id"]]
        if node["resource_type"] == "test":
            meta = node.get("test_metadata") or {}
            custom = node["name"] if not node["name"].startswith("dbt_claude_batch_") else None
            found[custom or meta["name"]] = (r["status"], r["failures"])
    return found


def test_shipped_tests_turn_dbt_build_red_then_yellow_then_green(project, emulator):
    project.load_table("items", items(10))
    project.configure(replace=False, **FAST)
    emulator.set_scenarios(FAULTS)
    _tests_yaml(project, [
        "dbt_claude_batch.no_key_dropped",
        {"dbt_claude_batch.failure_ratio": {"arguments": {"max_ratio": 0.2}}},
        "dbt_claude_batch.batches_reconciled",
        "dbt_claude_batch.no_failure_needs_you",
    ])

    # CI's `dbt build --empty` on a fresh database: the model writes no state and no views, so there is
    # nothing to test, and the tests pass instead of saying "run the model first" (found by a user test).
    empty = project.dbt("build", "--empty").stdout
    assert "PASS=" in empty and "ERROR=0" in empty and "does not exist" not in empty, empty[-3000:]
    assert create_calls(emulator) == 0

    red = project.dbt("build", expect_ok=False)

    assert red.returncode == 1
    assert _outcomes(project) == {
        "no_key_dropped": ("pass", 0),
        "failure_ratio": ("fail", 5),          # 5 of 10 keys failed, over 0.2
        "batches_reconciled": ("fail", 1),     # a result line did not come back
        "no_failure_needs_you": ("fail", 3),   # the invalid requests; the server error is retried by itself
    }
    assert "Failure in test dbt_claude_batch_failure_ratio_items_batch" in red.stdout
    statuses = dict(project.query("select status, count(*) from main.items_batch__keys group by all"))
    assert statuses == {"result": 5, "failure": 5}
    assert project.query("select count(*) from dbt_claude_batch.all_failures where dbt_model = 'main.items_batch' "
                         "and not retried_automatically") == [(3,)]

    # Two keys appear in the source without a run: dropped, as far as state knows. Warn severities: yellow, exit 0.
    project.load_table("items", items(12))
    _tests_yaml(project, [
        {"dbt_claude_batch.no_key_dropped": {"config": {"severity": "warn"}}},
        {"dbt_claude_batch.failure_ratio": {"arguments": {"max_ratio": 0.2},
                                            "config": {"warn_if": ">0", "error_if": ">5"}}},
        {"dbt_claude_batch.failure_ratio": {"name": "invalid_requests_at_most_30_percent",
                                            "arguments": {"max_ratio": 0.3, "kinds": ["invalid_request_error"]}}},
        {"dbt_claude_batch.batches_reconciled": {"config": {"severity": "warn"}}},
        {"dbt_claude_batch.no_failure_needs_you": {"config": {"severity": "warn"}}},
        {"dbt_claude_batch.no_failure_needs_you": {"name": "needs_you_but_key_1",
                                                   "config": {"where": "custom_id <> '1'", "severity": "warn"}}},
    ])

    yellow = project.dbt("test")

    assert yellow.returncode == 0
    assert _outcomes(project) == {
        "no_key_dropped": ("warn", 2),
        "failure_ratio": ("warn", 5),
        "invalid_requests_at_most_30_percent": ("pass", 0),  # 3 of 10: the other kinds are not counted
        "batches_reconciled": ("warn", 1),
        "no_failure_needs_you": ("warn", 3),
        "needs_you_but_key_1": ("warn", 2),
    }

    # The template changes, so the invalid requests are sent again; the unreconciled batch is accepted by `where`.
    emulator.clear_scenarios()
    project.write("prompts/item.j2", "Item {{ id }}, again: {{ body }}")
    first_batch = created_batches(emulator)[0]["id"]
    _tests_yaml(project, [
        "dbt_claude_batch.no_key_dropped",
        {"dbt_claude_batch.failure_ratio": {"arguments": {"max_ratio": 0.2}}},
        {"dbt_claude_batch.batches_reconciled": {"config": {"where": f"batch_id <> '{first_batch}'"}}},
        "dbt_claude_batch.no_failure_needs_you",
    ])

    project.dbt("build")

    assert _outcomes(project) == {"no_key_dropped": ("pass", 0), "failure_ratio": ("pass", 0),
                                  "batches_reconciled": ("pass", 0), "no_failure_needs_you": ("pass", 0)}
    assert project.query("select status, count(*) from main.items_batch__keys group by all") == [("result", 12)]


def test_a_slow_rise_of_failures_no_retry_fixes_fails_the_window_test_and_shows_in_status(project, emulator):
    project.load_table("items", items(10))
    project.configure(replace=False, health_window_runs=3, max_failure_ratio_window=0.2, **FAST)
    _tests_yaml(project, ["dbt_claude_batch.failure_ratio_window"])
    emulator.set_scenarios([{"name": "result_outcome", "custom_ids": ["1"], "outcome": "invalid_request_error"}])
    project.dbt("build")  # 1 of 10: green, and the window (1 of 10) is within 0.2
    assert _outcomes(project) == {"failure_ratio_window": ("pass", 0)}

    project.load_table("items", items(20))
    emulator.set_scenarios([{"name": "result_outcome", "custom_ids": ["11", "12", "13", "14"],
                             "outcome": "invalid_request_error"}])
    red = project.dbt("build", expect_ok=False)

    # the run alone (4 of 10) is under max_failure_ratio 0.5, so the model is green; its window is not
    assert "over max_failure_ratio" not in red.stdout and red.returncode == 1
    assert _outcomes(project) == {"failure_ratio_window": ("fail", 1)}
    assert project.query("select outcome from dbt_claude_batch.runs") == [("ok",), ("ok",)]
    status = subprocess.run([str(Path(sys.executable).parent / "dbt-claude-batch"), "status", "--project-dir",
                             str(project.root)], env=project.env(), capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    assert ("health over the last 2 runs (window 3): 5 of 20 requests failed for a reason no retry fixes (25.0%: "
            "5 invalid_request), over max_failure_ratio_window 0.2") in status.stdout


def test_a_model_that_never_wrote_its_views_fails_the_test_with_what_to_do(project):
    project.write("models/plain.sql", "select 1 as id")
    project.write("models/plain.yml", yaml.safe_dump(
        {"version": 2, "models": [{"name": "plain", "data_tests": ["dbt_claude_batch.no_key_dropped"]}]}))

    proc = project.dbt("build", "-s", "plain", expect_ok=False)

    assert '"plain__keys" does not exist' in proc.stdout and "run the model first" in proc.stdout


def test_dbt_deps_installs_the_package(project):
    """The harness links the package as `dbt deps` would; this is the real `dbt deps`, once."""
    link = project.root / "dbt_packages" / "dbt_claude_batch"
    link.unlink()
    project.dbt("deps")
    assert link.resolve() == REPO_ROOT
    project.dbt("parse")
    manifest = json.loads((project.root / "target" / "manifest.json").read_text())
    assert "macro.dbt_claude_batch.drop_leaked_tmp_tables" in manifest["macros"]
