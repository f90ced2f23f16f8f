"""Everyday dbt habits that must not spend: `--empty`, and a rebuild over a source that reads as empty."""

from __future__ import annotations

from dbt_harness import items

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

    project.run()  # a real run buys the five answers, into the table --empty built
    assert len(project.results()) == 5
    calls, state = _api_calls(emulator), _state_fingerprint(project)

    project.dbt("run", "--empty")
    assert _api_calls(emulator) == calls and _state_fingerprint(project) == state
    assert len(project.results()) == 5


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
