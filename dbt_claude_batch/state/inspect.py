"""The one set of read queries over state for people: `status`, the snapshot, the report, and (in
`views`, which this module uses too) the views next to each model and in the state schema.

`status_document` gathers, per batch model: batches in flight with their request counts, age, time
left before expiry and an ETA from the observed rate; creates in doubt; spend billed so far and
committed; failures by kind with their next action; health over time (`views.health_sql`); when the
model last ran.

Two costs: with ``per_row=False`` it reads only per-batch tables (models, submissions, batches, runs),
so the run path can call it on every run and during waits; the spend and failures sections need the
per-row tables (outcomes, requests) and are left out (``None``) then.

Every timestamp in state is naive UTC; the document carries ISO strings ending in ``Z``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dbt_claude_batch.base.identifiers import qualified
from dbt_claude_batch.state.queries import latest_outcomes_sql
from dbt_claude_batch.state.spend import compacted_spend, costed_outcomes_sql
from dbt_claude_batch.base.pricing import BATCH_DISCOUNT, CACHE_READ, CACHE_WRITE_1H, CACHE_WRITE_5M
from dbt_claude_batch.base.settings import Settings
from dbt_claude_batch.state.state import State, as_utc, marker_sql, row_counts, utcnow
from dbt_claude_batch.state.views import RUN_COLUMNS, health_sql, model_views

DOCUMENT_FORMAT = "dbt-claude-batch status 1"


# -- small readers ---------------------------------------------------------------------------
def rows(cursor, sql: str, params: list | None = None) -> list[dict[str, Any]]:
    """Run a query and return its rows as dicts (drained, as DuckDB cursors need)."""
    result = cursor.execute(sql, params or [])
    names = [d[0] for d in result.description]
    return [dict(zip(names, row)) for row in result.fetchall()]


def table_exists(cursor, schema: str, name: str) -> bool:
    """Whether `schema.name` is a table or view in the current database."""
    return bool(cursor.execute(
        "select 1 from information_schema.tables where table_catalog = current_database() "
        "and table_schema = ? and table_name = ?", [schema, name]).fetchall())


def disk_bytes(cursor) -> int | None:
    """Bytes the current database file takes on disk (with its write-ahead log); None in memory."""
    import os

    row = cursor.execute("select path from duckdb_databases() where database_name = current_database()").fetchone()
    if not row or not row[0] or row[0] == ":memory:":
        return None
    return sum(os.path.getsize(p) for p in (row[0], row[0] + ".wal") if os.path.isfile(p))


def iso(value: datetime | None) -> str | None:
    """Naive UTC timestamp -> ISO 8601 with a Z."""
    return None if value is None else value.replace(microsecond=0).isoformat() + "Z"


def _seconds(later: datetime | None, earlier: datetime | None) -> float | None:
    return None if later is None or earlier is None else (later - earlier).total_seconds()


# -- per-batch sections (cheap: every run may call these) --------------------------------------
def batches_in_flight(cursor, schema: str, now: datetime) -> list[dict[str, Any]]:
    """Batches whose results are not in state yet, with progress, age, time left and an ETA."""
    found = rows(cursor, f"""select b.model_id, b.batch_id, b.kind, b.processing_status, b.created_at, b.expires_at,
            b.ended_at, b.polled_at, b.n_submitted, b.n_processing, b.n_succeeded, b.n_errored, b.n_canceled,
            b.n_expired, coalesce(s.marker_id is not null, false) as has_marker
        from {qualified(schema, 'batches')} b left join {qualified(schema, 'submissions')} s using (submission_id)
        where b.harvested_at is null order by b.model_id, b.created_at, b.batch_id""")
    return [_progress(b, now) for b in found]


def _progress(b: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A batch row (timestamps as datetimes) with its counts filled in, age, time left, ETA; ISO timestamps."""
    for name in ("n_succeeded", "n_errored", "n_canceled", "n_expired"):
        b[name] = b[name] or 0
    done = b["n_succeeded"] + b["n_errored"] + b["n_canceled"] + b["n_expired"]
    if b["n_processing"] is None:  # not polled yet
        b["n_processing"] = max(b["n_submitted"] - done, 0)
    b["age_seconds"] = max(_seconds(now, b["created_at"]) or 0.0, 0.0) if b["created_at"] else None
    b["expires_in_seconds"] = _seconds(b["expires_at"], now)
    b.update(_eta(b, done, now))
    for name in ("created_at", "expires_at", "ended_at", "polled_at"):
        b[name] = iso(b[name])
    return b


def live_batch(b: dict[str, Any], batch, polled_at: datetime, now: datetime) -> dict[str, Any]:
    """A `batches_in_flight` entry as the API showed it at `polled_at` (`batch`, a retrieve's answer): its
    status and counts (the marker taken out, as `state.row_counts` does when a run polls), age, time left
    and ETA from them. Nothing is written: the next dbt run records what it polls itself."""
    counts, _ = row_counts(batch.request_counts, b.get("has_marker", True))
    parse = lambda ts: datetime.fromisoformat(ts.rstrip("Z")) if ts else None  # noqa: E731
    live = {**b, **{f"n_{k}": v for k, v in counts.items()}, "processing_status": batch.processing_status,
            "created_at": parse(b["created_at"]), "expires_at": parse(b["expires_at"]),
            "ended_at": as_utc(batch.ended_at), "polled_at": polled_at}
    return _progress(live, now)


def _eta(b: dict[str, Any], done: int, now: datetime) -> dict[str, Any]:
    """When the batch should end, from the rate its requests finished at until the last poll."""
    if b["kind"] == "sync":
        return {"eta_at": None, "eta_seconds": None,
                "eta_note": "synchronous pass interrupted; the next dbt run finishes it"}
    if b["processing_status"] == "ended" or (b["n_processing"] == 0 and b["polled_at"]):
        return {"eta_at": None, "eta_seconds": 0.0, "eta_note": "ended; the next dbt run collects the results"}
    elapsed = _seconds(b["polled_at"], b["created_at"])
    if not done or not elapsed or elapsed <= 0:
        return {"eta_at": None, "eta_seconds": None, "eta_note": "no request finished yet"}
    eta_at = b["polled_at"] + (b["polled_at"] - b["created_at"]) * (b["n_processing"] / done)
    note = f"at {done / elapsed * 60:.1f} requests/min"
    if b["expires_at"] and eta_at > b["expires_at"]:
        note += "; at this rate it would not end before it expires"
    return {"eta_at": iso(eta_at), "eta_seconds": max(_seconds(eta_at, now), 0.0), "eta_note": note}


def creates_in_doubt(cursor, schema: str) -> dict[str, int]:
    """Submissions whose create may or may not have made a batch, per model."""
    return dict(cursor.execute(
        f"select model_id, count(*) from {qualified(schema, 'submissions')} "
        "where status in ('creating', 'in_doubt') group by all").fetchall())


def last_runs(cursor, schema: str) -> dict[str, dict[str, Any]]:
    """Per model, its latest run: from the `runs` table where the state has one, else `models.updated_at`."""
    latest: dict[str, dict[str, Any]] = {}
    for m in rows(cursor, f"select model_id, updated_at from {qualified(schema, 'models')}"):
        latest[m["model_id"]] = {"at": iso(m["updated_at"]), "from": "models.updated_at"}
    if table_exists(cursor, schema, "runs"):
        for r in rows(cursor, f"select * from {qualified(schema, 'runs')} "
                              "qualify row_number() over (partition by model_id order by started_at desc) = 1"):
            run = {k: (iso(r[k]) if isinstance(r.get(k), datetime) else r.get(k)) for k in RUN_COLUMNS if k in r}
            latest[r["model_id"]] = {"at": run.get("finished_at") or run.get("started_at"), "from": "runs", **run}
    return latest


def runs_spend(cursor, schema: str) -> dict[str, float]:
    """Per model, the cost the run summaries recorded (per-batch table; the snapshot's spend), runs removed by
    compaction included."""
    if not table_exists(cursor, schema, "runs"):
        return {}
    compacted = "0"
    if cursor.execute("select 1 from information_schema.columns where table_catalog = current_database() and "
                      "table_schema = ? and table_name = 'models' and column_name = 'compacted_runs_usd'",
                      [schema]).fetchall():  # state version 12 on
        compacted = (f"(select m.compacted_runs_usd from {qualified(schema, 'models')} m "
                     "where m.model_id = r.model_id)")
    return {m: float(c) for m, c in cursor.execute(
        f"select model_id, sum(cost_usd) + coalesce(any_value({compacted}), 0) "
        f"from {qualified(schema, 'runs')} r group by all").fetchall() if c is not None}


# -- per-row sections (status and report only) ------------------------------------------------
def spend(cursor, schema: str) -> dict[str, dict[str, Any]]:
    """Per model: billed so far (every attempt, answers later replaced included) at list prices.

    `avg_request_usd` is the mean billed cost of a request in the model's harvested batches (errors
    cost nothing), the rate at which requests in flight are committed. Outcomes with usage but no
    known price are counted in `unpriced_outcomes` and left out of the sums.
    """
    found = {r.pop("model_id"): r for r in rows(cursor, f"""{costed_outcomes_sql(schema)}
        select model_id, coalesce(sum(cost), 0.0) as billed_usd,
               count(*) filter (where kind in ('batch', 'sync', 'sample', 'compare') and not shared and not marker
                                and result_type <> 'missing') as billed_requests,
               count(*) filter (where not shared and full_cost is null) as unpriced_outcomes,
               -- markers are billed (in billed_usd) but are no row's request: the average is per row
               sum(cost) filter (where kind = 'batch' and not shared and result_type <> 'missing')
                   / nullif(count(*) filter (where kind = 'batch' and not shared and not marker
                                             and result_type <> 'missing'), 0) as avg_request_usd
        from cb_o group by all""")}
    for model_id, old in compacted_spend(cursor, schema).items():
        held = found.setdefault(model_id, {"billed_usd": 0.0, "billed_requests": 0, "unpriced_outcomes": 0,
                                           "avg_request_usd": None})
        held["billed_usd"] += old["billed_usd"]
        held["billed_requests"] += old["billed_requests"]
    return found


def failures_by_kind(cursor, schema: str, model_id: str) -> dict[str, Any]:
    """A model's current failures (latest attempt per key) grouped by kind, each with its next action.

    Reads the model's `<model>__failures` view, which every run writes with the model's own settings;
    without it (a model in another database file), kinds and counts only.
    """
    view = model_views(cursor, "__failures").get(model_id)
    if view:
        groups = rows(cursor, f"""select kind, error_type, retried_automatically, canceled_by_user, count(*) as count,
                mode(next_action) as next_action, min(error_message) as example_message
            from {view} group by all order by count desc, kind, error_type""")
    else:
        groups = rows(cursor, f"""select result_type as kind, error_type, null::boolean as retried_automatically,
                canceled_by_user, count(*) as count, null::varchar as next_action,
                min(error_message) as example_message
            from ({latest_outcomes_sql(State(cursor, schema, model_id))})
            where result_type is not null and result_type <> 'succeeded'
            group by all order by count desc, kind, error_type""")
    return {
        "total": sum(g["count"] for g in groups),
        # Cancelled on purpose is the user's decision, not a failure to act on (as `no_failure_needs_you`).
        "needs_you": sum(g["count"] for g in groups if g["retried_automatically"] is False
                         and not g["canceled_by_user"]),
        "by_kind": groups,
        "from": "view" if view else "state",
    }


def health(cursor, schema: str, model_id: str) -> dict[str, Any]:
    """A model's health over time (`views.health_sql`), read from its `<model>__health` view, which every
    run writes with the model's own window and limit; without it, with those settings' defaults.
    State written before runs were recorded has no window: `{"from": "no runs"}`."""
    view = model_views(cursor, "__health").get(model_id)
    if view is None and not table_exists(cursor, schema, "runs"):
        return {"from": "no runs"}
    sql = view or f"""({health_sql(schema, model_id, Settings.health_window_runs, Settings.health_window_hours,
                                   Settings.max_failure_ratio_window)})"""
    (found,) = rows(cursor, f"select * exclude (dbt_model) from {sql}")
    return {**found, "window_start": iso(found["window_start"]), "from": "view" if view else "defaults"}


# -- the document ----------------------------------------------------------------------------------
def state_version(cursor, schema: str) -> int | None:
    """The state schema's version, or None when the schema or its version table does not exist."""
    if not table_exists(cursor, schema, "state_version"):
        return None
    return cursor.execute(f"select max(version) from {qualified(schema, 'state_version')}").fetchone()[0]


def status_document(cursor, schema: str, per_row: bool = True, now: datetime | None = None) -> dict[str, Any]:
    """Everything `status` shows, as one JSON-ready dict; see the module docstring for `per_row`."""
    now = now or utcnow()
    version = state_version(cursor, schema)
    doc: dict[str, Any] = {"format": DOCUMENT_FORMAT, "generated_at": iso(now), "state_schema": schema,
                           "state_version": version, "per_row": per_row, "disk_bytes": disk_bytes(cursor),
                           "models": []}
    if version is None:
        return doc
    flying = batches_in_flight(cursor, schema, now)
    doubt = creates_in_doubt(cursor, schema)
    runs = last_runs(cursor, schema)
    billed = spend(cursor, schema) if per_row else {}
    from_runs = {} if per_row else runs_spend(cursor, schema)
    for model_id in sorted(runs):
        mine = [{k: v for k, v in b.items() if k != "model_id"} for b in flying if b["model_id"] == model_id]
        requests_in_flight = sum(b["n_submitted"] for b in mine if b["kind"] == "batch")
        doc["models"].append({
            "model_id": model_id,
            "last_run": runs[model_id],
            "in_flight": {"batches": len(mine), "requests": requests_in_flight, "creates_in_doubt": doubt.get(model_id, 0)},
            "batches_in_flight": mine,
            "spend": _spend_section(billed.get(model_id), from_runs.get(model_id), requests_in_flight, per_row),
            "failures": failures_by_kind(cursor, schema, model_id) if per_row else None,
            "health": health(cursor, schema, model_id) if per_row else None,
        })
    return doc


def _spend_section(billed: dict | None, from_runs: float | None, requests_in_flight: int,
                   per_row: bool) -> dict[str, Any]:
    if not per_row:
        return {"billed_usd": from_runs, "billed_from": "runs" if from_runs is not None else None,
                "committed_usd": None, "avg_request_usd": None, "billed_requests": None, "unpriced_outcomes": None,
                "requests_in_flight": requests_in_flight}
    billed = billed or {"billed_usd": 0.0, "billed_requests": 0, "unpriced_outcomes": 0, "avg_request_usd": None}
    avg = billed["avg_request_usd"]
    return {"billed_usd": float(billed["billed_usd"]), "billed_from": "outcomes",
            "committed_usd": (avg * requests_in_flight if avg is not None else (0.0 if not requests_in_flight else None)),
            "avg_request_usd": avg, "billed_requests": billed["billed_requests"],
            "unpriced_outcomes": billed["unpriced_outcomes"], "requests_in_flight": requests_in_flight}


# -- history, for the report (per-row; never on the run path) -------------------------------------
def _cache_saving_sql(alias: str = "cb_o") -> str:
    """USD prompt caching saved on one bought outcome: reads at 0.1x instead of 1x, net of the write premiums."""
    factor = f"(case when {alias}.service_tier = 'standard' then 1.0 else {BATCH_DISCOUNT} end)"
    return (f"coalesce({factor} * {alias}.input_price * ("
            f"coalesce({alias}.cache_read_input_tokens, 0) * {1 - CACHE_READ}"
            f" - (coalesce({alias}.cache_creation_input_tokens, 0) - coalesce({alias}.cache_creation_1h_input_tokens, 0))"
            f" * {CACHE_WRITE_5M - 1} - coalesce({alias}.cache_creation_1h_input_tokens, 0) * {CACHE_WRITE_1H - 1}"
            f") / 1e6, 0.0)")


def spend_per_day(cursor, schema: str) -> list[dict[str, Any]]:
    """Billed USD per day (of harvest) and model, every attempt included."""
    compacted = (f" union all select day, model_id, billed_usd as cost from {qualified(schema, 'daily_spend')}"
                 if table_exists(cursor, schema, "daily_spend") else "")
    return rows(cursor, f"""{costed_outcomes_sql(schema)}
        select day, model_id, sum(cost) as usd from (
            select cast(harvested_at as date) as day, model_id, cost from cb_o{compacted}) group by all order by all""")


def tokens_per_day(cursor, schema: str) -> list[dict[str, Any]]:
    """Tokens bought per day: uncached input, cache writes, cache reads, output."""
    return rows(cursor, f"""select cast(harvested_at as date) as day,
            coalesce(sum(input_tokens), 0) as input, coalesce(sum(cache_creation_input_tokens), 0) as cache_write,
            coalesce(sum(cache_read_input_tokens), 0) as cache_read, coalesce(sum(output_tokens), 0) as output
        from {qualified(schema, 'outcomes')} where shared_from is null group by all order by all""")


def savings(cursor, schema: str) -> list[dict[str, Any]]:
    """Per model: billed USD (compacted outcomes included), and what de-duplication, reuse of held answers
    and prompt caching saved (of the outcomes held)."""
    found = rows(cursor, f"""{costed_outcomes_sql(schema)}
        select model_id, sum(cost) as billed_usd,
               count(*) filter (where shared and kind <> 'reuse') as n_deduplicated,
               coalesce(sum(full_cost) filter (where shared and kind <> 'reuse'), 0) as deduplicated_usd,
               count(*) filter (where shared and kind = 'reuse') as n_reused,
               coalesce(sum(full_cost) filter (where shared and kind = 'reuse'), 0) as reused_usd,
               coalesce(sum({_cache_saving_sql()}) filter (where not shared), 0) as caching_usd
        from cb_o group by all order by all""")
    compacted = compacted_spend(cursor, schema)
    for row in found:
        row["billed_usd"] = (row["billed_usd"] or 0.0) + compacted.get(row["model_id"], {}).get("billed_usd", 0.0)
    return found


_CATEGORY = ("case when kind = 'reuse' then 'reused' when shared then 'de-duplicated' "
             "when result_type = 'errored' and error_type = 'template_error' then 'template_error' "
             "when result_type = 'errored' and error_type = 'empty_prompt' then 'empty_prompt' "
             "when result_type = 'errored' and error_type in ('attachment_error', 'attachment_missing') then error_type "
             "else result_type end")


def outcome_mix(cursor, schema: str, now: datetime | None = None, limit: int = 30) -> dict[str, Any]:
    """Outcomes per run (the latest `limit` runs that recorded any), or per batch where state has no runs."""
    now = now or utcnow()
    if table_exists(cursor, schema, "runs") and cursor.execute(
            f"select count(*) from {qualified(schema, 'runs')}").fetchone()[0]:
        found = rows(cursor, f"""{costed_outcomes_sql(schema)},
            cb_runs as (select * from {qualified(schema, 'runs')} order by started_at desc limit {int(limit)})
            select r.run_id as unit, r.model_id, r.started_at as stamp, {_CATEGORY} as category, count(*) as n
            from cb_runs r join cb_o o on o.model_id = r.model_id and not o.marker
                and o.harvested_at between r.started_at and coalesce(r.finished_at, ?::timestamp)
            group by all order by stamp, unit, category""", [now])
        return {"per": "run", "rows": found}
    found = rows(cursor, f"""{costed_outcomes_sql(schema)},
        cb_last as (select batch_id from {qualified(schema, 'batches')} where harvested_at is not null
                    order by harvested_at desc limit {int(limit)})
        select batch_id as unit, model_id, min(harvested_at) as stamp, {_CATEGORY} as category, count(*) as n
        from cb_o where batch_id in (select batch_id from cb_last) and not marker
        group by all order by stamp, unit, category""")
    return {"per": "batch", "rows": found}


def turnaround(cursor, schema: str, now: datetime | None = None, limit: int = 40) -> list[dict[str, Any]]:
    """The latest `limit` Message Batches: hours from create to end (or so far, in flight), against 24 h."""
    return rows(cursor, f"""select batch_id, model_id, created_at, ended_at, expires_at, processing_status,
            ended_at is null as in_flight,
            greatest(epoch(coalesce(ended_at, ?::timestamp) - created_at) / 3600.0, 0) as hours
        from {qualified(schema, 'batches')} where kind = 'batch' and created_at is not null
        order by created_at desc limit {int(limit)}""", [now or utcnow()])


def top_failure_messages(cursor, schema: str, limit: int = 10) -> list[dict[str, Any]]:
    """The most frequent failure messages over every attempt (rows affected, models, last seen)."""
    return rows(cursor, f"""select result_type as kind, error_type, coalesce(error_message, '(no message)') as message,
            count(*) as n, count(distinct model_id) as models, max(harvested_at) as last_seen
        from {qualified(schema, 'outcomes')} o where result_type <> 'succeeded' and not {marker_sql(schema, 'o')}
        group by all order by n desc, message limit {int(limit)}""")
