"""`dbt-claude-batch report`: the state as one static HTML page with charts (no network needed to open it).

    build_report(cursor, "dbt_claude_batch", database="warehouse.duckdb") -> str   # the page
    run(database_of, state_schema, out)                                         # the command

Charts: spend per day and model, outcome mix per run, batch turnaround against the 24 h window, tokens
with cache reads and writes, de-duplication / reuse / caching savings, top failure messages; with the
per-model summary and the current failures by kind from `inspect.status_document`.
"""

from __future__ import annotations

import os
import sys
import tempfile
from datetime import datetime
from typing import Callable, TextIO

from dbt_claude_batch.state import inspect
from dbt_claude_batch.base.errors import DatabaseLockedError, DbtClaudeBatchError, NothingToShowError
from dbt_claude_batch.observe.report import page, panels
from dbt_claude_batch.state.state import utcnow


def build_report(cursor, state_schema: str, database: str = "", now: datetime | None = None) -> str:
    """The report page for the state in `cursor`'s database (per-row queries: not for the run path)."""
    now = now or utcnow()
    doc = inspect.status_document(cursor, state_schema, now=now)
    if doc["state_version"] is None:
        raise NothingToShowError(
            f"No state schema {state_schema!r} in {database or 'the database'}: no batch model has run against it "
            "yet (or pass the right --state-schema).")
    charts = [
        panels.spend_per_day(inspect.spend_per_day(cursor, state_schema)),
        panels.outcome_mix(inspect.outcome_mix(cursor, state_schema, now)),
        panels.turnaround(inspect.turnaround(cursor, state_schema, now)),
        panels.tokens(inspect.tokens_per_day(cursor, state_schema)),
        panels.savings(inspect.savings(cursor, state_schema)),
        panels.top_failures(inspect.top_failure_messages(cursor, state_schema)),
    ]
    body = [page.models_table(doc) if doc["models"] else
            '<section class="block" id="models"><h2>Batch models</h2><div class="empty" data-empty="models">'
            "<strong>No data yet</strong><span>no batch model has run yet.</span></div></section>",
            '<div class="grid">', *charts, "</div>", page.failures_table(doc),
            "<footer>Costs at list prices (a model's own <code>prices</code> setting is not in state) with the "
            "50% batch discount and prompt-caching multipliers. Written by dbt-claude-batch report.</footer>"]
    subtitle = (f"{database} · state {state_schema} v{doc['state_version']} · {len(doc['models'])} batch model(s) · "
                f"generated {now.replace(microsecond=0)} UTC")
    return page.document("dbt-claude-batch report", subtitle, body)


def run(database_of: Callable[[], str], state_schema: str, out_path: str,
        out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Write the report to `out_path` (atomically); exit 1 with one clear line when there is nothing to show."""
    out, err = out or sys.stdout, err or sys.stderr
    from dbt_claude_batch.state.warehouse import open_read_only

    try:
        database = database_of()
        try:
            con = open_read_only(database)
        except DatabaseLockedError as exc:
            raise DatabaseLockedError(
                f"{database} is locked by a running dbt; the report reads every outcome, which the status "
                f"snapshot does not hold: run the report when dbt has finished (`status` works meanwhile).\n"
                f"{str(exc).splitlines()[-1]}"
            ) from None
        try:
            html = build_report(con, state_schema, database)
        finally:
            con.close()
    except DbtClaudeBatchError as exc:
        err.write(f"dbt-claude-batch report: {exc}\n")
        return 1
    target = os.path.abspath(out_path)
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".tmp", dir=os.path.dirname(target))
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(html)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; others read it like the database
    os.replace(tmp, target)
    out.write(f"Wrote {target}: open file://{target} in a browser (no network needed).\n")
    return 0
