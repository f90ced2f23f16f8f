"""`dbt-claude-batch status`: the status document of `inspect.py`, for a terminal or as JSON.

The document comes from the DuckDB file opened read-only; while a running dbt holds the file's lock
it comes from the snapshot that run keeps current (`snapshot.py`), and says so. Either way nothing
here writes, waits for a lock or holds one for longer than its queries take. With `--watch`, the
counts of the batches in flight come live from the API as well (`live_counts.py`, read-only).
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from typing import Any, Callable, TextIO

from dbt_claude_batch.base.pricing import usd
from dbt_claude_batch.base.errors import DatabaseLockedError, DbtClaudeBatchError, NothingToShowError
from dbt_claude_batch.state.inspect import status_document
from dbt_claude_batch.observe.live_counts import LIVE_INTERVAL, LiveCounts
from dbt_claude_batch.state.snapshot import read_snapshot, snapshot_path
from dbt_claude_batch.state.warehouse import open_read_only

BAR_WIDTH = 30


def load(database: str, state_schema: str) -> dict[str, Any]:
    """The status document of `database`: read-only from the file, or its snapshot while dbt holds the lock."""
    try:
        con = open_read_only(database)
    except DatabaseLockedError as locked:
        path = snapshot_path(database, state_schema)
        try:
            doc = read_snapshot(path)
        except ValueError as exc:
            raise NothingToShowError(f"The status snapshot {path} cannot be read ({exc}): try again in a moment.")
        if doc is None:
            raise DatabaseLockedError(
                f"{database} is locked by a running dbt and there is no status snapshot ({path}) yet: "
                f"try again when the run has finished.\n{str(locked).splitlines()[-1]}") from None
        doc["source"] = {"kind": "snapshot", "path": path, "database": database}
    else:
        try:
            doc = status_document(con, state_schema)
        finally:
            con.close()
        doc["source"] = {"kind": "database", "path": database, "database": database}
    if doc.get("state_version") is None:
        raise NothingToShowError(
            f"No state schema {state_schema!r} in {database}: no batch model has run against this database yet "
            "(or pass the right --state-schema).")
    if not doc["models"]:
        raise NothingToShowError(f"No batch models yet in {database}: run a batch model with dbt first.")
    return doc


# -- text ------------------------------------------------------------------------------------------
def duration(seconds: float | None) -> str:
    """45s, 4m12s, 3h05m, 2d04h."""
    if seconds is None:
        return "?"
    s = int(round(abs(seconds)))
    if s < 60:
        text = f"{s}s"
    elif s < 3600:
        text = f"{s // 60}m{s % 60:02d}s"
    elif s < 86400:
        text = f"{s // 3600}h{s % 3600 // 60:02d}m"
    else:
        text = f"{s // 86400}d{s % 86400 // 3600:02d}h"
    return "-" + text if seconds < 0 else text


def progress_bar(succeeded: int, failed: int, processing: int, width: int = BAR_WIDTH) -> str:
    """[####xx......]: succeeded, errored/canceled/expired, still processing, in proportion."""
    total = succeeded + failed + processing
    if total <= 0:
        return "[" + " " * width + "]"
    a = round(width * succeeded / total)
    b = round(width * (succeeded + failed) / total)
    return "[" + "#" * a + "x" * (b - a) + "." * (width - b) + "]"


def _parse(ts: str | None) -> datetime | None:
    return datetime.fromisoformat(ts.rstrip("Z")) if ts else None


def _ago(ts: str | None, now: datetime) -> str:
    at = _parse(ts)
    return "never" if at is None else f"{duration((now - at).total_seconds())} ago ({ts.replace('T', ' ').rstrip('Z')} UTC)"


def render_text(doc: dict[str, Any], now: datetime | None = None) -> str:
    """The document as the terminal shows it."""
    now = now or datetime.now(timezone.utc).replace(tzinfo=None)
    source = doc.get("source", {})
    lines = [f"dbt-claude-batch status · {source.get('database', '?')} · state {doc['state_schema']} "
             f"v{doc['state_version']} · {now.replace(microsecond=0)} UTC"]
    if doc.get("disk_bytes") is not None:
        lines.append(f"disk used: {doc['disk_bytes'] / 2**20:.1f} MiB (the database file)")
    if source.get("kind") == "snapshot":
        lines.append(f"Showing the snapshot taken at {doc['generated_at'].replace('T', ' ').rstrip('Z')} UTC "
                     f"({duration((now - _parse(doc['generated_at'])).total_seconds())} ago): a running dbt holds "
                     "the database lock. Spend and failures show once it has finished.")
    live = doc.get("live")
    if live and not live["enabled"]:
        lines.append(f"live counts off: {live['note']}")
    elif live:
        lines.append(f"live: {live['note']}" if live["note"] else "live: counts of batches in flight come from "
                     f"the API (read-only, each batch at most every {live['min_interval_seconds']:g}s)")
    lines.append("progress: # succeeded  x errored/canceled/expired  . processing")
    for m in doc["models"]:
        lines += [""] + _model_lines(m, now)
    return "\n".join(lines) + "\n"


def _model_lines(m: dict[str, Any], now: datetime) -> list[str]:
    run = m["last_run"]
    detail = ""
    if run.get("from") == "runs":
        parts = [run.get("outcome")] + [f"{run[k]} {k[2:]}" for k in ("n_submitted", "n_harvested", "n_failed", "n_reused")
                                        if run.get(k)]
        if run.get("cost_usd") is not None:
            parts.append(f"${run['cost_usd']:.4f}")
        detail = f" ({', '.join(p for p in parts if p)})" if any(parts) else ""
    out = [f"{m['model_id']} · last ran {_ago(run.get('at'), now)}{detail}"]
    if run.get("outcome") == "stopped" and run.get("note"):
        # what it left unsubmitted shows in no batch and no failure: only its note says so
        out.append(f"  last run stopped: {run['note'].split(': ', 1)[-1]}")
    flight = m["in_flight"]
    doubt = f", {flight['creates_in_doubt']} create(s) in doubt" if flight["creates_in_doubt"] else ""
    if not flight["batches"]:
        out.append(f"  in flight: nothing{doubt}")
    else:
        out.append(f"  in flight: {flight['batches']} batch(es), {flight['requests']} requests{doubt}")
    for b in m["batches_in_flight"]:
        failed = b["n_errored"] + b["n_canceled"] + b["n_expired"]
        out.append(f"    {b['batch_id']}  {progress_bar(b['n_succeeded'], failed, b['n_processing'])}  "
                   f"{b['n_succeeded']} succeeded, {failed} errored, {b['n_processing']} processing of {b['n_submitted']}")
        left = b["expires_in_seconds"]
        expiry = "expiry unknown" if left is None else (
            f"expires in {duration(left)}" if left > 0 else f"expired {duration(-left)} ago")
        eta = f"ETA {duration(b['eta_seconds'])} ({b['eta_note']})" if b["eta_seconds"] else f"ETA: {b['eta_note']}"
        out.append(f"    {' ' * len(b['batch_id'])}  {b['kind']}, {b['processing_status'] or 'not polled yet'}, "
                   f"age {duration(b['age_seconds'])}, {expiry}, {eta}{_counts_from(b, now)}")
    out.append("  spend: " + _spend_text(m["spend"]))
    out += _failure_lines(m["failures"])
    out.append(_health_line(m.get("health", False)))
    return out


def _health_line(h: dict[str, Any] | None | bool) -> str:
    """Failures no retry fixes over the model's window (`inspect.health`), against max_failure_ratio_window."""
    if not h:
        return "  health: " + ("not in the snapshot" if h is None else "unknown")
    if h["from"] == "no runs":
        return "  health: no runs recorded in this state yet"
    if h["window_hours"] is not None:
        window = f"the last {h['window_hours']:g} h ({h['n_runs']} runs)"
    else:
        window = f"the last {h['n_runs']} runs"
        window += f" (window {h['window_runs']})" if h["n_runs"] < h["window_runs"] else ""
    if not h["n_harvested"]:
        return f"  health over {window}: nothing harvested"
    kinds = ", ".join(f"{h['n_' + k]} {k}" for k in ("invalid_request", "template_error", "refused") if h["n_" + k])
    limit = f"max_failure_ratio_window {h['max_failure_ratio_window']:g}"
    verdict = (f"over {limit}: the failure_ratio_window test fails; see the __failures view" if h["over_limit"]
               else f"within {limit}")
    return (f"  health over {window}: {h['n_unfixable']} of {h['n_harvested']} requests failed for a reason no retry "
            f"fixes ({h['failure_ratio']:.1%}{': ' + kinds if kinds else ''}), {verdict}")


def _counts_from(b: dict[str, Any], now: datetime) -> str:
    """Where a batch's counts come from: the API just now (`status --watch`), or dbt's last poll."""
    if b.get("counts_from") == "api":
        return f"; counts live from the API, polled {duration((now - _parse(b['api_polled_at'])).total_seconds())} ago"
    if b["kind"] != "batch":
        return ""
    polled = _parse(b.get("polled_at"))
    seen = f"counts as of dbt's last poll ({duration((now - polled).total_seconds())} ago)" if polled else "not polled yet"
    return f"; {seen}" + (f"; {b['live_note']}" if b.get("live_note") else "")


def _spend_text(s: dict[str, Any]) -> str:
    if s["billed_from"] == "runs":
        billed = f"{usd(s['billed_usd'])} billed (sum of the run summaries)"
    elif s["billed_from"] is None:
        return "not in the snapshot" + (f" ({s['requests_in_flight']} requests in flight)" if s["requests_in_flight"] else "")
    else:
        billed = f"{usd(s['billed_usd'])} billed ({s['billed_requests']} requests, every attempt)"
        if s["unpriced_outcomes"]:
            billed += f", {s['unpriced_outcomes']} answers of models without a known price left out"
    n = s["requests_in_flight"]
    if not n:
        return billed + "; nothing committed"
    if s["committed_usd"] is None:
        why = "no harvested batch to estimate from" if s["billed_from"] == "outcomes" else "unknown in the snapshot"
        return billed + f"; committed unknown for {n} requests in flight ({why})"
    return billed + f"; committed {usd(s['committed_usd'])} ({n} requests in flight x {usd(s['avg_request_usd'])})"


def _failure_lines(f: dict[str, Any] | None) -> list[str]:
    if f is None:
        return ["  failures: not in the snapshot"]
    if not f["total"]:
        return ["  failures: none"]
    out = [f"  failures: {f['total']}" + (f" ({f['needs_you']} need you)" if f["needs_you"] else "")]
    for g in f["by_kind"]:
        kind = g["kind"] + (f"/{g['error_type']}" if g["error_type"] and g["error_type"] != g["kind"] else "")
        who = {True: "retried automatically", False: "needs you", None: "see the failures view"}[g["retried_automatically"]]
        action = g["next_action"] or (g["example_message"] or "")
        out.append(f"    {g['count']:>6}  {kind:<32} {who}: {action}")
    return out


# -- the command ------------------------------------------------------------------------------------
def run(database_of: Callable[[], str], state_schema: str, as_json: bool = False, watch: float | None = None,
        out: TextIO | None = None, err: TextIO | None = None, refreshes: int | None = None,
        api_interval: float = LIVE_INTERVAL) -> int:
    """Print the status once (exit 1 with one clear line when there is nothing to show), or every
    `watch` seconds until Ctrl-C (or `refreshes` times), with the API's live counts of the batches in
    flight (each asked at most every `api_interval` seconds)."""
    out, err = out or sys.stdout, err or sys.stderr
    live = LiveCounts(min_interval=api_interval) if watch is not None else None
    shown = 0
    try:
        while True:
            code = _once(database_of, state_schema, as_json, live, out, err)
            shown += 1
            if watch is None or (refreshes is not None and shown >= refreshes):
                return code
            time.sleep(watch)  # the refresh interval the user asked for
    except KeyboardInterrupt:
        if watch is None:
            raise
        return 0


def _once(database_of, state_schema, as_json, live: LiveCounts | None, out, err) -> int:
    watching = live is not None
    try:
        doc = load(database_of(), state_schema)
    except DbtClaudeBatchError as exc:
        if watching and out.isatty():
            out.write("\x1b[H\x1b[2J")
        err.write(f"dbt-claude-batch status: {exc}\n")
        err.flush()
        return 1
    if live is not None:
        live.apply(doc)
    if as_json:
        out.write(json.dumps(doc, indent=None if watching else 2, default=str) + "\n")
    else:
        if watching and out.isatty():
            out.write("\x1b[H\x1b[2J")
        out.write(render_text(doc))
    out.flush()
    return 0
