"""`make demo`: the example project end to end against the local API emulator, twice.

    .venv/bin/python integration_project/demo.py

1. Starts the emulator (a subprocess on 127.0.0.1, state in integration_project/.emulator-state,
   wiped first) with a fault scenario: about 5% of requests come back `errored` with server errors
   (api_error 3%, overloaded_error 2%), and a batch takes 2 seconds to end.
2. Makes the sample loan documents (scripts/make_documents.py: PDFs and scans made with pypdf and
   Pillow into integration_project/documents/, one of 120 pages, one corrupt) and builds
   integration_project into a fresh DuckDB file (integration_project/demo.duckdb):
   `dbt deps`, `dbt build`: the seed (500 support tickets), the staging models, the `ticket_triage`,
   `ticket_extraction` and `loan_documents` batch models (each submits, waits and harvests), then
   their tests, among them the package's health tests, which the ~5% of server errors (retried by
   themselves) keep green.
3. Shows the label counts, a few classified tickets, the failures and batches tables, the bill, and
   the fields extracted from the documents with the corrupt file as a named failure.
4. Clears the fault scenario, runs `dbt build` again: only the failed tickets are resubmitted, in a
   second batch, and the failures table is empty.
5. Stops the emulator (always, also on Ctrl-C).

Never calls Anthropic: ANTHROPIC_API_KEY is a fake value and ANTHROPIC_BASE_URL points at the
emulator, both set only in the environment of the child processes. Exits non-zero if a dbt command
fails or the final state is not 500 results with 0 failures, or the documents' results and failures
are not the expected ones. Standard library + duckdb (+ pypdf and Pillow for the documents).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent / "scripts"))
import make_documents  # noqa: E402 - integration_project/scripts/make_documents.py

PROJECT = Path(__file__).resolve().parent
STATE_DIR = PROJECT / ".emulator-state"
DB_PATH = PROJECT / "demo.duckdb"
DBT = Path(sys.executable).parent / "dbt"
EXPECTED_TICKETS = 500
FAULTS = {"name": "result_errors", "rates": {"api_error": 0.03, "overloaded_error": 0.02}, "seed": 7}
PROCESSING_DELAY = 2
FAKE_API_KEY = "emulator-demo-key"  # not a real key: the emulator accepts any value
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
# The 120-page PDF is cut into two parts of 60 pages (max_pages_per_request): one results row whose
# output_json holds the parts' objects in page order, so its flattened columns are NULL.
OVER_LIMIT_PDF = "appraisal-report-0005.pdf"
CORRUPT_PDF = "loan-application-0006.pdf"
# What the emulator reads in each file (the PDF's text, the scan's file name in the prompt) -> document_type.
EXPECTED_DOCUMENT_TYPES = {
    "loan-application-0001.pdf": "loan_application", "bank-statement-0002.pdf": "bank_statement",
    "payslip-0003.jpg": "payslip", "id-card-0004.png": "id_card", "loan-application-0007": "other"}
EXPECTED_DOCUMENT_TYPES[OVER_LIMIT_PDF] = None
DOCUMENT_REQUESTS = "select coalesce(sum(n_submitted), 0) from main.loan_documents__batches where kind = 'batch'"


class DemoFailed(Exception):
    pass


# ------------------------------------------------------------------------------ output
def heading(text: str) -> None:
    print(f"\n{'=' * 100}\n== {text}\n{'=' * 100}", flush=True)


def show(title: str, columns: list[str], rows: list[tuple], width: int = 60) -> None:
    """A plain text table; long values are cut to `width` characters."""
    def cell(value: object) -> str:
        text = "" if value is None else str(value).replace("\n", " ")
        return text if len(text) <= width else text[: width - 1] + "…"

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    print(f"\n{title}")
    print("  " + "  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  " + "  ".join("-" * w for w in widths))
    for row in cells:
        print("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths)))
    if not rows:
        print("  (no rows)")
    sys.stdout.flush()


def query(sql: str) -> tuple[list[str], list[tuple]]:
    """Read-only, only while no dbt process holds the file."""
    with duckdb.connect(str(DB_PATH), read_only=True) as con:
        cur = con.execute(sql)
        return [d[0] for d in cur.description], cur.fetchall()


def scalar(sql: str) -> object:
    return query(sql)[1][0][0]


# ---------------------------------------------------------------------------- emulator
class Emulator:
    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self._log = None

    def start(self) -> None:
        shutil.rmtree(STATE_DIR, ignore_errors=True)
        STATE_DIR.mkdir(parents=True)
        cmd = [sys.executable, "-m", "dbt_claude_batch.observe.cli", "emulator", "--port", "0",
               "--state-dir", str(STATE_DIR), "--processing-delay", str(PROCESSING_DELAY),
               "--scenario", json.dumps(FAULTS)]
        self._log = open(STATE_DIR / "emulator.log", "ab")
        # Own session: Ctrl-C reaches only this script, which then stops the emulator by pid.
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        print(f"emulator pid {self.proc.pid}: {' '.join(cmd[1:])}", flush=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], STARTUP_TIMEOUT)
        line = self.proc.stdout.readline().decode().strip() if ready else ""
        if not line.startswith("http://"):
            raise DemoFailed(f"the emulator did not print its URL; see {STATE_DIR / 'emulator.log'}")
        self.url = line
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            try:
                if self.call("GET", "/_emulator/health") == {"status": "ok"}:
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise DemoFailed(f"the emulator at {self.url} never became healthy") from None
                time.sleep(0.05)
        print(f"emulator ready at {self.url} (log: {STATE_DIR / 'emulator.log'})", flush=True)

    def call(self, method: str, path: str, body: object = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        proc.stdout.close()
        if self._log:
            self._log.close()
        print(f"emulator pid {proc.pid} stopped (exit {proc.returncode})", flush=True)
        self.proc = None


# --------------------------------------------------------------------------------- dbt
def cli(*args: str) -> None:
    """The package's console script, as a user types it (`dbt-claude-batch status`, `report`)."""
    cmd = [str(Path(sys.executable).parent / "dbt-claude-batch"), *args]
    print(f"\n$ dbt-claude-batch {' '.join(args)}", flush=True)
    code = subprocess.call(cmd, cwd=PROJECT)
    if code != 0:
        raise DemoFailed(f"`dbt-claude-batch {' '.join(args)}` failed with exit code {code}")


def dbt(env: dict[str, str], *args: str) -> None:
    cmd = [str(DBT), *args]
    print(f"\n$ cd {PROJECT.name} && dbt {' '.join(args)}", flush=True)
    started = time.monotonic()
    code = subprocess.call(cmd, cwd=PROJECT, env=env)
    print(f"(dbt {args[0]}: exit {code}, {time.monotonic() - started:.1f} s)", flush=True)
    if code != 0:
        raise DemoFailed(f"`dbt {' '.join(args)}` failed with exit code {code}")


def child_env(url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "ANTHROPIC_API_KEY": FAKE_API_KEY,
        "ANTHROPIC_BASE_URL": url,
        "DBT_CLAUDE_BATCH_DUCKDB": str(DB_PATH),
        "DBT_PROFILES_DIR": str(PROJECT),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    })
    return env


# ------------------------------------------------------------------------------- views
def show_results() -> None:
    show("Label counts (main.ticket_triage)",
         *query("select output_text as label, count(*) as tickets from main.ticket_triage "
                "group by 1 order by 2 desc, 1"))
    show("A few classified tickets (main.ticket_triage join main.stg_tickets using (ticket_id))",
         *query("select ticket_id, s.subject, t.output_text as label, t.attempt "
                "from main.ticket_triage t join main.stg_tickets s using (ticket_id) "
                "order by ticket_id limit 8"))


def show_failures() -> int:
    n = scalar("select count(*) from main.ticket_triage__failures")
    show(f"main.ticket_triage__failures: {n} rows",
         *query("select ticket_id, kind, error_type, retried_automatically, next_action "
                "from main.ticket_triage__failures order by ticket_id limit 12"), width=80)
    if n > 12:
        print(f"  ... and {n - 12} more", flush=True)
    return n


def show_batches() -> list[tuple]:
    cols, rows = query("select batch_id, processing_status, n_submitted, n_succeeded, n_errored, "
                       "n_canceled, n_expired, result_lines from main.ticket_triage__batches order by created_at")
    show("main.ticket_triage__batches", cols, rows)
    return rows


def show_bill(emu: Emulator) -> float:
    bill = emu.call("GET", "/_emulator/ledger?requests=false")["bill"]
    rows = [(batch_id, f"${usd:.6f}") for batch_id, usd in bill["by_batch"].items()]
    show("Emulator bill (GET /_emulator/ledger?requests=false)", ["batch_id", "usd"], rows)
    cost = scalar("select (select coalesce(sum(cost_usd), 0) from main.ticket_triage) + "
                  "(select coalesce(sum(cost_usd), 0) from main.ticket_extraction) + "
                  "(select coalesce(sum(cost_usd), 0) from main.loan_documents)")
    print(f"  total ${bill['total_usd']:.6f} (batch ${bill['batch_usd']:.6f}, sync ${bill['sync_usd']:.6f}); "
          f"sum of cost_usd in ticket_triage, ticket_extraction and loan_documents ${cost:.6f}", flush=True)
    return bill["total_usd"]


def show_documents() -> list[str]:
    """The documents' extracted fields and failures; what is not as expected, as problem lines (only
    meaningful once no server error from the fault scenario is left to resubmit)."""
    cols, rows = query("select document_id, document_type, needs_review, summary, attempt, cost_usd "
                       "from main.loan_documents order by document_id")
    show("Fields extracted from the loan documents (main.loan_documents: JSON flattened into typed columns)",
         cols, rows, width=70)
    _, failed = query("select document_id, error_type, error_message from main.loan_documents__failures "
                      "order by document_id")
    show("Documents that could not be sent (main.loan_documents__failures)",
         ["document_id", "error_type", "error_message"], failed, width=150)
    problems = []
    got = {row[0]: row[1] for row in rows}
    if got != EXPECTED_DOCUMENT_TYPES:
        problems.append(f"main.loan_documents holds {got}, expected {EXPECTED_DOCUMENT_TYPES}")
    expected_failures = {CORRUPT_PDF: "is a corrupt PDF"}
    _, cut = query(f"select output_json from main.loan_documents where document_id = '{OVER_LIMIT_PDF}'")
    parts = json.loads(cut[0][0]) if cut and cut[0][0] else []
    if [part.get("document_type") for part in parts] != ["appraisal", "appraisal"]:
        problems.append(f"{OVER_LIMIT_PDF} was not cut into two parts each read as an appraisal: {parts}")
    named = {doc: message for doc, kind, message in failed if kind == "attachment_error"}
    if set(named) != set(expected_failures) or len(failed) != len(named) or any(
            text not in named[doc] for doc, text in expected_failures.items()):
        problems.append(f"main.loan_documents__failures holds {failed}, expected attachment_error for "
                        f"{expected_failures}")
    return problems


# -------------------------------------------------------------------------------- main
def run() -> None:
    started = time.monotonic()
    for path in (DB_PATH, DB_PATH.with_name(DB_PATH.name + ".wal")):
        path.unlink(missing_ok=True)
    emu = Emulator()
    try:
        heading(f"Start the local API emulator (fault scenario: {json.dumps(FAULTS)})")
        emu.start()
        env = child_env(emu.url)
        print(f"dbt runs with ANTHROPIC_BASE_URL={emu.url} and ANTHROPIC_API_KEY={FAKE_API_KEY} "
              "(a fake key: nothing reaches Anthropic)", flush=True)

        heading("Make the sample loan documents (scripts/make_documents.py: pypdf and Pillow)")
        for path in make_documents.write():
            print(f"  {path.relative_to(PROJECT)} ({path.stat().st_size:,} bytes)", flush=True)

        heading("Build integration_project: dbt deps, dbt build (seed, models, tests)")
        dbt(env, "deps")
        dbt(env, "build")

        heading("First run: results, failures, batches, bill")
        show_results()
        first_results = scalar("select count(*) from main.ticket_triage")
        first_failures = show_failures()
        # Tickets with identical text share one request (and its outcome): resubmitted once for all of them.
        failed_requests = scalar(
            "select count(distinct request_hash) from dbt_claude_batch.requests where model_id = 'main.ticket_triage' "
            "and coalesce(key_custom_id, custom_id) in (select custom_id from main.ticket_triage__failures)")
        show_batches()
        show_bill(emu)
        print(f"\nFirst run: {first_results} tickets classified, {first_failures} failed "
              "(server errors from the fault scenario).", flush=True)

        heading("Documents: fields extracted from PDFs and scans; the corrupt file is a named failure")
        show_documents()
        # Real batches only: a cut PDF's part answered from state is a `reuse` pseudo-batch, not a request.
        document_requests = scalar(DOCUMENT_REQUESTS)
        # Documents that drew a server error are resubmitted by the second run; the bad files are not.
        document_retries = scalar("select count(*) from main.loan_documents__failures "
                                  "where error_type not like 'attachment%'")

        heading("Clear the fault scenario, dbt build again: the failed tickets are resubmitted")
        print(f"DELETE /_emulator/scenarios -> {emu.call('DELETE', '/_emulator/scenarios')}", flush=True)
        dbt(env, "build")

        heading("Second run: results, failures, batches, bill")
        show_results()
        show("The resubmitted tickets (attempt 2), first few",
             *query("select ticket_id, s.subject, t.output_text as label, t.attempt, t.batch_id "
                    "from main.ticket_triage t join main.stg_tickets s using (ticket_id) "
                    "where t.attempt > 1 order by ticket_id limit 8"))
        results = scalar("select count(*) from main.ticket_triage")
        resubmitted = scalar("select count(*) from main.ticket_triage where attempt > 1")
        failures = show_failures()
        batches = show_batches()
        total = show_bill(emu)

        show("Structured extraction (main.ticket_extraction: JSON flattened into typed columns)",
             *query("select category, urgency, count(*) as tickets, sum(cache_read_input_tokens) as cache_read_tokens "
                    "from main.ticket_extraction group by all order by tickets desc limit 8"))
        extracted = scalar("select count(*) from main.ticket_extraction")
        extraction_failures = scalar("select count(*) from main.ticket_extraction__failures")

        heading("Documents after the second run")
        problems = show_documents()
        resent = scalar(DOCUMENT_REQUESTS) - document_requests
        if resent != document_retries:
            problems.append(f"the second run sent {resent} document request(s), expected {document_retries} (the "
                            "documents that drew a server error; no file changed)")
        if extracted != EXPECTED_TICKETS or extraction_failures != 0:
            problems.append(f"main.ticket_extraction has {extracted} rows and {extraction_failures} failures, "
                            f"expected {EXPECTED_TICKETS} and 0")
        if results != EXPECTED_TICKETS:
            problems.append(f"main.ticket_triage has {results} rows, expected {EXPECTED_TICKETS}")
        if failures != 0:
            problems.append(f"main.ticket_triage__failures has {failures} rows, expected 0")
        if len(batches) != 2:
            problems.append(f"main.ticket_triage__batches has {len(batches)} batches, expected 2")
        elif batches[1][2] != failed_requests:
            problems.append(f"the second batch has {batches[1][2]} requests, expected the {failed_requests} distinct "
                            f"requests of the {first_failures} tickets that failed in the first run")
        if resubmitted != first_failures:
            problems.append(f"{resubmitted} results come from a resubmission, expected {first_failures}")
        if first_failures == 0:
            problems.append("the first run had no failures, so nothing showed a resubmission")
        if problems:
            raise DemoFailed("; ".join(problems))
        print(f"\nSecond run: {first_failures} failed tickets resubmitted in batch {batches[1][0]}; "
              f"{results} of {EXPECTED_TICKETS} tickets classified, 0 failures; "
              f"total bill ${total:.6f}.", flush=True)

        heading("Status and report: what a person on call looks at")
        cli("status", "--database", str(DB_PATH))
        report = PROJECT / "target" / "dbt_claude_batch_report.html"
        cli("report", "--database", str(DB_PATH), "--out", str(report))
    finally:
        heading("Stop the emulator")
        emu.stop()
    db = os.path.relpath(DB_PATH)
    print(f"\nDemo finished in {time.monotonic() - started:.0f} s. Explore the results with:\n"
          f"  {os.path.relpath(sys.executable)} -c \"import duckdb; print(duckdb.connect('{db}', read_only=True)"
          ".sql('select * from main.ticket_triage limit 5'))\"", flush=True)


def _terminate(signum, frame):  # SIGTERM (e.g. make killed): unwind through `finally`
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored
    try:
        run()
    except DemoFailed as exc:
        print(f"\nDEMO FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("\nDemo interrupted.", file=sys.stderr, flush=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
