"""Everyday dbt habits that must not spend: `--empty`, and a rebuild over a source that reads as empty."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from dbt_claude_batch.run.dispatch import UNSENT_AFTER_STOP, UNSENT_AFTER_CRASH, PREPARED_AHEAD
from dbt_harness import create_calls, created_batches, items, row_requests

FAST = {"wait_seconds": 60, "poll_interval_seconds": 0.05}

SOURCES_YML = """version: 2
sources:
  - name: raw
    schema: raw
    tables:
      - name: items
"""


def _api_calls(emulator) -> int:
    calls = emulator.ledger(requests=False)["calls"]
    return sum(sum(by_status.values()) for path, by_status in calls.items() if "/_emulator" not in path)


def _state_tables(project) -> list:
    return project.query("select table_name from information_schema.tables where table_schema = 'dbt_claude_batch'")


def _state_fingerprint(project) -> tuple:
    return tuple(project.query(f"select count(*) from dbt_claude_batch.{t}")[0][0]
                 for t in ("runs", "submissions", "requests", "batches", "outcomes"))


def test_empty_build_makes_no_call_and_leaves_state_as_it_was(project, emulator):
    project.load_table("items", items(5))
    project.configure(replace=False, **FAST)

    out = project.dbt("run", "--empty", vars={"claude_batch_sample": 2}).stdout

    assert "no API call was made" in out
    assert _api_calls(emulator) == 0
    assert _state_tables(project) == []  # not even created
    assert project.query("select count(*) from main.items_batch") == [(0,)]
    columns = dict(project.query("select column_name, data_type from information_schema.columns "
                                 "where table_name = 'items_batch'"))
    assert columns["id"] == "BIGINT" and columns["output_json"] == "JSON" and columns["cost_usd"] == "DOUBLE"

    out = project.run().stdout  # a real run buys the five answers, into the table --empty built
    assert "holds no state" not in out and "has rows but" not in out  # nothing was bought before: no re-buy warning
    assert len(project.results()) == 5
    calls, state = _api_calls(emulator), _state_fingerprint(project)

    out = project.dbt("run", "--empty").stdout
    assert _api_calls(emulator) == calls and _state_fingerprint(project) == state
    assert len(project.results()) == 5
    assert "--empty: the results table keeps its rows (an incremental merge of none)" in out  # not "no rows"

    # A key whose columns the table lacks fails CI's --empty build with the fix, not a binder error.
    project.write("models/stg_items.sql", "select id, 'a' as tenant, body from raw.items\n")
    project.write_model(unique_key=["id", "tenant"])
    project.configure(replace=False, key=["id", "tenant"])
    out = project.dbt("run", "--empty", expect_ok=False).stdout
    assert ("Results table main.items_batch has no column tenant (its key or output_columns changed): rebuild it "
            "with `dbt run --full-refresh -s items_batch`") in out, out
    # ... and one whose key column changed type, or that the model no longer returns.
    project.write("models/stg_items.sql", "select id::double as id, body from raw.items\n")
    project.write_model(unique_key="id")
    project.configure(replace=False, key="id")
    out = project.dbt("run", "--empty", expect_ok=False).stdout
    assert "has column id of type BIGINT, where the model now returns DOUBLE" in out, out
    assert _api_calls(emulator) == calls and _state_fingerprint(project) == state


def test_full_refresh_over_a_source_built_empty_keeps_held_answers(project, emulator):
    project.load_table("items", items(4))
    project.write("models/sources.yml", SOURCES_YML)
    project.write("models/stg_items.sql", "{{ config(materialized='table') }}\nselect * from {{ source('raw', 'items') }}\n")
    project.configure(replace=False, **FAST)
    project.run()
    calls = _api_calls(emulator)

    project.dbt("run", "--empty", "-s", "stg_items")  # the upstream table now has no rows
    assert project.query("select count(*) from main.stg_items") == [(0,)]
    out = project.dbt("run", "--full-refresh", "-s", project.model).stdout

    assert "the source is empty in this run, so the rebuilt table keeps the 4 answer(s)" in out
    assert sorted(project.results()) == [1, 2, 3, 4]
    assert _api_calls(emulator) == calls


# -- Ctrl-C and SIGTERM -----------------------------------------------------------------------------

STOPPED = "stopped by Ctrl-C: this run submitted"


def _read_until(proc, pattern: str, seen: list[str]) -> None:
    for line in proc.stdout:
        seen.append(line)
        if pattern in line:
            return
    raise AssertionError(f"dbt ended before {pattern!r}:\n{''.join(seen)[-4000:]}")


def _finish(proc, seen: list[str], timeout: float = 60) -> int:
    """The exit code; fails when the process has not ended within `timeout` (a stuck run)."""
    code = proc.wait(timeout=timeout)
    seen.append(proc.stdout.read())
    proc.stdout.close()
    return code


def _each_row_bought_once(emulator) -> list[str]:
    ids = [r["custom_id"] for r in row_requests(emulator)]
    assert len(ids) == len(set(ids)), "a row was bought twice"
    return ids


def _wait_for_held_create(emulator, proc, seen: list[str], batches: int) -> None:
    """Until the emulator holds `batches` batches, the last one's create answered late (slow_create).

    The batch and its held answer are registered together, so a release after this sees the answer."""
    deadline = time.monotonic() + 60
    while len(created_batches(emulator)) < batches:
        assert time.monotonic() < deadline and proc.poll() is None, "".join(seen)


def _wait_for_log(project, proc, seen: list[str], text: str) -> None:
    """Until dbt's log file (debug lines included) holds `text`."""
    log = project.root / "logs" / "dbt.log"
    deadline = time.monotonic() + 60
    while not (log.exists() and text in log.read_text(errors="replace")):
        assert time.monotonic() < deadline and proc.poll() is None, "".join(seen)


def _statuses(project) -> list[tuple]:
    return project.query("select status, count(*) from dbt_claude_batch.submissions group by all order by all")


def _stop_during_held_create(emulator, proc, seen: list[str], batches: int, sig: int) -> int:
    """Signal `proc` while the create of its `batches`-th batch waits for its answer; then let it answer.

    dbt cancels the model's connection (which sets the run's stop flag) before it prints CANCEL, so the
    run knows of the stop before the create returns: it stops between creates, deterministically."""
    _wait_for_held_create(emulator, proc, seen, batches)
    os.kill(proc.pid, sig)
    _read_until(proc, "CANCEL", seen)
    assert emulator.release_held() == 1
    return _finish(proc, seen)


def test_ctrl_c_stops_between_creates_and_the_next_run_continues(project, emulator):
    project.load_table("items", items(30))
    project.configure(replace=False, max_requests_per_batch=2, **FAST)  # a batch per row
    emulator.set_scenarios([{"name": "slow_create", "seconds": 0, "times": 1},  # the first create answers at once,
                            {"name": "slow_create", "seconds": 120, "times": 1}])  # the second when released
    proc = project.popen("run", "-s", f"+{project.model}")
    seen: list[str] = []
    code = _stop_during_held_create(emulator, proc, seen, 2, signal.SIGINT)

    out = "".join(seen)
    assert code != 0
    stop_line = next(line for line in out.splitlines() if STOPPED in line)
    assert out.count("submitted batch") == 2 and create_calls(emulator) == 2
    assert "submitted 2 request(s) before the stop and 28 were not submitted" in stop_line
    assert project.query("select outcome from dbt_claude_batch.runs") == [("stopped",)]

    # A third batch's intent recorded during the second create (if it began before the stop) was never sent.
    assert {status for status, _ in _statuses(project)} <= {"submitted", "rejected"}
    assert project.query("select count(*) from dbt_claude_batch.submissions where status = 'rejected' "
                         "and note <> ?", [UNSENT_AFTER_STOP]) == [(0,)]

    project.run()  # continues: what was sent is collected, the rest is submitted, nothing twice
    assert sorted(project.results()) == list(range(1, 31))
    assert len(_each_row_bought_once(emulator)) == 30


def test_ctrl_c_while_a_refused_create_waits_to_be_retried_sends_nothing_more(project, emulator):
    # Found by a user test: the wait before retrying a create refused with 429/529 ignored Ctrl-C, and
    # the create went out after the stop.
    project.load_table("items", items(3))
    project.configure(replace=False, **FAST)
    emulator.set_scenarios([{"name": "http_error", "status": 529, "route": "create", "times": 10,
                             "retry_after": 60}])
    proc = project.popen("run", "-s", f"+{project.model}")
    seen: list[str] = []
    _read_until(proc, "batch create refused with HTTP 529; retrying in 60.0s", seen)
    os.kill(proc.pid, signal.SIGINT)
    code = _finish(proc, seen)  # not after the 60 s wait

    assert code != 0
    assert "submitted 0 request(s) before the stop and 3 were not submitted" in "".join(seen), "".join(seen)[-3000:]
    assert created_batches(emulator) == []
    assert emulator.ledger(requests=False)["calls"]["POST /v1/messages/batches"] == {"529": 1}  # no retry
    assert {status for status, _ in _statuses(project)} == {"rejected"}


def _run_waiting(project, emulator_factory):
    """A `dbt run` of 3 rows waiting (wait_seconds 600) for a batch that takes an hour: (emulator, proc, seen)."""
    emulator = emulator_factory("--processing-delay", "3600")
    project.emulator = emulator
    project.load_table("items", items(3))
    project.configure(replace=False, wait_seconds=600, poll_interval_seconds=1)
    proc = project.popen("run", "-s", f"+{project.model}")
    seen: list[str] = []
    _read_until(proc, "waiting ", seen)
    return emulator, proc, seen


def test_ctrl_c_stops_the_wait_for_results(project, emulator_factory):
    emulator, proc, seen = _run_waiting(project, emulator_factory)
    os.kill(proc.pid, signal.SIGINT)
    code = _finish(proc, seen)  # well before wait_seconds

    assert code != 0
    assert "submitted 3 request(s) before the stop and 0 were not submitted" in "".join(seen)
    assert create_calls(emulator) == 1


def test_a_second_signal_exits_at_once_without_a_traceback(project, emulator):
    project.load_table("items", items(4))
    project.configure(replace=False, **FAST)
    emulator.add_scenario({"name": "slow_create", "seconds": 120, "times": 1})
    proc = project.popen("run", "-s", f"+{project.model}")
    seen: list[str] = []
    _read_until(proc, "to submit", seen)
    _wait_for_held_create(emulator, proc, seen, 1)  # the create reached the API; its answer is held back
    os.kill(proc.pid, signal.SIGINT)
    _read_until(proc, "CANCEL", seen)  # dbt cancelled the model's connection: the run knows
    os.kill(proc.pid, signal.SIGINT)
    code = _finish(proc, seen)

    out = "".join(seen)
    assert code == 128 + signal.SIGINT
    assert "SIGINT again: exiting now" in out and "Traceback" not in out

    project.run()  # the unanswered create is settled by its marker: adopted, not bought again
    assert sorted(project.results()) == [1, 2, 3, 4]
    assert len(created_batches(emulator)) == 1 and len(_each_row_bought_once(emulator)) == 4


def test_sigterm_kills_dbt_safely_and_stops_between_creates_under_the_wrapper(project, emulator):
    project.load_table("items", items(30))
    project.configure(replace=False, max_requests_per_batch=2, **FAST)
    emulator.add_scenario({"name": "slow_create", "seconds": 120, "times": 1})
    proc = project.popen("run", "-s", f"+{project.model}")
    seen: list[str] = []
    _wait_for_held_create(emulator, proc, seen, 1)
    _wait_for_log(project, proc, seen, PREPARED_AHEAD)  # the second batch's intent, recorded meanwhile
    os.kill(proc.pid, signal.SIGTERM)  # dbt has no SIGTERM handler: it dies at once, its create unanswered
    assert _finish(proc, seen) == -signal.SIGTERM
    assert STOPPED not in "".join(seen) and emulator.release_held() == 1
    # One create sent and unanswered, one prepared and never sent: only the first can have made a batch.
    assert _statuses(project) == [("creating", 1), ("prepared", 1)] and create_calls(emulator) == 1

    emulator.add_scenario({"name": "slow_create", "seconds": 120, "times": 1})
    wrapper = subprocess.Popen([str(Path(sys.executable).parent / "dbt-claude-batch"), "dbt", "run", "-s", f"+{project.model}"],
                               cwd=project.root, env=project.env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    seen = []
    code = _stop_during_held_create(emulator, wrapper, seen, 2, signal.SIGTERM)
    out = "".join(seen)
    assert code != 0 and STOPPED in out
    assert "submitted 1 request(s) before the stop and 28 were not submitted" in out  # the first row was adopted
    assert project.query("select count(*) from dbt_claude_batch.submissions where status = 'rejected' "
                         "and note = ?", [UNSENT_AFTER_CRASH]) == [(1,)]  # the killed run's prepared intent

    project.run()
    assert sorted(project.results()) == list(range(1, 31))
    assert len(_each_row_bought_once(emulator)) == 30
    assert ("prepared", 1) not in _statuses(project)


def test_two_runs_on_one_file_lose_nothing(project, emulator_factory):
    emulator, first, seen = _run_waiting(project, emulator_factory)  # the first run holds the file while it waits

    second = project.run(expect_ok=False)
    assert "Could not set lock on file" in second.stdout + second.stderr  # dbt-duckdb's words, before any model
    os.kill(first.pid, signal.SIGINT)
    _finish(first, seen)

    emulator.advance_clock(7200)
    project.configure(replace=False, wait_seconds=60, poll_interval_seconds=0.05)
    project.run()
    assert sorted(project.results()) == [1, 2, 3]
    assert create_calls(emulator) == 1 and len(_each_row_bought_once(emulator)) == 3
