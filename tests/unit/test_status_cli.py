"""`dbt-claude-batch status` in-process: clear errors when there is nothing to show, the snapshot under a lock,
the text and JSON renderings, and finding the DuckDB file the way dbt does."""

from __future__ import annotations

import datetime as dt
import io
import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import yaml

from dbt_claude_batch.observe.cli import main
from dbt_claude_batch.base.errors import ConfigError
from dbt_claude_batch.state.snapshot import snapshot_path, write_snapshot
from dbt_claude_batch.state.state import State
from dbt_claude_batch.observe.status import duration, progress_bar, render_text
from dbt_claude_batch.state.warehouse import Location, database_file

S = "dbt_claude_batch"


def _status(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["status", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _state_db(path: Path, with_model: bool = True) -> None:
    con = duckdb.connect(str(path))
    State(con, S, "main.tickets").ensure()
    if with_model:
        con.execute(f'insert into "{S}".models (model_id, key_columns, key_types, updated_at) '
                    "values ('main.tickets', '[\"id\"]', '{}', ?)", [dt.datetime(2026, 3, 1, 12)])
        con.execute(f"""insert into "{S}".batches (batch_id, model_id, submission_id, processing_status, created_at,
            expires_at, n_submitted, n_processing, n_succeeded, n_errored, kind)
            values ('msgbatch_1', 'main.tickets', 's', 'in_progress', now()::timestamp, now()::timestamp + interval 1 day,
                    10, 7, 3, 0, 'batch')""")
    con.close()


def test_nothing_to_show_is_one_clear_line_and_exit_1(tmp_path, capsys):
    code, out, err = _status(capsys, "--database", str(tmp_path / "missing.duckdb"))
    assert code == 1 and out == "" and err.startswith("dbt-claude-batch status: No DuckDB file at ")
    assert not (tmp_path / "missing.duckdb").exists()  # read-only: never creates the file

    duckdb.connect(str(tmp_path / "empty.duckdb")).close()
    code, _, err = _status(capsys, "--database", str(tmp_path / "empty.duckdb"))
    assert code == 1 and "No state schema 'dbt_claude_batch'" in err

    _state_db(tmp_path / "fresh.duckdb", with_model=False)
    code, _, err = _status(capsys, "--database", str(tmp_path / "fresh.duckdb"))
    assert code == 1 and "No batch models yet" in err

    code, _, err = _status(capsys, "--project-dir", str(tmp_path))
    assert code == 1 and "No dbt_project.yml" in err


@pytest.fixture
def locked(tmp_path):
    """A DuckDB file with state, locked by another process for the duration of the test."""
    db = tmp_path / "warehouse.duckdb"
    _state_db(db)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('locked', flush=True); "
                               "sys.stdin.read()", str(db)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    yield db
    holder.stdin.close()
    holder.wait(timeout=30)


def test_locked_database_without_a_snapshot_says_so(locked, capsys):
    code, out, err = _status(capsys, "--database", str(locked))
    assert code == 1 and out == ""
    assert "is locked by a running dbt and there is no status snapshot" in err.splitlines()[0]


def test_locked_database_is_shown_from_its_snapshot(locked, capsys):
    src = duckdb.connect()  # the snapshot a run would have written (the file itself cannot be opened now)
    State(src, S, "main.tickets").ensure()
    src.execute(f"""insert into "{S}".models (model_id, key_columns, key_types, updated_at)
                    values ('main.tickets', '[]', '{{}}', now()::timestamp)""")
    write_snapshot(src, S, snapshot_path(str(locked)))

    code, out, err = _status(capsys, "--database", str(locked))
    assert code == 0, err
    assert "Showing the snapshot taken at" in out and "main.tickets" in out
    code, out, _ = _status(capsys, "--database", str(locked), "--json")
    doc = json.loads(out)
    assert code == 0 and doc["source"]["kind"] == "snapshot" and doc["per_row"] is False


def test_text_shows_progress_bars_expiry_spend_and_failures(tmp_path, capsys):
    _state_db(tmp_path / "w.duckdb")
    code, out, _ = _status(capsys, "--database", str(tmp_path / "w.duckdb"))
    assert code == 0
    assert "msgbatch_1  [#########.....................]  3 succeeded, 0 errored, 7 processing of 10" in out
    assert "expires in 23h59m" in out or "expires in 1d00h" in out
    assert "committed unknown for 10 requests in flight (no harvested batch to estimate from)" in out
    assert "failures: none" in out


def test_watch_refreshes_until_interrupted(tmp_path, monkeypatch):
    _state_db(tmp_path / "w.duckdb")
    from dbt_claude_batch.observe import status

    sleeps = []

    def interrupt_on_second(seconds):  # the refresh wait; a user's Ctrl-C arrives during the second one
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(status.time, "sleep", interrupt_on_second)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)  # no live counts: never a real API
    out = io.StringIO()
    assert status.run(lambda: str(tmp_path / "w.duckdb"), S, as_json=True, watch=2.5, out=out) == 0
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(docs) == 2 and sleeps == [2.5, 2.5] and docs[0]["models"][0]["model_id"] == "main.tickets"


def test_progress_bar_and_durations():
    assert progress_bar(10, 0, 0, width=10) == "[##########]"
    assert progress_bar(5, 1, 4, width=10) == "[#####x....]"
    assert progress_bar(0, 0, 0, width=4) == "[    ]"
    assert [duration(s) for s in (5, 125, 3 * 3600 + 5 * 60, 2 * 86400 + 4 * 3600, -90)] == [
        "5s", "2m05s", "3h05m", "2d04h", "-1m30s"]


def test_render_says_when_committed_is_unknown_and_failures_need_you():
    doc = {"state_schema": S, "state_version": 4, "generated_at": "2026-03-01T12:00:00Z",
           "source": {"kind": "database", "database": "w.duckdb"},
           "models": [{"model_id": "main.t", "last_run": {"at": "2026-03-01T11:00:00Z", "from": "runs", "outcome": "ok",
                                                         "n_submitted": 5, "cost_usd": 0.25},
                       "in_flight": {"batches": 0, "requests": 0, "creates_in_doubt": 1}, "batches_in_flight": [],
                       "spend": {"billed_usd": 1.5, "billed_from": "outcomes", "billed_requests": 9,
                                 "unpriced_outcomes": 0, "committed_usd": 0.0, "avg_request_usd": None,
                                 "requests_in_flight": 0},
                       "failures": {"total": 3, "needs_you": 1, "from": "view", "by_kind": [
                           {"kind": "errored", "error_type": "invalid_request_error", "retried_automatically": False,
                            "count": 1, "next_action": "fix the request", "example_message": "bad"},
                           {"kind": "expired", "error_type": None, "retried_automatically": True, "count": 2,
                            "next_action": "resubmitted as it is on the next dbt run (attempt 2)",
                            "example_message": None}]}}]}
    text = render_text(doc, now=dt.datetime(2026, 3, 1, 12, 0, 30))
    assert "main.t · last ran 1h00m ago (2026-03-01 11:00:00 UTC) (ok, 5 submitted, $0.2500)" in text
    assert "in flight: nothing, 1 create(s) in doubt" in text
    assert "spend: $1.5000 billed (9 requests, every attempt); nothing committed" in text
    assert "failures: 3 (1 need you)" in text
    assert "errored/invalid_request_error    needs you: fix the request" in text
    assert "expired                          retried automatically: resubmitted" in text


# -- finding the file as dbt does --------------------------------------------------------------------
def _project(tmp_path: Path, path: str, target: str = "dev", profile_dir: Path | None = None) -> Path:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "dbt_project.yml").write_text(yaml.safe_dump({"name": "p", "profile": "shop"}))
    profiles = profile_dir or project
    profiles.mkdir(exist_ok=True)
    (profiles / "profiles.yml").write_text(yaml.safe_dump({"shop": {"target": target, "outputs": {
        "dev": {"type": "duckdb", "path": path}, "prod": {"type": "duckdb", "path": "/data/prod.duckdb"},
        "pg": {"type": "postgres"}}}}))
    return project


def test_relative_path_is_taken_from_the_project_dir(tmp_path, monkeypatch):
    project = _project(tmp_path, "data/dev.duckdb")
    monkeypatch.delenv("DBT_TARGET", raising=False)
    monkeypatch.setenv("DBT_PROFILES_DIR", str(project))
    monkeypatch.chdir(tmp_path)
    assert database_file(Location(project_dir=str(project))) == str(project / "data" / "dev.duckdb")
    assert database_file(Location(project_dir=str(project), target="prod")) == "/data/prod.duckdb"
    monkeypatch.setenv("DBT_TARGET", "prod")
    assert database_file(Location(project_dir=str(project))) == "/data/prod.duckdb"
    with pytest.raises(ConfigError, match="type 'postgres'"):
        database_file(Location(project_dir=str(project), target="pg"))
    with pytest.raises(ConfigError, match="no target 'nope'"):
        database_file(Location(project_dir=str(project), target="nope"))


def test_env_var_in_the_path_and_profiles_dir_lookup(tmp_path, monkeypatch):
    home_profiles = tmp_path / "elsewhere"
    project = _project(tmp_path, "{{ env_var('WAREHOUSE_DIR') }}/w.duckdb", profile_dir=home_profiles)
    monkeypatch.delenv("DBT_TARGET", raising=False)
    monkeypatch.delenv("DBT_PROFILES_DIR", raising=False)
    monkeypatch.chdir(project)  # no profiles.yml here: --profiles-dir must say where
    monkeypatch.setenv("WAREHOUSE_DIR", "/srv/wh")
    assert database_file(Location(profiles_dir=str(home_profiles))) == "/srv/wh/w.duckdb"
    monkeypatch.delenv("WAREHOUSE_DIR")
    with pytest.raises(ConfigError, match="env_var\\('WAREHOUSE_DIR'\\), which is not set"):
        database_file(Location(profiles_dir=str(home_profiles)))


def test_a_stopped_run_says_what_it_left_unsent():
    """A run stopped by Ctrl-C leaves rows unsubmitted that no batch or failure shows: status says so from
    the run's note (found by a user test: `status` after a stop looked as if nothing were pending)."""
    note = ("stopped by Ctrl-C: this run submitted 2 request(s) before the stop and 28 were not submitted (they "
            "stay pending); the next dbt run continues from here")
    doc = {"state_schema": S, "state_version": 4, "generated_at": "2026-03-01T12:00:00Z",
           "source": {"kind": "database", "database": "w.duckdb"},
           "models": [{"model_id": "main.t", "last_run": {"at": "2026-03-01T11:00:00Z", "from": "runs",
                                                         "outcome": "stopped", "n_submitted": 2, "note": note},
                       "in_flight": {"batches": 0, "requests": 0, "creates_in_doubt": 0}, "batches_in_flight": [],
                       "spend": {"billed_usd": 0.0, "billed_from": "outcomes", "billed_requests": 0,
                                 "unpriced_outcomes": 0, "committed_usd": 0.0, "avg_request_usd": None,
                                 "requests_in_flight": 0},
                       "failures": {"total": 0, "needs_you": 0, "from": "view", "by_kind": []}}]}
    text = render_text(doc, now=dt.datetime(2026, 3, 1, 12, 0, 30))
    assert ("  last run stopped: this run submitted 2 request(s) before the stop and 28 were not submitted (they "
            "stay pending); the next dbt run continues from here") in text.splitlines()
    ok = {**doc, "models": [{**doc["models"][0], "last_run": {**doc["models"][0]["last_run"], "outcome": "ok"}}]}
    assert "last run stopped" not in render_text(ok, now=dt.datetime(2026, 3, 1, 12, 0, 30))
