"""Bad input fails before money is spent, with a message that names the row, column or setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbt_harness import items

FAST = {"wait_seconds": 60, "poll_interval_seconds": 0.05}


def _no_api_calls(emulator):
    assert emulator.ledger(requests=False)["calls"] == {}


def test_null_key_fails_naming_the_column(project, emulator):
    project.load_table("items", [{"id": 1, "body": "a"}, {"id": None, "body": "b"}], types={"id": "BIGINT", "body": "VARCHAR"})
    out = project.run(expect_ok=False).stdout
    assert "1 source row(s) have a null key (id)" in out
    assert "nothing was submitted" in out
    _no_api_calls(emulator)
    # The failed run is on record where people look, with the same first line.
    assert project.query("select outcome, starts_with(note, '1 source row(s) have a null key (id)') "
                         "from dbt_claude_batch.all_runs") == [("error", True)]


def test_duplicate_keys_fail_with_examples(project, emulator):
    project.load_table("items", [{"id": 1, "body": "a"}, {"id": 1, "body": "b"}, {"id": 2, "body": "c"}])
    out = project.run(expect_ok=False).stdout
    assert "1 key value(s) of (id) appear on more than one source row" in out
    assert "(1, 2)" in out  # the key and how often it appears
    _no_api_calls(emulator)


def test_template_naming_a_missing_column_fails(project, emulator):
    project.load_table("items", items(3))
    project.write("prompts/item.j2", "Item {{ id }}: {{ body }} from {{ customer_name }}")
    out = project.run(expect_ok=False).stdout
    assert "uses column(s) customer_name that the source does not have" in out
    assert "Source columns: id, body" in out
    _no_api_calls(emulator)


def test_missing_api_key_fails_before_any_work(project, emulator):
    project.load_table("items", items(3))
    project.env_overrides["ANTHROPIC_API_KEY"] = None
    out = project.run(expect_ok=False).stdout
    assert "ANTHROPIC_API_KEY is not set" in out and "ANTHROPIC_BASE_URL" in out
    _no_api_calls(emulator)
    # A key read from a file with its newline: refused before any call, and written nowhere.
    project.env_overrides["ANTHROPIC_API_KEY"] = "sk-ant-filekey0123\n"
    out = project.run(expect_ok=False).stdout
    assert "ANTHROPIC_API_KEY has whitespace or a control character in it" in out
    _no_api_calls(emulator)
    written = [p for p in project.root.rglob("*") if p.is_file() and b"filekey0123" in p.read_bytes()]
    assert written == []


def test_request_too_large_fails_naming_the_row(project, emulator):
    rows = items(4)
    rows[2]["body"] = "x" * 5000
    project.load_table("items", rows)
    project.configure(replace=False, max_batch_bytes=3000)
    out = project.run(expect_ok=False).stdout
    assert 'The request for key {"id":3}' in out and "`max_batch_bytes`" in out
    _no_api_calls(emulator)


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"prompt_templat": "x.j2"}, "Unknown setting `prompt_templat`: did you mean `prompt_template`?"),
        ({"params": {"temperature": 0.2}}, "Parameter `temperature` is rejected by the Messages API"),
        ({"max_tokens": 0}, "Setting `max_tokens` must be a positive integer"),
        ({"prompt_column": "body"}, "Set exactly one of `prompt_template`"),
        ({"max_requests_per_batch": 200_000}, "the API accepts at most 100000 requests per batch"),
    ],
)
def test_bad_settings_are_named(project, emulator, setting, message):
    project.load_table("items", items(2))
    project.configure(replace=False, **setting)
    out = project.run(expect_ok=False).stdout
    assert message in out
    _no_api_calls(emulator)


def test_empty_source_is_a_clean_no_op(project, emulator):
    project.load_table("items", [], types={"id": "BIGINT", "body": "VARCHAR"})
    project.configure(replace=False, **FAST)
    out = project.run().stdout
    assert "0 source rows, nothing to submit" in out
    assert project.results() == {}
    _no_api_calls(emulator)


def test_api_key_never_lands_in_files_or_tables(project, emulator):
    secret = "sk-ant-api03-THIS-KEY-MUST-NOT-LEAK-4242"
    project.env_overrides["ANTHROPIC_API_KEY"] = secret
    project.load_table("items", items(3))
    project.configure(replace=False, **FAST)
    project.run()
    # An error path too: a bad setting makes dbt print a traceback.
    project.configure(replace=False, max_tokens=-1)
    project.run(expect_ok=False)

    leaked = [p for p in Path(project.root).rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaked == []
    assert len(project.results()) == 3
