"""The report's HTML page: one file, inline CSS, system fonts, no script and nothing fetched from the network."""

from __future__ import annotations

from html import escape
from typing import Any, Sequence

from dbt_claude_batch.base.pricing import usd

CSS = """
:root { color-scheme: light; --ink: #1d2330; --muted: #5b6472; --line: #d9dde4; --panel: #ffffff; --bg: #f3f5f8; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px 40px; background: var(--bg); color: var(--ink);
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 0; color: var(--muted); }
h2 { margin: 0 0 10px; font-size: 15px; }
section.block, section.panel { background: var(--panel); border: 1px solid var(--line); border-radius: 8px;
       padding: 16px 18px; margin-top: 18px; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 0 18px; align-items: start; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; font-size: 12px; text-transform: uppercase; letter-spacing: .03em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.note { margin: 8px 0 0; color: var(--muted); font-size: 12px; }
.empty { display: flex; flex-direction: column; align-items: center; justify-content: center; gap: 4px;
         min-height: 180px; border: 2px dashed var(--line); border-radius: 6px; color: var(--muted); }
.empty strong { font-size: 16px; color: var(--ink); }
svg.chart { display: block; max-width: 100%; height: auto; }
svg.chart text { font-family: inherit; fill: var(--ink); }
svg.chart .tick { font-size: 10px; fill: var(--muted); }
svg.chart .legend { font-size: 11px; }
svg.chart .axis-label { font-size: 11px; font-weight: 600; }
svg.chart .grid { stroke: #eceef2; }
svg.chart .axis { stroke: #8a93a3; }
svg.chart .reference { stroke: #D55E00; stroke-width: 1.5; stroke-dasharray: 5 3; }
svg.chart .reference-label { font-size: 10px; fill: #D55E00; }
svg.chart rect.bar:hover { opacity: .8; }
.pill { display: inline-block; padding: 0 6px; border-radius: 9px; font-size: 12px; }
.pill.auto { background: #e3f1ec; color: #05603a; }
.pill.you { background: #fbe7df; color: #8a2b06; }
footer { margin-top: 22px; color: var(--muted); font-size: 12px; }
"""


def document(title: str, subtitle: str, body: Sequence[str]) -> str:
    """The whole page."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            # Nothing may load from elsewhere: the page must open the same offline, years later.
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
            "img-src data:\">"
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{escape(title)}</h1><p>{escape(subtitle)}</p></header>"
            + "".join(body) + "</body></html>\n")


def models_table(doc: dict[str, Any]) -> str:
    """One row per batch model: last run, in flight, billed, committed, failures."""
    head = ("<tr><th>batch model</th><th>last ran (UTC)</th><th>in flight</th><th>billed</th>"
            "<th>committed</th><th>failures</th></tr>")
    body = []
    for m in doc["models"]:
        s, f, flight = m["spend"], m["failures"], m["in_flight"]
        committed = ("–" if not s["requests_in_flight"]
                     else "unknown" if s["committed_usd"] is None else usd(s["committed_usd"]))
        failures = "–" if f is None else f"{f['total']}" + (f" ({f['needs_you']} need you)" if f["needs_you"] else "")
        body.append(
            f"<tr><td>{escape(m['model_id'])}</td><td>{escape((m['last_run'].get('at') or 'never').replace('T', ' ').rstrip('Z'))}"
            f"{escape(_run_outcome(m['last_run']))}</td>"
            f"<td class=\"num\">{_count(flight['batches'], 'batch', 'batches')}, "
            f"{_count(flight['requests'], 'request', 'requests')}</td>"
            f"<td class=\"num\">{usd(s['billed_usd'] or 0)}</td><td class=\"num\">{committed}</td>"
            f"<td class=\"num\">{failures}</td></tr>")
    return (f'<section class="block" id="models"><h2>Batch models</h2><table>{head}{"".join(body)}</table>'
            '<p class="note">Billed: every attempt harvested so far, answers later replaced included. Committed: '
            "requests in flight at this model's average billed cost per request.</p></section>")


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _run_outcome(run: dict[str, Any]) -> str:
    return f" · {run['outcome']}" if run.get("outcome") else ""


def failures_table(doc: dict[str, Any]) -> str:
    """Current failures (latest attempt per key) by kind, with the next action in words."""
    rows = []
    for m in doc["models"]:
        for g in (m["failures"] or {}).get("by_kind", []):
            kind = g["kind"] + (f"/{g['error_type']}" if g["error_type"] and g["error_type"] != g["kind"] else "")
            who = ('<span class="pill auto">retried automatically</span>' if g["retried_automatically"]
                   else '<span class="pill you">needs you</span>' if g["retried_automatically"] is False else "")
            rows.append(f"<tr><td>{escape(m['model_id'])}</td><td>{escape(kind)}</td><td class=\"num\">{g['count']}</td>"
                        f"<td>{who} {escape(g['next_action'] or g['example_message'] or '')}</td></tr>")
    if not rows:
        return ('<section class="block" id="failures"><h2>Current failures by kind</h2>'
                '<div class="empty" data-empty="failures"><strong>No failures</strong>'
                "<span>every key's latest attempt succeeded or is in flight.</span></div></section>")
    return ('<section class="block" id="failures"><h2>Current failures by kind</h2><table><tr><th>batch model</th>'
            f"<th>kind</th><th>keys</th><th>next action</th></tr>{''.join(rows)}</table></section>")
