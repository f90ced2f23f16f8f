"""Settings, params and vars that are wrong in a way a user makes every day: refused before any spend,
with a first line that names what is wrong and what to do (issue 17, sections 3 and 6)."""

from __future__ import annotations

import json

import duckdb

from dbt_harness import create_calls, items

FAST = {"wait_seconds": 60, "poll_interval_seconds": 0.05}
SECRET = "sk-ant-api03-PASTED-INTO-PARAMS-0a1b2c3d4e5f"


def _error_line(out: str, needle: str) -> str:
    """The line dbt shows for a failed model (its first line of our message)."""
    return next(line for line in out.splitlines() if needle in line)


def _cells_holding(db_path, needle: str) -> list[str]:
    """Every table of the DuckDB file (state, results, views' tables) with a cell that holds `needle`."""
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        found = []
        for schema, table in con.execute("select table_schema, table_name from information_schema.tables "
                                         "where table_type = 'BASE TABLE'").fetchall():
            if any(needle in repr(row) for row in con.execute(f'select * from "{schema}"."{table}"').fetchall()):
                found.append(f"{schema}.{table}")
        return found
    finally:
        con.close()


def test_a_key_in_params_is_refused_and_lands_nowhere_we_write(project, emulator, tmp_path):
    workdir = tmp_path / "work"
    project.env_overrides["DBT_CLAUDE_BATCH_WORKDIR"] = str(workdir)
    project.load_table("items", items(3))
    project.configure(replace=False, **FAST)
    project.run()  # state, answers and results exist: there is something to leak into
    assert create_calls(emulator) == 1

    project.configure(replace=False, params={"metadata": {"user_id": SECRET}})
    proc = project.run(expect_ok=False)

    line = _error_line(proc.stdout, "looks like an Anthropic API key")
    assert "Setting `params` holds what looks like an Anthropic API key" in line
    assert "use the ANTHROPIC_API_KEY environment variable" in line
    assert create_calls(emulator) == 1  # nothing was submitted
    assert SECRET not in proc.stdout and SECRET not in proc.stderr
    assert SECRET not in (project.root / "logs" / "dbt.log").read_text()
    # dbt copies the model's compiled code, config included, into run_results.json: that is dbt's own
    # copy of what the YAML says (as manifest.json is); everything else there, our message too, is clean.
    results = json.loads((project.root / "target" / "run_results.json").read_text())
    for result in results["results"]:
        result.pop("compiled_code", None)
    assert SECRET not in json.dumps(results)
    assert "looks like an Anthropic API key" in results["results"][-1]["message"]
    assert _cells_holding(project.db_path, SECRET) == []
    assert not [p for p in workdir.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]

    # A Messages API parameter that does not exist is refused too, before any create.
    project.configure(replace=False, params={"metdata": {"user_id": "u1"}})
    line = _error_line(project.run(expect_ok=False).stdout, "metdata")
    assert "Parameter `metdata` in `params` is not a Messages API parameter: did you mean `metadata`?" in line
    # So is a misspelt var of this package.
    project.configure(replace=False, params={})
    line = _error_line(project.run(vars={"claude_batch_cancle": True}, expect_ok=False).stdout, "claude_batch_cancle")
    assert "Unknown var `claude_batch_cancle`: did you mean `claude_batch_cancel`?" in line
    assert create_calls(emulator) == 1


def test_a_model_without_a_price_is_named_and_never_estimated_at_zero(project, emulator):
    project.load_table("items", items(3))
    project.configure(replace=False, model="claude-haiku-9", max_cost_usd=5, **FAST)

    # A misspelt model: the name is what is wrong, not its price.
    line = _error_line(project.run(expect_ok=False).stdout, "is not a model the API lists")
    assert "Model 'claude-haiku-9' (from setting `model`) is not a model the API lists for this key" in line

    # A model the API takes but no price is known for: named, with the priced ones and how to add it.
    project.configure(replace=False, extra_models=["claude-haiku-9"])
    line = _error_line(project.run(expect_ok=False).stdout, "No price known for model(s) claude")
    assert "No price known for model(s) claude-haiku-9" in line
    assert "claude-haiku-4-5" in line and "`prices`" in line
    assert create_calls(emulator) == 0

    # Without a budget it is sent, and the estimate says it has no price instead of $0.
    project.configure(replace=False, max_cost_usd=None)
    out = project.run(expect_ok=False).stdout  # the emulator does not know the model either: every row errors
    line = _error_line(out, "source rows, 3 to submit")
    assert "no price known for claude-haiku-9" in line and "$0.0000" not in line
    assert create_calls(emulator) == 1


def test_a_create_refused_for_a_low_credit_balance_passes_the_api_message_through(project, emulator):
    emulator.add_scenario({"name": "credit_balance_too_low", "times": 1})
    project.load_table("items", items(3))
    project.configure(replace=False, **FAST)

    out = project.run(expect_ok=False).stdout

    line = _error_line(out, "Batch create refused")
    assert "Your credit balance is too low to access the Anthropic API" in line
    assert "nothing was submitted" in line and "rows stay pending" in line and "add credits" in line
    assert "fix the request settings" not in line
    assert emulator.ledger()["batches"] == []
    assert project.query("select count(*) from dbt_claude_batch.submissions "
                         "where status in ('creating', 'in_doubt')") == [(0,)]
    project.run()  # credits added: the next run sends the rows
    assert len(project.results()) == 3

    # The same refusal on the synchronous route stops the pass; no row is marked as a bad request, and
    # a request never sent is no attempt: with max_attempts 1 each is still sent by the next run.
    emulator.add_scenario({"name": "credit_balance_too_low", "route": "messages", "times": 1})
    project.load_table("items", items(6))
    project.configure(replace=False, mode="sync", sync_concurrency=1, max_attempts=1, **FAST)
    out = project.run(expect_ok=False).stdout
    line = _error_line(out, "Synchronous calls refused")
    assert "Your credit balance is too low" in line and "add credits" in line and "stay pending" in line
    failures = project.failures()  # nothing a person has to fix in the rows: each goes again as it is
    assert failures and {(f["kind"], f["retried_automatically"]) for f in failures.values()} == {("missing", True)}
    assert {f["error_type"] for f in failures.values()} == {"not_sent"}
    assert all(f["error_message"].startswith("not sent: the account refused") for f in failures.values())
    project.run()
    assert len(project.results()) == 6
