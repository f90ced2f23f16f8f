"""An answer is bought once: reverted edits, copied files and key changes reuse what state holds."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from dbt_harness import DbtProject, create_calls, created_batches, expected_answer, items, row_requests

FAST = {"wait_seconds": 60, "poll_interval_seconds": 0.05}
CLI = str(Path(sys.executable).parent / "dbt-claude-batch")


def test_a_reverted_template_edit_reuses_the_answer_instead_of_buying_it_again(project, emulator):
    rows = items(6)
    project.load_table("items", rows)
    project.configure(replace=False, **FAST)
    project.run()
    first = {k: v["output_text"] for k, v in project.results().items()}

    project.write("prompts/item.j2", "Changed {{ id }}: {{ body }}")
    project.run()
    assert create_calls(emulator) == 2
    project.write("prompts/item.j2", "Item {{ id }}: {{ body }}")  # reverted

    out = project.run().stdout

    assert create_calls(emulator) == 2  # nothing bought
    assert "6 requests already answered in state: reused, not bought again" in out
    results = project.results()
    (batch1, _) = [b["id"] for b in created_batches(emulator)]
    for row in rows:
        got = results[row["id"]]
        assert got["output_text"] == first[row["id"]] == expected_answer(row["id"], row["body"])
        assert got["attempt"] == 3 and got["cost_usd"] == 0.0 and got["shared_from"] == str(row["id"])
    assert project.query("select distinct reused_from from dbt_claude_batch.outcomes where reused_from is not null") == [
        (batch1,)]
    assert project.query("select kind, n_submitted, n_succeeded from main.items_batch__batches where kind = 'reuse'") == [
        ("reuse", 6, 6)]


def test_an_errored_bad_edit_reverted_reuses_the_first_answer(project, emulator):
    rows = items(4)
    project.load_table("items", rows)
    project.configure(replace=False, **FAST)
    project.run()
    # A model name the API does not know, let through on purpose: every row comes back errored.
    project.configure(replace=False, model="claude-haiku-9", extra_models=["claude-haiku-9"])
    project.run(expect_ok=False)  # red: every request failed for a reason no retry fixes
    assert {f["error_type"] for f in project.failures().values()} == {"invalid_request_error"}
    project.configure(replace=False, model="claude-haiku-4-5", extra_models=None)

    project.run()

    assert create_calls(emulator) == 2
    assert project.failures() == {}
    assert {r["attempt"] for r in project.results().values()} == {3}
    assert len(row_requests(emulator)) == 8


def test_a_new_row_asking_what_another_row_was_answered_reuses_it(project, emulator):
    project.write("prompts/item.j2", "Text: {{ body }}")
    project.load_table("items", [{"id": 1, "body": "same question"}])
    project.configure(replace=False, **FAST)
    project.run()
    project.load_table("items", [{"id": 1, "body": "same question"}, {"id": 2, "body": "same question"}])

    project.run()

    assert create_calls(emulator) == 1
    assert project.results()[2]["output_text"] == project.results()[1]["output_text"]
    assert project.results()[2]["shared_from"] == "1"


def test_a_copied_and_renamed_database_file_keeps_its_state(project, emulator):
    rows = items(5)
    project.load_table("items", rows)
    project.configure(replace=False, **FAST)
    project.run()
    copy = project.root / "promoted.duckdb"
    shutil.copy(project.db_path, copy)
    profiles = yaml.safe_load((project.root / "profiles.yml").read_text())
    profiles["test_project"]["outputs"]["dev"]["path"] = str(copy)
    project.write("profiles.yml", yaml.safe_dump(profiles))
    project.db_path = copy

    project.run()
    rows.append({"id": 6, "body": "a new row"})
    project.load_table("items", rows)
    project.run()

    assert [b["request_count"] for b in created_batches(emulator)] == [5, 1]
    assert len(project.results()) == 6


def test_models_of_the_same_name_in_two_schemas_keep_separate_state(project, emulator, tmp_path):
    rows = items(3)
    project.load_table("items", rows)
    project.configure(replace=False, **FAST)
    project.run()
    other = DbtProject(tmp_path / "other", emulator)
    other.write("prompts/item.j2", "Other {{ id }}: {{ body }}")
    other.configure(replace=False, **FAST)
    profiles = yaml.safe_load((other.root / "profiles.yml").read_text())
    profiles["test_project"]["outputs"]["dev"].update(path=str(project.db_path), schema="alt")
    other.write("profiles.yml", yaml.safe_dump(profiles))
    other.db_path = project.db_path
    other.write("models/stg_items.sql", "select * from raw.items\n")

    other.run()

    assert create_calls(emulator) == 2
    assert sorted(r[0] for r in project.query("select model_id from dbt_claude_batch.models")) == [
        "alt.items_batch", "main.items_batch"]
    alt = other.rows_by_key("alt.items_batch")
    assert all(alt[r["id"]]["output_text"] != project.results()[r["id"]]["output_text"] for r in rows)


def test_changing_state_schema_warns_before_buying_again(project, emulator):
    project.load_table("items", items(3))
    project.configure(replace=False, **FAST)
    project.run()
    project.configure(replace=False, state_schema="other_state")

    out = project.run().stdout

    assert "state_schema is 'other_state', which has no state for this model, but 'dbt_claude_batch' has" in out
    assert create_calls(emulator) == 2


def test_a_renamed_model_is_stopped_before_buying_what_its_old_name_holds(project, emulator, tmp_path):
    """A model's state is its name's: a renamed model holds nothing, and would buy every row again. Its
    first run is stopped by the re-buy guard, which names the model holding the answers and the way to
    reuse them (export, import), before any create."""
    rows = items(5)
    project.load_table("items", rows)
    project.configure(replace=False, **FAST)
    project.run()
    answers = {k: v["output_text"] for k, v in project.results().items()}
    # Two rows edited and bought again, then reverted: the old name's latest answers for them are the
    # edits', and the requests the new name would buy are held only in its history (found by a user
    # test: the guard counted latest answers only, and the copy bought those again unwarned).
    project.load_table("items", [dict(r, body=r["body"] + " edited") if r["id"] <= 2 else r for r in rows])
    project.run()
    project.load_table("items", rows)
    (project.root / f"models/{project.model}.py").unlink()
    project.model = "tickets_batch"
    project.rebuy_guard = True
    project.configure(replace=False)
    project.write_model()

    out = project.run(expect_ok=False).stdout

    assert ("This run would buy 5 requests whose answers main.items_batch already holds in this state (the same "
            "requests, by sha256: was the model renamed or copied?): nothing was submitted.") in out, out
    assert "dbt-claude-batch answers export --model main.items_batch --to answers.parquet" in out
    assert create_calls(emulator) == 2
    exported = tmp_path / "answers.parquet"
    for args in (("export", "--database", str(project.db_path), "--model", "main.items_batch", "--to", str(exported)),
                 ("import", "--database", str(project.db_path), "--from", str(exported))):
        done = subprocess.run([CLI, "answers", *args], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr

    project.run()

    assert create_calls(emulator) == 2
    assert {k: v["output_text"] for k, v in project.results().items()} == answers
