"""The report's charts and page as pure rendering: titles, axis labels, one bar per value, "no data yet" panels."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import duckdb

from dbt_claude_batch.observe.report import build_report
from dbt_claude_batch.observe.report.charts import bar_chart, hbar_chart, nice_ticks
from dbt_claude_batch.state.state import State

SVG = "{http://www.w3.org/2000/svg}"


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # well-formed XML, or this raises


def test_nice_ticks_cover_the_maximum_in_round_steps():
    assert nice_ticks(0) == [0.0, 1.0]
    assert nice_ticks(10) == [0, 2, 4, 6, 8, 10]
    assert nice_ticks(0.0013) == [0, 0.0005, 0.001, 0.0015]
    assert nice_ticks(37)[-1] >= 37 and len(nice_ticks(37)) <= 6


def test_bar_chart_has_title_axis_labels_legend_and_one_bar_per_value():
    svg = bar_chart("spend", "Spend & <cost>", "day", "USD", ["d1", "d2", "d3"],
                    [("model a", [1.0, 0.0, 2.5]), ("model b", [0.5, 1.0, 0.0])])
    root = _parse(svg)
    assert root.get("aria-label") == "Spend & <cost>" and root.find(f"{SVG}title").text == "Spend & <cost>"
    bars = root.findall(f".//{SVG}rect[@class='bar']")
    assert sorted((b.get("data-series"), float(b.get("data-value"))) for b in bars) == [
        ("model a", 1.0), ("model a", 2.5), ("model b", 0.5), ("model b", 1.0)]
    labels = {t.get("class"): t.text for t in root.iter(f"{SVG}text") if "axis-label" in (t.get("class") or "")}
    assert labels == {"axis-label x-label": "day", "axis-label y-label": "USD"}
    assert [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "legend"] == ["model a", "model b"]
    # stacked: the taller total of d3 (2.5) reaches higher than d1 (1.5)
    heights = {b.get("data-value"): float(b.get("height")) for b in bars}
    assert heights["2.5"] > heights["1.0"] > 0


def test_horizontal_chart_draws_the_reference_line():
    svg = hbar_chart("turnaround", "Turnaround", "hours", "batch", ["b1", "b2"], [("ended", [2.0, 30.0])],
                     reference=(24.0, "24 h"))
    root = _parse(svg)
    assert len(root.findall(f".//{SVG}rect[@class='bar']")) == 2
    assert root.find(f".//{SVG}line[@class='reference']") is not None
    assert any(t.text == "24 h" for t in root.iter(f"{SVG}text"))


def test_a_state_with_no_model_gives_no_data_yet_panels_not_broken_charts():
    con = duckdb.connect()
    State(con, "dbt_claude_batch", "main.t").ensure()
    html = build_report(con, "dbt_claude_batch", "w.duckdb")
    assert html.startswith("<!DOCTYPE html>")
    empty = re.findall(r'data-empty="([a-z-]+)"', html)
    assert empty == ["models", "spend-per-day", "outcome-mix", "turnaround", "tokens", "savings", "top-failures",
                     "failures"]
    assert "<svg" not in html
    assert not re.search(r"(src|href)=\"(https?:)?//", html)  # nothing to fetch


def test_legend_shows_every_model_beyond_eight_inside_the_chart_in_colours_of_their_own():
    names = [f"ticket_model_{i:02d}" for i in range(1, 13)]  # 12 batch models
    for svg in (bar_chart("spend", "Spend", "day", "USD", ["d1", "d2"], [(n, [1.0, 2.0]) for n in names]),
                hbar_chart("turn", "Turnaround", "hours", "batch", ["b1"], [(n, [1.0]) for n in names])):
        root = _parse(svg)
        _, _, width, height = (float(v) for v in root.get("viewBox").split())
        legend = [t for t in root.iter(f"{SVG}text") if t.get("class") == "legend"]
        assert [t.text for t in legend] == names
        for t in legend:  # every entry drawn where the chart shows it, not past its right edge
            x, y = float(t.get("x")), float(t.get("y"))
            assert 0 <= x and x + 6.5 * len(t.text) <= width and 0 < y < height, (t.text, x, y)
        swatches = [r.get("fill") for r in root.iter(f"{SVG}rect") if r.get("class") == "swatch"]
        assert len(swatches) == 12 and len(set(swatches)) == 12  # no two models share a colour
        bars = {b.get("data-series"): b.get("fill") for b in root.findall(f".//{SVG}rect[@class='bar']")}
        assert bars == dict(zip(names, swatches))
        plot_top = min(float(r.get("y")) for r in root.findall(f".//{SVG}rect[@class='bar']"))
        assert max(float(t.get("y")) for t in legend) < plot_top  # the legend does not cover the bars
