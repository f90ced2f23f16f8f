"""A prompt that renders empty (every column NULL or blank) is never sent: a failure of its own kind, at no cost."""

from __future__ import annotations

import pytest

from dbt_harness import create_calls, marker_cost, row_requests

FAST = {"wait_seconds": 60, "poll_interval_seconds": 0.05}
TYPES = {"id": "BIGINT", "title": "VARCHAR", "body": "VARCHAR"}
NORMAL = {"id": 1, "title": "Hello", "body": "world"}
EMPTY = {"id": 2, "title": None, "body": None}


def test_an_empty_prompt_is_a_failure_that_is_not_sent_until_the_row_changes(project, emulator):
    project.write("prompts/item.j2", "{{ title }} {{ body }}")  # both NULL: a single space
    project.configure(replace=False, **FAST)

    # Every row to submit is empty: the run fails before any call, and says why in its first line.
    project.load_table("items", [EMPTY], types=TYPES)
    out = project.run(expect_ok=False).stdout
    assert ('The prompt rendered empty for every one of the 1 rows to submit (first: key {"id":2}): give those '
            "rows text or filter them out in the staging model; nothing was submitted") in out
    assert create_calls(emulator) == 0 and emulator.ledger()["messages"] == []

    # A sample leaves the empty row out of what it sends.
    project.load_table("items", [NORMAL, EMPTY], types=TYPES)
    project.run(vars={"claude_batch_sample": 2})
    sample = project.rows_by_key("main.items_batch__sample")
    assert sample[1]["result_type"] == "succeeded"
    assert (sample[2]["result_type"], sample[2]["error_type"], sample[2]["cost_usd"]) == ("errored", "empty_prompt", None)
    assert len(emulator.ledger()["messages"]) == 1

    # The normal row is answered; the empty one stays a failure with error_type empty_prompt, recorded once.
    project.run()
    assert list(project.results()) == [1]
    failure = project.failures()[2]
    assert (failure["kind"], failure["error_type"], failure["attempt"]) == ("errored", "empty_prompt", 1)
    assert failure["error_message"].startswith('The prompt for key {"id":2} is empty')
    assert "give the row text" in failure["next_action"]
    assert [r["custom_id"] for r in row_requests(emulator)] == ["1"]
    bill = emulator.ledger(requests=False)["bill"]
    ours = project.query("select sum(cost_usd) from main.items_batch")[0][0]
    assert bill["batch_usd"] == pytest.approx(ours + marker_cost(project), abs=1e-12)

    project.run()
    assert create_calls(emulator) == 1  # not sent again while the row has not changed

    project.load_table("items", [NORMAL, {**EMPTY, "title": "Now"}], types=TYPES)
    project.run()
    assert sorted(project.results()) == [1, 2] and project.failures() == {}
    assert sorted(r["custom_id"] for r in row_requests(emulator)) == ["1", "2"]
