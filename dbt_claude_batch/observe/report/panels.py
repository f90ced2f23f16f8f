"""The report's chart panels: rows from `inspect.py` shaped into `charts.py` charts, or a "no data yet" panel."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from html import escape
from typing import Any, Sequence

from dbt_claude_batch.base.pricing import usd
from dbt_claude_batch.observe.report.charts import bar_chart, hbar_chart

OUTCOME_COLORS = {
    "succeeded": "#009E73", "errored": "#D55E00", "expired": "#E69F00", "canceled": "#999999",
    "missing": "#8C6D31", "truncated": "#CC79A7", "refused": "#6A3D9A", "invalid_output": "#B8A200",
    "template_error": "#7A0177", "de-duplicated": "#0072B2", "reused": "#56B4E9",
    "empty_prompt": "#4D4D4D", "attachment_error": "#993404", "attachment_missing": "#FE9929",
}
TOKEN_COLORS = {"input": "#0072B2", "cache writes": "#E69F00", "cache reads": "#56B4E9", "output": "#009E73"}
SAVING_COLORS = {"billed": "#D55E00", "saved: de-duplication": "#0072B2", "saved: reuse of held answers": "#56B4E9",
                 "saved: prompt caching": "#009E73"}


def hours(value: float) -> str:
    """A duration given in hours, in the unit that reads best."""
    if value < 1 / 60:
        return f"{value * 3600:.0f} s"
    return f"{value * 60:.1f} min" if value < 1 else f"{value:.2f} h"


def panel(chart_id: str, title: str, body: str, note: str = "") -> str:
    """A titled panel; `body` is a chart, or None-like empty text for the "no data yet" panel."""
    note_html = f'<p class="note">{escape(note)}</p>' if note else ""
    return (f'<section class="panel" id="{escape(chart_id)}"><h2>{escape(title)}</h2>{body}{note_html}</section>')


def empty(chart_id: str, title: str, why: str) -> str:
    return panel(chart_id, title, f'<div class="empty" data-empty="{escape(chart_id)}"><strong>No data yet</strong>'
                                  f"<span>{escape(why)}</span></div>")


def _short_model(model_id: str) -> str:
    return model_id.rsplit(".", 1)[-1]


def _pivot(rows: Sequence[dict], category: str, series: str, value: str) -> tuple[list[str], list[tuple[str, list[float]]]]:
    categories = list(dict.fromkeys(str(r[category]) for r in rows))
    names = list(dict.fromkeys(str(r[series]) for r in rows))
    grid: dict[str, dict[str, float]] = defaultdict(dict)
    for r in rows:
        grid[str(r[series])][str(r[category])] = float(r[value] or 0)
    return categories, [(n, [grid[n].get(c, 0.0) for c in categories]) for n in names]


def spend_per_day(rows: Sequence[dict]) -> str:
    cid, title = "spend-per-day", "Spend per day and model (billed, replaced answers included)"
    if not rows:
        return empty(cid, title, "nothing has been harvested yet.")
    cats, series = _pivot([{**r, "model": _short_model(r["model_id"])} for r in rows], "day", "model", "usd")
    total = sum(float(r["usd"] or 0) for r in rows)
    return panel(cid, title, bar_chart(cid, title, "day of harvest (UTC)", "USD billed", cats, series, fmt=usd),
                 f"Total {usd(total)} at list prices with the batch discount, every attempt counted.")


def outcome_mix(mix: dict[str, Any]) -> str:
    per = mix["per"]
    cid = "outcome-mix"
    title = "Outcome mix per run" if per == "run" else "Outcome mix per harvested batch (no runs recorded)"
    if not mix["rows"]:
        return empty(cid, title, "no run has recorded an outcome yet.")
    rows = [{**r, "label": f"{_stamp(r['stamp'])} {_short_model(r['model_id'])}" if per == "run"
             else f"{_stamp(r['stamp'])} …{str(r['unit'])[-8:]}"} for r in mix["rows"]]
    labels: dict[Any, str] = {}
    for r in rows:
        if r["unit"] not in labels:
            taken = r["label"] in labels.values()  # two runs in the same minute stay two bars
            labels[r["unit"]] = f"{r['label']} #{len(labels) + 1}" if taken else r["label"]
    for r in rows:
        r["label"] = labels[r["unit"]]
    cats, series = _pivot(rows, "label", "category", "n")
    series.sort(key=lambda s: list(OUTCOME_COLORS).index(s[0]) if s[0] in OUTCOME_COLORS else 99)
    x_label = "run (start, UTC, and model)" if per == "run" else "batch (harvest, UTC, and id)"
    return panel(cid, title, bar_chart(cid, title, x_label, "outcomes (rows)", cats, series,
                                       fmt=lambda v: f"{v:,.0f}", colors=OUTCOME_COLORS),
                 "de-duplicated and reused rows got an answer that was not bought again.")


def turnaround(rows: Sequence[dict]) -> str:
    cid, title = "turnaround", "Batch turnaround against the 24 h window"
    if not rows:
        return empty(cid, title, "no Message Batch has been created yet.")
    rows = list(reversed(rows))  # oldest at the top
    labels = [f"{_stamp(r['created_at'])} {_short_model(r['model_id'])} …{r['batch_id'][-8:]}" for r in rows]
    series = [("ended", [0.0 if r["in_flight"] else float(r["hours"]) for r in rows]),
              ("in flight (so far)", [float(r["hours"]) if r["in_flight"] else 0.0 for r in rows])]
    slowest = max(float(r["hours"]) for r in rows)
    return panel(cid, title, hbar_chart(cid, title, "hours from create to end", "batch (created, UTC)", labels, series,
                                        fmt=hours, colors={"ended": "#0072B2",
                                                                               "in flight (so far)": "#E69F00"},
                                        reference=(24.0, "24 h: unfinished requests expire"), label_width=240),
                 f"Slowest: {hours(slowest)}. Requests still processing after 24 h expire and are resubmitted.")


def tokens(rows: Sequence[dict]) -> str:
    cid, title = "tokens", "Tokens bought per day, with cache reads and writes"
    if not rows:
        return empty(cid, title, "nothing has been harvested yet.")
    cats = [str(r["day"]) for r in rows]
    series = [("input", [r["input"] for r in rows]), ("cache writes", [r["cache_write"] for r in rows]),
              ("cache reads", [r["cache_read"] for r in rows]), ("output", [r["output"] for r in rows])]
    read, inp = sum(r["cache_read"] for r in rows), sum(r["input"] + r["cache_read"] + r["cache_write"] for r in rows)
    share = f"{read / inp:.0%} of input tokens were cache reads." if inp else ""
    return panel(cid, title, bar_chart(cid, title, "day of harvest (UTC)", "tokens", cats, series,
                                       fmt=lambda v: f"{v:,.0f}", colors=TOKEN_COLORS), share)


def savings(rows: Sequence[dict]) -> str:
    cid, title = "savings", "Billed, and what de-duplication, reuse and caching saved"
    if not rows:
        return empty(cid, title, "nothing has been harvested yet.")
    cats = [_short_model(r["model_id"]) for r in rows]
    series = [("billed", [float(r["billed_usd"] or 0) for r in rows]),
              ("saved: de-duplication", [float(r["deduplicated_usd"]) for r in rows]),
              ("saved: reuse of held answers", [float(r["reused_usd"]) for r in rows]),
              ("saved: prompt caching", [max(float(r["caching_usd"]), 0.0) for r in rows])]
    n_dedup, n_reuse = sum(r["n_deduplicated"] for r in rows), sum(r["n_reused"] for r in rows)
    saved = sum(sum(v) for _, v in series[1:])
    note = (f"{n_dedup} rows shared an identical request and {n_reuse} reused an answer already held: "
            f"{usd(saved)} not spent in all (estimated at what those answers cost).")
    return panel(cid, title, bar_chart(cid, title, "batch model", "USD (billed + saved = cost without them)", cats,
                                       series, fmt=usd, colors=SAVING_COLORS), note)


def top_failures(rows: Sequence[dict]) -> str:
    cid, title = "top-failures", "Top failure messages (every attempt)"
    if not rows:
        return empty(cid, title, "no request has failed.")
    labels = [f"{r['kind']}{'/' + r['error_type'] if r['error_type'] and r['error_type'] != r['kind'] else ''}: "
              f"{r['message']}" for r in rows]
    series = [("rows", [float(r["n"]) for r in rows])]
    return panel(cid, title, hbar_chart(cid, title, "rows affected", "failure (kind: message)", labels, series,
                                        fmt=lambda v: f"{v:,.0f}", colors={"rows": "#D55E00"}, label_width=260),
                 "Hover a bar for the full message; current failures and their next action are in the table below.")


def _stamp(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%m-%d %H:%M")
    return str(value or "?")[5:16].replace("T", " ")
