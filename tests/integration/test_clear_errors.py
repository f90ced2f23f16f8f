"""Failures with a first line that says what happened and what to do, and nothing lost or left behind."""

from __future__ import annotations

import os
import socket
import stat

from dbt_harness import create_calls, expected_answer, items

FAST = {"wait_seconds": 60, "poll_interval_seconds": 0.05}


def _error_line(out: str, needle: str) -> str:
    """The line dbt shows for a failed model (its first line of our message)."""
    return next(line for line in out.splitlines() if needle in line)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _unsettled(project) -> list:
    return project.query("select status from dbt_claude_batch.submissions where status in ('creating', 'in_doubt')")


def test_a_template_that_raises_for_one_row_fails_that_row_only(project, emulator):
    rows = [{"id": i, "body": f"b{i}", "stars": s} for i, s in enumerate([5, 0, 2], start=1)]
    project.load_table("items", rows)
    project.write("prompts/item.j2", "Item {{ id }}: {{ body }}\nScore: {{ 10 // stars }}")
    project.configure(replace=False, **FAST)

    out = project.run().stdout

    assert "prompts/item.j2 line 2 raised ZeroDivisionError: integer division or modulo by zero for key {\"id\":2}" in out
    assert sorted(project.results()) == [1, 3]
    failure = project.failures()[2]
    assert (failure["kind"], failure["error_type"]) == ("errored", "template_error")
    assert "line 2" in failure["error_message"] and "fix the template" in failure["next_action"]
    project.run()
    assert create_calls(emulator) == 1  # not retried while neither the row nor the template changed

    rows[1]["stars"] = 4
    project.load_table("items", rows)
    project.run()
    assert sorted(project.results()) == [1, 2, 3] and project.failures() == {}


def test_a_template_that_raises_for_every_row_fails_the_run_before_any_create(project, emulator):
    project.load_table("items", [{"id": 1, "body": "b", "stars": 0}])
    project.write("prompts/item.j2", "{{ 10 // stars }}")
    out = project.run(expect_ok=False).stdout
    assert "It raised for every one of the 1 rows to submit; nothing was submitted." in out
    assert create_calls(emulator) == 0


def test_null_renders_as_empty_text_and_templates_can_test_for_it(project, emulator):
    project.load_table("items", [{"id": 1, "body": None}, {"id": 2, "body": "x"}],
                       types={"id": "BIGINT", "body": "VARCHAR"})
    project.configure(replace=False, **FAST)
    project.run()
    assert project.results()[1]["output_text"] == expected_answer(1, "")
    project.write("prompts/item.j2", "Item {{ id }}: {% if body is none %}(no body){% else %}{{ body }}{% endif %}")
    project.run()
    assert project.results()[1]["output_text"] == expected_answer(1, "(no body)")


def test_sample_of_an_empty_source_says_so(project, emulator):
    project.load_table("items", [], types={"id": "BIGINT", "body": "VARCHAR"})
    out = project.run(vars={"claude_batch_sample": 5}, expect_ok=False).stdout
    assert "`claude_batch_sample` asked for 5 rows, but the source of main.items_batch is empty" in out
    assert "executemany" not in out


def test_reset_batch_state_of_a_model_without_state_fails(project, emulator):
    out = project.dbt("run-operation", "dbt_claude_batch.reset_batch_state", "--args", "{model: nope}",
                      expect_ok=False).stdout
    assert "No state for model main.nope in dbt_claude_batch: check the model name" in out


def test_model_names_are_checked_before_any_create(project, emulator):
    project.load_table("items", items(3))
    project.configure(replace=False, model=123, **FAST)
    out = project.run(expect_ok=False).stdout
    assert "Setting `model` must be a model name in quotes" in _error_line(out, "Setting `model`")

    project.configure(replace=False, model="claude-haiku-9")
    out = project.run(expect_ok=False).stdout
    line = _error_line(out, "is not a model the API lists")
    assert "Model 'claude-haiku-9' (from setting `model`) is not a model the API lists for this key" in line
    assert create_calls(emulator) == 0

    project.configure(replace=False, extra_models=["claude-haiku-9"])  # a name too new to be listed
    project.run(expect_ok=False)  # sent; the emulator does not know it either, so every row errors (red)
    assert create_calls(emulator) == 1


def test_a_foreign_table_in_the_state_schema_fails_clearly(project, emulator):
    project.load_table("items", items(2))
    import duckdb

    con = duckdb.connect(str(project.db_path))
    con.execute("create schema dbt_claude_batch")
    con.execute("create table dbt_claude_batch.batches (id integer, label varchar)")
    con.close()
    out = project.run(expect_ok=False).stdout
    assert "Table dbt_claude_batch.batches is not dbt-claude-batch state" in _error_line(out, "is not dbt-claude")
    assert "BinderException" not in out and create_calls(emulator) == 0


def test_a_base_url_ending_in_v1_gets_its_own_hint(project, emulator):
    project.load_table("items", items(2))
    project.env_overrides["ANTHROPIC_BASE_URL"] = emulator.url + "/v1"
    out = project.run(expect_ok=False).stdout
    assert "ANTHROPIC_BASE_URL ends in /v1: remove the /v1 suffix and run again." in out
    assert emulator.ledger(requests=False)["calls"] == {}


def test_a_refused_connection_creates_nothing_in_doubt_and_names_the_base_url(project, emulator):
    rows = items(4)
    project.load_table("items", rows)
    project.configure(replace=False, extra_models=["claude-haiku-4-5"], **FAST)  # straight to the create
    url = f"http://127.0.0.1:{_closed_port()}"
    project.env_overrides["ANTHROPIC_BASE_URL"] = url

    out = project.run(expect_ok=False).stdout

    assert f"Cannot reach the Anthropic API at {url} while creating a batch" in out
    assert "check ANTHROPIC_BASE_URL" in out and out.count("retrying in") == 4
    assert _unsettled(project) == []
    assert {s for (s,) in project.query("select status from dbt_claude_batch.submissions")} == {"rejected"}
    del project.env_overrides["ANTHROPIC_BASE_URL"]
    project.run()
    assert create_calls(emulator) == 1 and len(project.results()) == 4


def test_the_api_unreachable_while_polling_fails_clearly_and_the_next_run_continues(project, emulator):
    emulator.configure(processing_delay=3600)
    rows = items(5)
    project.load_table("items", rows)
    project.configure(replace=False, wait_seconds=0)
    project.run()
    emulator.stop()

    out = project.run(expect_ok=False).stdout

    assert "Cannot reach the Anthropic API at" in out and "APIConnectionError" not in _error_line(out, "Cannot reach")
    emulator.start()  # same state, new port
    emulator.advance_clock(3601)
    project.configure(replace=False, **FAST)
    project.run()
    assert create_calls(emulator) == 1 and len(project.results()) == 5


def test_a_spend_limit_429_stops_submission_at_once_and_leaves_nothing_in_doubt(project, emulator):
    emulator.add_scenario({"name": "spend_limit", "times": 1})
    project.load_table("items", items(3))
    project.configure(replace=False, **FAST)

    out = project.run(expect_ok=False).stdout

    assert "Batch create refused: the workspace's spend limit is reached" in _error_line(out, "spend limit")
    assert "retrying" not in out
    assert _unsettled(project) == []
    project.run()
    assert len(project.results()) == 3


def test_spool_files_are_private_and_a_killed_runs_are_removed_by_the_next_run(project, emulator, tmp_path):
    workdir = tmp_path / "work"
    project.env_overrides["DBT_CLAUDE_BATCH_WORKDIR"] = str(workdir)
    emulator.configure(processing_delay=3600)
    project.load_table("items", items(20, prefix="secret prompt text"))
    # Ten creates in a row: the run is killed after the first, with its spool still in use.
    project.configure(replace=False, max_requests_per_batch=3, wait_seconds=300, poll_interval_seconds=0.05)

    project.run_and_kill(line="submitted batch")

    left = list(workdir.iterdir())
    assert len(left) == 1 and stat.S_IMODE(os.stat(left[0]).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(workdir).st_mode) == 0o700
    assert any(b"secret prompt text" in p.read_bytes() for p in left[0].rglob("*") if p.is_file())
    project.configure(replace=False, wait_seconds=0)
    project.run()
    assert list(workdir.iterdir()) == []
