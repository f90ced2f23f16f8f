"""One API key, several environments: an unanswered create is settled only by proof.

Two dbt projects (`prod` and `dev`), each with its own DuckDB file, share one emulator (one workspace
key), stage the same keys and make batches of the same size with different prompts. The answers in
prod's tables must always be answers to prod's prompt, nothing may be bought twice, and no
submission may stay in doubt once its candidates have ended.
"""

from __future__ import annotations


import pytest

from dbt_harness import DbtProject, create_calls, created_batches, emulator_answer, items

FAST = {"wait_seconds": 60, "poll_interval_seconds": 0.05}
ROWS = items(12)



@pytest.fixture
def prod(tmp_path, emulator) -> DbtProject:
    project = DbtProject(tmp_path / "prod", emulator)
    project.load_table("items", ROWS)
    return project


@pytest.fixture
def dev(tmp_path, emulator) -> DbtProject:
    project = DbtProject(tmp_path / "dev", emulator)
    project.load_table("items", ROWS)
    project.write("prompts/item.j2", "DEV {{ id }}: {{ body }}")
    return project


def _assert_prod_answers(project: DbtProject) -> None:
    results = project.results()
    assert len(results) == len(ROWS)
    for row in ROWS:
        assert results[row["id"]]["output_text"] == emulator_answer(f"Item {row['id']}: {row['body']}")


def _look_at_every_batch(emulator) -> None:
    """Another client lists the batches, as any environment sharing the key may at any time (a fresh
    batch shows `in_progress` on its first access, whatever its processing time)."""
    list(emulator.client().messages.batches.list(limit=100))


def _submissions(project: DbtProject) -> list[tuple]:
    return project.query("select status, batch_id, note from dbt_claude_batch.submissions order by intent_at")


def test_a_dropped_create_never_adopts_another_environments_batch(prod, dev, emulator):
    emulator.configure(processing_delay=3600)
    dev.configure(replace=False, wait_seconds=0)
    dev.run()
    (dev_batch,) = created_batches(emulator)

    emulator.add_scenario({"name": "drop_create", "when": "before", "times": 1})
    prod.configure(replace=False, wait_seconds=0, in_doubt_grace_seconds=0)
    out = prod.run().stdout
    assert "proof pending" in out and dev_batch["id"] in out
    assert [s[0] for s in _submissions(prod)] == ["in_doubt"]  # its rows wait while the candidate runs
    assert prod.results() == {}

    emulator.advance_clock(3601)
    emulator.configure(processing_delay=0)  # prod's resubmission ends at once
    prod.configure(replace=False, in_doubt_grace_seconds=0, **FAST)
    out = prod.run().stdout
    assert f"batch {dev_batch['id']} is not ours" in out
    assert "abandoned" in out
    _assert_prod_answers(prod)
    assert prod.query("select batch_id from dbt_claude_batch.foreign_batches") == [(dev_batch["id"],)]
    assert prod.query("select count(*) from dbt_claude_batch.outcomes where batch_id = ?", [dev_batch["id"]]) == [(0,)]
    assert [s[0] for s in _submissions(prod)] == ["abandoned", "submitted"]

    dev.configure(replace=False, **FAST)
    dev.run()
    assert {r["output_text"] for r in dev.results().values()} == {
        emulator_answer(f"DEV {r['id']}: {r['body']}") for r in ROWS}


@pytest.mark.parametrize("dev_first", [True, False], ids=["dev-batch-before", "dev-batch-after"])
def test_a_lost_create_response_adopts_only_the_batch_carrying_its_marker(prod, dev, emulator, dev_first):
    emulator.configure(processing_delay=3600)
    dev.configure(replace=False, wait_seconds=0)
    prod.configure(replace=False, wait_seconds=0)
    if dev_first:
        dev.run()
    emulator.add_scenario({"name": "drop_create", "when": "after", "times": 1})
    prod.run()
    if not dev_first:
        dev.run()
    (lost,) = emulator.ledger(requests=False)["dropped_creates"]
    dev_batch = next(b for b in created_batches(emulator) if b["id"] != lost["batch_id"])
    assert [s[0] for s in _submissions(prod)] == ["in_doubt"]

    _look_at_every_batch(emulator)
    emulator.advance_clock(3601)
    prod.configure(replace=False, **FAST)
    out = prod.run().stdout
    assert f"adopted batch {lost['batch_id']}" in out
    _assert_prod_answers(prod)
    assert create_calls(emulator) == 2  # prod's one create (unanswered) and dev's: nothing bought twice
    assert prod.query("select status, batch_id from dbt_claude_batch.submissions") == [("submitted", lost["batch_id"])]
    assert prod.query("select count(*) from dbt_claude_batch.outcomes where batch_id = ?", [dev_batch["id"]]) == [(0,)]
    # Listed newest first: a newer batch of dev's is checked (and shown foreign) before prod's own.
    foreign = [] if dev_first else [(dev_batch["id"],)]
    assert prod.query("select batch_id from dbt_claude_batch.foreign_batches") == foreign

    prod.run()  # settled for good: nothing more is created
    assert create_calls(emulator) == 2


def test_a_batch_created_before_the_intent_is_never_a_candidate(prod, dev, emulator):
    emulator.configure(processing_delay=3600)
    dev.configure(replace=False, wait_seconds=0)
    dev.run()
    emulator.add_scenario({"name": "drop_create", "when": "before", "times": 1})
    prod.configure(replace=False, in_doubt_grace_seconds=0, clock_skew_seconds=0, **FAST)
    emulator.advance_clock(3601)  # dev's batch has ended, so only the time rule can keep it out
    emulator.configure(processing_delay=0)

    out = prod.run().stdout

    assert "not ours" not in out and "proof pending" not in out
    assert prod.query("select count(*) from dbt_claude_batch.foreign_batches") == [(0,)]
    assert [s[0] for s in _submissions(prod)] == ["abandoned"]  # at once: grace 0, no candidate at all
    prod.run()
    assert [s[0] for s in _submissions(prod)] == ["abandoned", "submitted"]
    _assert_prod_answers(prod)


def test_after_reset_batch_state_the_old_batch_is_not_adopted(prod, emulator):
    prod.configure(replace=False, **FAST)
    prod.run()
    (old,) = created_batches(emulator)
    prod.dbt("run-operation", "dbt_claude_batch.reset_batch_state", "--args", "{model: items_batch}")
    prod.write("prompts/item.j2", "Item {{ id }}: {{ body }} (v2)")
    emulator.add_scenario({"name": "drop_create", "when": "after", "times": 1})

    out = prod.run().stdout

    (lost,) = emulator.ledger(requests=False)["dropped_creates"]
    assert f"adopted batch {lost['batch_id']}" in out
    assert prod.query("select batch_id from dbt_claude_batch.foreign_batches") == [(old["id"],)]
    results = prod.results()
    assert all(results[r["id"]]["output_text"] == emulator_answer(f"Item {r['id']}: {r['body']} (v2)") for r in ROWS)
    assert create_calls(emulator) == 2


def test_kill_9_during_settle_then_the_next_run_finishes_it(prod, dev, emulator):
    emulator.configure(processing_delay=3600)
    prod.configure(replace=False, wait_seconds=0)
    emulator.add_scenario({"name": "drop_create", "when": "after", "times": 1})
    prod.run()
    dev.configure(replace=False, wait_seconds=0)
    dev.run()  # newer than prod's batch: listed, and checked, first
    _look_at_every_batch(emulator)
    emulator.advance_clock(3601)
    prod.configure(replace=False, **FAST)

    prod.run_and_kill(line=r"is not ours")

    # Killed mid-settle (or a moment later): the submission is still in doubt, or already adopted.
    assert [s[0] for s in _submissions(prod)] in (["in_doubt"], ["submitted"])
    out = prod.run().stdout
    assert "adopted batch" in out
    _assert_prod_answers(prod)
    assert create_calls(emulator) == 2
