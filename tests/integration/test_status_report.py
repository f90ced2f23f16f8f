"""`status` and `report` over state built by real dbt runs against the emulator.

One module-scoped project: a first run with injected failures (harvested), then a second that leaves a
batch in flight. The lock test runs last because its dbt run collects that batch.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from browser_harness import load_page, require_chromium
from dbt_harness import DbtProject, created_batches, items
from emulator_harness import EmulatorProcess

from dbt_claude_batch.state.snapshot import write_snapshot

CLI = str(Path(sys.executable).parent / "dbt-claude-batch")
FAULTS = [{"name": "result_outcome", "custom_ids": ["100", "101"], "outcome": "invalid_request_error"},
          {"name": "result_outcome", "custom_ids": ["102", "103", "104"], "outcome": "api_error"}]
CHARTS = ("spend-per-day", "outcome-mix", "turnaround", "tokens", "savings", "top-failures")


def _rows(n: int, start: int = 1) -> list[dict]:
    # bodies repeat every 8 rows and the template leaves the id out: identical requests, de-duplicated
    return [{"id": i, "body": f"ticket text {i % 8}"} for i in range(start, start + n)]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    emulator = EmulatorProcess(tmp_path_factory.mktemp("emulator-state"))
    try:
        project = DbtProject(tmp_path_factory.mktemp("status") / "project", emulator)
        project.write("prompts/item.j2", "Classify this ticket: {{ body }}")
        project.configure(replace=False, wait_seconds=60, poll_interval_seconds=0.05)
        project.load_table("items", _rows(40) + items(24, start=100))
        emulator.set_scenarios(FAULTS)
        project.run()
        emulator.clear_scenarios()
        emulator.configure(processing_delay=3600)
        project.configure(replace=False, wait_seconds=0)
        project.load_table("items", _rows(40) + items(24, start=100) + items(10, start=200))
        project.run()  # submits the retries and the new rows, and leaves them in flight
        yield project, emulator
    finally:
        emulator.stop()


def _batches(emulator) -> list[dict]:
    return emulator.ledger(requests=False)["batches"]


def _cli(project: DbtProject, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """The console script as a user runs it: from elsewhere, finding the database through dbt's conventions."""
    return subprocess.run([CLI, *args, "--project-dir", str(project.root)], cwd=project.root.parent,
                          env=project.env(), capture_output=True, text=True, timeout=timeout)


def test_status_shows_the_batch_in_flight_spend_and_failures(built):
    project, emulator = built
    in_flight = created_batches(emulator)[-1]

    text = _cli(project, "status")
    doc = json.loads(_cli(project, "status", "--json").stdout)

    assert text.returncode == 0, text.stderr
    (model,) = doc["models"]
    (batch,) = model["batches_in_flight"]
    assert batch["batch_id"] == in_flight["id"] and batch["n_submitted"] == in_flight["request_count"]
    assert batch["n_processing"] == in_flight["request_count"] and batch["eta_note"] == "no request finished yet"
    assert 23 * 3600 < batch["expires_in_seconds"] <= 24 * 3600
    assert f"{in_flight['id']}  [{'.' * 30}]  0 succeeded, 0 errored, {in_flight['request_count']} processing" in text.stdout
    # billed: every answer the emulator charged for, replaced ones included; committed: the batch in flight
    spend = model["spend"]
    assert spend["billed_usd"] == pytest.approx(emulator.ledger(requests=False)["bill"]["total_usd"], abs=1e-9)
    assert spend["committed_usd"] == pytest.approx(spend["avg_request_usd"] * in_flight["request_count"])
    assert spend["committed_usd"] > 0 and f"committed ${spend['committed_usd']:.6f}" in text.stdout
    view = dict(((k, e), n) for k, e, n in project.query(
        "select kind, error_type, count(*) from main.items_batch__failures group by all"))
    assert {(g["kind"], g["error_type"]): g["count"] for g in model["failures"]["by_kind"]} == view
    assert view == {("errored", "invalid_request_error"): 2}  # the api_error ones are being retried, in flight
    assert "needs you: fix the request" in text.stdout
    assert doc["source"]["kind"] == "database" and doc["source"]["path"] == str(project.db_path)


def test_report_renders_its_charts_in_headless_chromium(built, tmp_path):
    project, _ = built
    out = tmp_path / "report.html"
    written = _cli(project, "report", "--out", str(out))
    assert written.returncode == 0, written.stderr
    assert f"file://{out}" in written.stdout

    require_chromium()
    screenshot = tmp_path / "report.png"
    page = load_page(out, screenshot=screenshot, checks={"bars": """JSON.stringify(Object.fromEntries(
        [...document.querySelectorAll('svg.chart')].map(s => [s.dataset.chart,
            [...s.querySelectorAll('rect.bar')].map(b => b.dataset.series)])))"""})
    print(f"report screenshot: {screenshot}")

    assert page.console_errors == [] and page.external_requests == []
    bars = json.loads(page.evaluate["bars"])
    assert sorted(bars) == sorted(CHARTS) and all(bars[c] for c in CHARTS)
    assert {"succeeded", "errored", "de-duplicated"} <= set(bars["outcome-mix"])
    assert "saved: de-duplication" in bars["savings"] and "in flight (so far)" in bars["turnaround"]
    assert "No data yet" not in page.dom and page.dom.count("axis-label x-label") == len(CHARTS)
    assert screenshot.stat().st_size > 10_000


RETRIEVE = "GET /v1/messages/batches/{message_batch_id}"


def _calls(emulator) -> dict[str, int]:
    return {route: sum(by_status.values()) for route, by_status in emulator.ledger(requests=False)["calls"].items()}


def test_status_watch_shows_the_apis_live_counts_while_the_database_is_locked(built):
    project, emulator = built
    in_flight = created_batches(emulator)[-1]
    batch_id, n = in_flight["id"], in_flight["request_count"]
    holder = subprocess.Popen(  # holds the file's lock as a running dbt does: status reads the snapshot
        [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('locked', flush=True); "
                               "sys.stdin.read()", str(project.db_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = _calls(emulator)
        watched = _cli(project, "status", "--watch", "0.05", "--refreshes", "2", "--json")
        assert watched.returncode == 0, watched.stderr
        docs = [json.loads(line) for line in watched.stdout.splitlines()]
        assert len(docs) == 2 and all(d["source"]["kind"] == "snapshot" and d["live"]["enabled"] for d in docs)
        shown = [next(b for b in d["models"][0]["batches_in_flight"] if b["batch_id"] == batch_id) for d in docs]
        assert all(b["counts_from"] == "api" and b["processing_status"] == "in_progress"
                   and b["n_processing"] == n for b in shown)
        after = _calls(emulator)
        # two refreshes, one retrieve per batch in flight (rate-limited); nothing created, canceled or deleted
        assert after.get(RETRIEVE, 0) - before.get(RETRIEVE, 0) == len(docs[0]["models"][0]["batches_in_flight"])
        assert {r: c for r, c in after.items() if r != RETRIEVE} == {r: c for r, c in before.items() if r != RETRIEVE}

        emulator.advance_clock(3601)  # the batch ends at the API; the state, locked, still says it is in progress
        text = _cli(project, "status", "--watch", "0.05", "--refreshes", "1")
        live = emulator.client().messages.batches.retrieve(batch_id).request_counts
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)

    assert text.returncode == 0, text.stderr
    assert live.succeeded == n + 1 and live.processing == 0  # the emulator's own counts, the marker among them
    assert f"{batch_id}  [{'#' * 30}]  {n} succeeded, 0 errored, 0 processing of {n}" in text.stdout
    assert "batch, ended," in text.stdout and re.search(r"counts live from the API, polled [0-2]s ago", text.stdout)
    assert "live: counts of batches in flight come from the API (read-only, each batch at most every 30s)" in text.stdout
    assert project.query("select processing_status, n_processing from dbt_claude_batch.batches where batch_id = ?",
                         [batch_id]) == [("in_progress", n)]  # status never writes: the next dbt run records it


def test_status_answers_from_the_snapshot_while_a_dbt_run_holds_the_lock(built):
    project, emulator = built
    con = duckdb.connect(str(project.db_path), read_only=True)
    try:  # the snapshot the previous run left behind
        write_snapshot(con, "dbt_claude_batch", str(project.db_path) + ".dbt_claude_batch.json")
    finally:
        con.close()
    project.load_table("items", _rows(40) + items(24, start=100) + items(16, start=200))
    project.configure(replace=False, wait_seconds=300, poll_interval_seconds=0.05)
    before = len(_batches(emulator))
    run = project.popen("run", "-s", "+items_batch")
    try:
        deadline = time.monotonic() + 120
        while len(_batches(emulator)) == before:  # dbt has submitted and now waits, holding the lock
            assert run.poll() is None and time.monotonic() < deadline, run.stdout.read()
        with pytest.raises(duckdb.IOException, match="lock"):
            duckdb.connect(str(project.db_path), read_only=True)

        started = time.monotonic()
        text = _cli(project, "status", timeout=30)
        elapsed = time.monotonic() - started
        doc = json.loads(_cli(project, "status", "--json", timeout=30).stdout)

        assert text.returncode == 0, text.stderr
        assert "Showing the snapshot taken at" in text.stdout and "items_batch" in text.stdout
        assert doc["source"]["kind"] == "snapshot" and doc["per_row"] is False
        assert elapsed < 10 and run.poll() is None  # answered at once, without waiting for dbt
        report = _cli(project, "report", "--out", str(project.root / "locked.html"), timeout=30)
        assert report.returncode == 1 and "locked by a running dbt" in report.stderr.splitlines()[0]
        assert not (project.root / "locked.html").exists()
        emulator.advance_clock(3601)  # the batches end; the waiting run harvests them and finishes
        output, _ = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 0 and "Completed successfully" in output, output[-3000:]
    after = json.loads(_cli(project, "status", "--json").stdout)
    assert after["source"]["kind"] == "database" and after["models"][0]["in_flight"]["batches"] == 0
