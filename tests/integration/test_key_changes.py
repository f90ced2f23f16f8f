"""A key change can't corrupt a model: it is refused until the table is rebuilt, and a rebuild holds
exactly one row per key of the current source."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dbt_harness import MODEL_PY, create_calls, created_batches, emulator_answer, expected_answer, row_requests

FAST = {"wait_seconds": 60, "poll_interval_seconds": 0.05}
CLI = str(Path(sys.executable).parent / "dbt-claude-batch")
ROWS = [{"id": i, "tenant": t, "body": f"body {i} {t}"} for i in range(1, 7) for t in ("a", "b")][:9]


def _first_line_of_error(out: str, needle: str) -> str:
    return next(line for line in out.splitlines() if needle in line)


def test_a_changed_key_is_refused_until_full_refresh_which_reuses_the_answers(project, emulator):
    project.load_table("items", [r for r in ROWS if r["tenant"] == "a"])
    project.write("prompts/item.j2", "Item {{ id }}: {{ body }}")
    project.configure(replace=False, **FAST)
    project.run()
    assert create_calls(emulator) == 1
    project.load_table("items", ROWS)
    project.write_model(unique_key=["id", "tenant"])
    project.configure(replace=False, key=["id", "tenant"])

    out = project.run(expect_ok=False).stdout

    assert "Setting `key` of main.items_batch changed from ['id'] to ['id', 'tenant']: rebuild the table" in out
    assert "dbt run --full-refresh -s items_batch" in out
    assert create_calls(emulator) == 1

    project.dbt("run", "--full-refresh", "-s", "+items_batch")

    assert create_calls(emulator) == 2  # only the tenant-b rows are new; tenant-a answers are reused
    rows = project.query("select id, tenant, output_text from main.items_batch order by all")
    assert len(rows) == len(ROWS) == len({(r[0], r[1]) for r in rows})
    for (id_, tenant, text), row in zip(rows, sorted(ROWS, key=lambda r: (r["id"], r["tenant"]))):
        assert (id_, tenant) == (row["id"], row["tenant"])
        assert text == expected_answer(id_, row["body"])
    project.run()
    assert create_calls(emulator) == 2


def test_a_key_that_disagrees_with_unique_key_fails_before_any_call(project, emulator):
    project.load_table("items", ROWS)
    project.configure(replace=False, key=["id", "tenant"], **FAST)  # the model's unique_key stays "id"

    out = project.run(expect_ok=False).stdout

    line = _first_line_of_error(out, "has unique_key")
    assert "Model items_batch has unique_key ['id'] but claude_batch key ['id', 'tenant']: set both" in line
    assert emulator.ledger(requests=False)["calls"] == {}


def test_full_refresh_drops_keys_no_longer_in_the_source_and_incremental_keeps_them(project, emulator):
    rows = [{"id": i, "body": f"body {i}"} for i in range(1, 6)]
    project.load_table("items", rows)
    project.configure(replace=False, **FAST)
    project.run()
    project.load_table("items", rows[:3])

    project.run()
    assert sorted(project.results()) == [1, 2, 3, 4, 5]  # incremental: kept
    project.dbt("run", "--full-refresh", "-s", "+items_batch")
    assert sorted(project.results()) == [1, 2, 3]
    assert create_calls(emulator) == 1


def test_a_key_that_failed_before_and_after_a_key_change_has_one_failures_row(project, emulator):
    project.load_table("items", [r for r in ROWS if r["tenant"] == "a"])
    project.configure(replace=False, max_failure_ratio=1, **FAST)
    emulator.set_scenarios([{"name": "result_outcome", "custom_ids": ["2", "2-a"], "outcome": "invalid_request_error"}])
    project.run()
    assert [(r["id"], r["kind"]) for r in project.failures().values()] == [(2, "errored")]
    project.write_model(unique_key=["id", "tenant"])
    project.configure(replace=False, key=["id", "tenant"])

    project.dbt("run", "--full-refresh", "-s", "+items_batch")

    assert create_calls(emulator) == 2  # key (2, a) was sent again under its new custom_id, and failed again
    failures = project.query("select id, tenant, custom_id from main.items_batch__failures order by all")
    assert failures == [(2, "a", "2-a")]
    assert project.query("select key_json, count(*) from dbt_claude_batch.all_failures group by all "
                         "having count(*) > 1") == []
    assert project.query("select count(*) from dbt_claude_batch.all_failures") == [(1,)]


NO_UNIQUE_KEY_MODEL = '''from dbt_claude_batch import batch_model


def model(dbt, session):
    dbt.config(materialized="incremental")
    return batch_model(dbt, session, source=dbt.ref("stg_items"), settings=dbt.config.meta_get("claude_batch"))
'''


def test_an_incremental_model_that_would_not_replace_a_keys_row_fails_before_any_call(project, emulator):
    # Without unique_key, or with `append`, dbt would add a second row for a key whose answer changes.
    project.load_table("items", [r for r in ROWS if r["tenant"] == "a"])
    project.configure(replace=False, **FAST)
    project.write_model(body=NO_UNIQUE_KEY_MODEL)

    # Caught by the build CI makes with --empty, as well as by a run.
    out = project.dbt("run", "--empty", "-s", "+items_batch", expect_ok=False).stdout

    line = _first_line_of_error(out, "Model items_batch")
    assert "Model items_batch is incremental without a unique_key: set unique_key='id'" in line, line
    project.write_model(strategy="append")

    out = project.run(expect_ok=False).stdout

    line = _first_line_of_error(out, "Model items_batch")
    assert "Model items_batch has incremental_strategy 'append', which keeps a key's old row" in line, line
    assert "set incremental_strategy='delete+insert'" in line, line
    # A merge that would update only some columns: a new request_hash beside the old answer.
    merge = MODEL_PY.format(unique_key="id", strategy="merge")
    project.write_model(body=merge.replace("strategy='merge'", "strategy='merge', merge_exclude_columns=['output_text']"))

    out = project.run(expect_ok=False).stdout

    line = _first_line_of_error(out, "Model items_batch")
    assert "Model items_batch sets merge_exclude_columns, with which dbt may keep a key's old row" in line, line
    assert emulator.ledger(requests=False)["calls"] == {}


def test_the_merge_strategy_also_keeps_one_row_per_key_with_its_newest_answer(project, emulator):
    rows = [{"id": i, "body": f"body {i}"} for i in range(1, 5)]
    project.load_table("items", rows)
    project.configure(replace=False, **FAST)
    project.write_model(strategy="merge")
    project.run()
    rows[1]["body"] = "body 2, edited"
    project.load_table("items", rows)

    project.run()

    got = project.query("select id, output_text from main.items_batch order by id")
    assert got == [(r["id"], expected_answer(r["id"], r["body"])) for r in rows]
    assert create_calls(emulator) == 2


def test_a_renamed_or_retyped_key_is_rebuilt_with_its_values_and_never_while_batches_are_in_flight(project, emulator):
    # The custom_ids stay the same ('1', '2', ...): answers are reused, but must come back under the
    # key's new name and type, not as NULL; and a key changed with a batch in flight would see that
    # batch's answers come back under the old key while its rows were bought again under the new one.
    rows = [{"id": i, "body": f"body {i}"} for i in range(1, 4)]
    project.load_table("items", rows)
    project.write("prompts/item.j2", "Item: {{ body }}")
    project.configure(replace=False, max_failure_ratio=1, **FAST)
    emulator.set_scenarios([{"name": "result_outcome", "custom_ids": ["3"], "outcome": "invalid_request_error"}])
    project.run()
    emulator.clear_scenarios()
    project.write("models/stg_items.sql", "select id as item_id, body from raw.items\n")
    project.write_model(unique_key="item_id")
    project.configure(replace=False, key="item_id")

    project.dbt("run", "--full-refresh", "-s", "+items_batch")

    assert create_calls(emulator) == 1  # the same requests: nothing bought again
    assert project.query("select item_id, output_text from main.items_batch order by 1") == [
        (1, emulator_answer("Item: body 1")), (2, emulator_answer("Item: body 2"))]
    assert project.query("select item_id, kind from main.items_batch__failures") == [(3, "errored")]

    project.write("models/stg_items.sql", "select item_id::varchar as item_id, body from "
                  "(select id as item_id, body from raw.items)\n")
    out = project.run(expect_ok=False).stdout
    assert ("Setting `key` of main.items_batch changed: column item_id from BIGINT to VARCHAR: rebuild the table"
            in out), out
    project.dbt("run", "--full-refresh", "-s", "+items_batch")
    assert project.query("select item_id, output_text from main.items_batch order by 1") == [
        ("1", emulator_answer("Item: body 1")), ("2", emulator_answer("Item: body 2"))]
    assert create_calls(emulator) == 1

    # Another column whose values are the old key's values for other rows: refused before anything is
    # written, as the old answers would be taken for the wrong rows.
    retyped = "select item_id::varchar as item_id, (4 - item_id) as other, body from (select id as item_id, body from raw.items)\n"
    project.write("models/stg_items.sql", retyped)
    project.write_model(unique_key="other")
    project.configure(replace=False, key="other")
    out = project.dbt("run", "--full-refresh", "-s", "+items_batch", expect_ok=False).stdout
    assert "rows of the new key take custom_ids that other rows had under the old one (custom_id " in out, out
    assert "dbt-claude-batch answers export --model items_batch" in out and create_calls(emulator) == 1
    project.write_model(unique_key="item_id")
    project.configure(replace=False, key="item_id")

    emulator.configure(processing_delay=3600)
    project.load_table("items", rows + [{"id": 4, "body": "body 4"}])
    project.configure(replace=False, wait_seconds=0)
    project.run()  # row 4 in flight (not waited for)
    project.write("models/stg_items.sql", "select id, body from raw.items\n")
    project.write_model(unique_key="id")
    project.configure(replace=False, key="id")
    out = project.dbt("run", "--full-refresh", "-s", "+items_batch", expect_ok=False).stdout
    assert "Setting `key` of main.items_batch changed while 1 batch(es) are in flight" in out, out
    assert create_calls(emulator) == 2


def test_answers_of_the_old_key_never_come_back_after_a_rebuild_that_bought_everything(project, emulator):
    # The rebuild on the new key left the table empty (its requests in flight): the next run's merge must
    # bring the new key's answers only, not every answer held under the old key (their new key NULL).
    rows = [{"id": i, "code": f"c{i}", "body": f"body {i}"} for i in range(1, 4)]
    project.load_table("items", rows)
    project.write("prompts/item.j2", "Item: {{ body }}")
    project.configure(replace=False, **FAST)
    project.run()
    project.write("prompts/item.j2", "Item, again: {{ body }}")
    project.write_model(unique_key="code")
    project.configure(replace=False, key="code", wait_seconds=0)
    emulator.configure(processing_delay=3600)
    project.dbt("run", "--full-refresh", "-s", "+items_batch", vars={"claude_batch_allow_rebuy": True})
    assert project.query("select count(*) from main.items_batch") == [(0,)]
    emulator.client().messages.batches.retrieve(created_batches(emulator)[-1]["id"])  # its first view
    emulator.advance_clock(3601)
    project.run()
    assert project.query("select code, output_text from main.items_batch order by 1") == [
        (f"c{i}", emulator_answer(f"Item, again: body {i}")) for i in range(1, 4)]


def test_a_new_key_value_equal_to_a_custom_id_the_old_key_left_starts_afresh(project, emulator):
    """After a key change, the old key's custom_ids that no row took over keep their history for the bill
    and for reuse by exact request, never as a key's: a later row whose new key takes one of those
    custom_ids is a new key. It never shows the old row's answer, and is never taken as answered."""
    rows = [{"id": i, "ticket": 100 + i, "body": f"body {i}"} for i in range(1, 5)]
    project.load_table("items", rows)
    project.write("prompts/item.j2", "Ticket: {{ body }}")
    project.configure(replace=False, max_failure_ratio=1, **FAST)
    project.run()
    project.write_model(unique_key="ticket")
    project.configure(replace=False, key="ticket")
    out = project.dbt("run", "--full-refresh", "-s", "+items_batch").stdout
    assert create_calls(emulator) == 1  # the same requests under new custom_ids: answered from state
    # The state views follow the new key in the same run (all_failures packs each model's key columns).
    assert "could not write the view" not in out, out
    assert project.query("select count(*) from dbt_claude_batch.all_failures") == [(0,)]
    # Ticket 2 takes custom_id 2 (id 2's) and its request fails; ticket 3 takes id 3's, with its very text.
    rows += [{"id": 9, "ticket": 2, "body": "another ticket"}, {"id": 10, "ticket": 3, "body": "body 3"}]
    project.load_table("items", rows)
    emulator.set_scenarios([{"name": "result_outcome", "custom_ids": ["2"], "outcome": "invalid_request_error"}])

    project.run()

    results = {r[0]: r[1] for r in project.query("select ticket, output_text from main.items_batch")}
    assert sorted(results, key=str) == sorted([101, 102, 103, 104, 3], key=str), results
    assert results[3] == results[103]  # the same request: answered by it, under its own key
    assert [(r["ticket"], r["kind"]) for r in project.failures().values()] == [(2, "errored")]
    assert create_calls(emulator) == 2 and [r["custom_id"] for r in row_requests(emulator)][4:] == ["2"]
    # The old key is an earlier key: `forget` (the CLI and the macro) finds what is held under it, which is
    # the retired history only: ticket 101 (id 1) and ticket 104 (id 4) keep their own.
    done = subprocess.run([CLI, "forget", "--model", "main.items_batch", "--key", "id=1", "--project-dir",
                           str(project.root)], env=project.env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    project.dbt("run-operation", "dbt_claude_batch.forget", "--args", "{model: items_batch, key: {id: 4}}")
    assert project.query("select key_json::varchar from dbt_claude_batch.requests where json_keys(key_json) = "
                         "['id'] order by 1") == [('{"id":2}',), ('{"id":3}',)]
    assert project.query("select count(*) from dbt_claude_batch.outcomes where custom_id like 'erased-%'") == [(2,)]
    assert sorted(project.results(), key=str) == sorted([101, 102, 103, 104, 3], key=str)
