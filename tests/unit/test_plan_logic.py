"""The plan's pure parts: the guard's limit, the estimate's ranges, the levers' rationale, the document's schema."""

from __future__ import annotations

import datetime as dt

import jsonschema
import pytest

from dbt_claude_batch.base.errors import ConfigError
from dbt_claude_batch.base.plan_document import PLAN_SCHEMA, plan_text
from dbt_claude_batch.base.run_vars import RunVars
from dbt_claude_batch.base.settings import Settings
from dbt_claude_batch.run import plan, plan_levers, rebuy

NO_HISTORY = {"n": 0}
HISTORY = {"n": 40, "input_mean": 120.0, "input_p10": 100.0, "input_p90": 150.0, "output_mean": 6.0,
           "output_p10": 3.0, "output_p90": 9.0, "output_max": 12, "truncated": 0}


def cfg(**kw) -> Settings:
    return Settings.build({"key": "id", "prompt_template": "t.j2", "model": "claude-haiku-4-5", "max_tokens": 64,
                           **kw}, {})


@pytest.mark.parametrize("settings, held, limit", [
    ({}, 100, 20), ({}, 4, 1), ({}, 0, 1), ({"max_rebuy_rows": 5}, 100, 5), ({"max_rebuy_rows": 50}, 100, 20),
    ({"max_rebuy_fraction": None}, 100, None), ({"max_rebuy_fraction": None, "max_rebuy_rows": 7}, 100, 7),
])
def test_the_guard_limit_is_the_lower_of_the_share_and_the_rows(settings, held, limit):
    assert rebuy.rebuy_limit(cfg(**settings), held) == limit


@pytest.mark.parametrize("bad", [{"max_rebuy_fraction": 1.5}, {"max_rebuy_fraction": True},
                                 {"max_rebuy_rows": -1}, {"max_rebuy_rows": 2.5}])
def test_guard_settings_out_of_range_are_refused(bad):
    with pytest.raises(ConfigError, match=f"^Setting `{next(iter(bad))}` must be"):
        cfg(**bad)


def test_the_vars_name_every_model_or_one():
    assert RunVars.parse({"claude_batch_plan": True}, "m").plan
    assert RunVars.parse({"claude_batch_allow_rebuy": ["m"]}, "m").allow_rebuy
    assert not RunVars.parse({"claude_batch_allow_rebuy": "other"}, "m").allow_rebuy


def test_output_ranges_run_from_one_token_or_history_to_max_tokens():
    assert plan._output_range(640.0, 10, NO_HISTORY) == (10.0, 640.0, 640.0)
    assert plan._output_range(640.0, 10, HISTORY) == (30.0, 60.0, 640.0)
    assert plan._widen((70.0, 100.0, 130.0), NO_HISTORY, "input", 1) == (70.0, 100.0, 130.0)
    assert plan._widen((70.0, 100.0, 130.0), HISTORY, "input", 1) == (70.0, 100.0, 150.0)


def test_levers_say_why_with_the_numbers():
    text = plan_levers.levers(cfg(system="Answer briefly."), "batch", "mode: batch", 10, 2, 0.001, HISTORY, 0.5, 0.5)
    assert text["route"].startswith("batch (mode: batch): the Message Batches API costs half")
    assert "took 0.50 h (median)" in text["route"]
    assert "past answers used 6 tokens on average (p90 9, at most 12); 0 were cut" in text["max_tokens"]
    assert "about 18 would still leave room" in text["max_tokens"]
    assert "under the minimum a cache entry needs" in text["caching"]
    assert text["dedup"] == "2 row(s) ask exactly what another row asks and share its request: about $0.0020 saved"
    long_system = cfg(system="x" * 8000, prompt_caching=True)
    caching = plan_levers.levers(long_system, "batch", "", 100, 0, 0.0, NO_HISTORY, None, 0.5)["caching"]
    # 2,000 prefix tokens x $1/M x 50% x (99 reads at 90% off - one write at +100%)
    assert caching.startswith("on: the shared prefix is about 2000 tokens in each of 100 request(s)")
    assert f"saves up to ${2000 * 1.0 / 1e6 * 0.5 * (99 * 0.9 - 1.0):.4f}" in caching


def _document() -> dict:
    return {
        "schema_version": 1, "model": "main.m", "planned_at": "2026-12-05T06:00:00Z",
        "rows": {"source": 12, "new": 1, "changed": 1, "retry": 1, "rerun": 0, "resubmit_canceled": 0,
                 "unchanged": 8, "in_flight": 0, "reusable": 1, "reusable_other_state": None, "not_sent": {}},
        "changed_why": {"prompt text": 1}, "retry_by_kind": {"errored": 1},
        "requests": {"to_send": 3, "deduplicated": 0, "batches": 1, "route": "batch", "route_why": "mode: batch"},
        "rebuy": {"rows": 1, "held": 9, "limit": 1, "stops": False, "why": {"prompt text": 1}, "usd": 0.0001},
        "tokens": {"input": {"low": 10, "expected": 20, "high": 30}, "output": {"low": 3, "expected": 9, "high": 192},
                   "basis": "byte heuristic"},
        "cost_usd": {"low": 0.0, "expected": 0.0001, "high": 0.0005, "basis": "batch price"},
        "turnaround_hours": {"median": None, "p90": None, "batches_seen": 0, "window_hours": 24},
        "levers": {"route": "r", "max_tokens": "m", "caching": "c", "dedup": "d"},
    }


def test_a_plan_document_is_valid_and_reads_as_text():
    document = _document()
    jsonschema.validate(document, PLAN_SCHEMA)
    text = plan_text(document)
    assert text.splitlines()[0] == ("plan for main.m: 12 source rows: 1 new, 1 changed (1 prompt text), 1 to retry "
                                    "(1 errored), 8 unchanged, 0 in flight, 1 reusable from held answers")
    assert "no past batch of this model; the API's window is 24 h" in text
    assert "in flight:" not in text
    # A plan calls no API, so it cannot know whether the batches in flight have ended: it says what then.
    flying = plan_text({**document, "rows": {**document["rows"], "in_flight": 4, "unchanged": 4}})
    assert ("  in flight: 4 row(s) in batches not yet harvested: the next run harvests them first, and buys then "
            "those that failed or were edited since they were sent, beyond this plan") in flying.splitlines()
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**document, "schema_version": 2}, PLAN_SCHEMA)


def test_requests_to_a_model_without_a_price_are_named_not_estimated_at_zero():
    import duckdb

    from dbt_claude_batch.state.state import State

    con = duckdb.connect()
    con.execute(f"create temp table {rebuy.VERDICTS} (model varchar, cost double, out_tokens bigint, lines bigint)")
    con.execute(f"insert into {rebuy.VERDICTS} values ('claude-haiku-4-5', 0.001, 640, 10), "
                "('claude-next-preview', 0.0, 320, 5)")
    tokens, cost = plan._estimate(State(con, "s", "main.m"), cfg(), 15, NO_HISTORY, 0.5)
    assert cost["unpriced"] == {"claude-next-preview": 5}
    assert cost["high"] > 0
    document = {
        "schema_version": 1, "model": "main.m", "planned_at": "2026-12-05T06:00:00Z",
        "rows": {"source": 15, "new": 15, "changed": 0, "retry": 0, "rerun": 0, "resubmit_canceled": 0,
                 "unchanged": 0, "in_flight": 0, "reusable": 0, "reusable_other_state": None, "not_sent": {}},
        "changed_why": {}, "retry_by_kind": {},
        "requests": {"to_send": 15, "deduplicated": 0, "batches": 1, "route": "batch", "route_why": "mode: batch"},
        "rebuy": {"rows": 0, "held": 0, "limit": 1, "stops": False, "why": {}, "usd": 0.0},
        "tokens": tokens, "cost_usd": cost,
        "turnaround_hours": {"median": None, "p90": None, "batches_seen": 0, "window_hours": 24},
        "levers": {"route": "r", "max_tokens": "m", "caching": "c", "dedup": "d"},
    }
    jsonschema.validate(document, PLAN_SCHEMA)
    cost_line = next(line for line in plan_text(document).splitlines() if line.startswith("  cost:"))
    assert cost_line.startswith("  cost: unknown for 5 request(s) to claude-next-preview (no price known: add it to "
                                "`prices`); the others $")


def test_the_guard_names_keys_bought_again_from_a_model_without_a_price():
    import duckdb

    from dbt_claude_batch.state.state import State

    con = duckdb.connect()
    state = State(con, "dbt_claude_batch", "main.m")
    state.ensure()
    con.execute("insert into dbt_claude_batch.answers (model_id, custom_id, attempt, key_json, harvest_seq, seq) "
                "select 'main.m', k, 1, '{}', 1, 1 from (values ('a'), ('b'), ('c')) t(k)")
    con.execute(f"create temp table {rebuy.VERDICTS} (key_id varchar, include boolean, reason varchar, "
                "cost double, model varchar)")
    con.execute(f"insert into {rebuy.VERDICTS} values ('a', true, 'changed', 0.001, 'claude-haiku-4-5'), "
                "('b', true, 'changed', 0.0, 'claude-next-preview'), ('c', true, 'changed', 0.0, 'claude-next-preview')")
    settings = cfg()
    assert rebuy._unpriced_rebuys(state, settings) == 2
    message = rebuy.rebuy_message("main.m", 3, 3, {"model": 3}, 0.0005, 1, settings, 2)
    assert "(model changed for 3; estimated at most $0.0005, plus 2 to a model with no known price)" in message
    assert "compacted" not in message
    # After compaction, reverting an edit to a template older than the history kept cannot reuse its answers.
    compacted = rebuy.rebuy_message("main.m", 3, 3, {"template": 3}, 0.0005, 1, settings, 0,
                                    compacted_at=dt.datetime(2026, 12, 1, 6, 0))
    assert ("otherwise revert it (answers of requests older than the history kept, which compaction removed "
            "on 2026-12-01 06:00 UTC under keep_history_days/keep_runs, are not held: a revert to them buys "
            "them again).") in compacted


def test_the_plan_names_the_models_that_hold_what_a_new_model_would_buy():
    document = _document()
    document["rebuy"] = {"rows": 0, "held": 0, "limit": 1, "stops": True, "why": {}, "usd": 0.0,
                         "held_elsewhere": {"main.items_batch": 5}}
    jsonschema.validate(document, PLAN_SCHEMA)
    assert ("re-buy: 0 of 0 held answer(s) would be bought again; 5 request(s) whose answers main.items_batch "
            "holds (the run would stop;") in plan_text(document)


def test_reading_recorded_plans_when_none_is_recorded_says_what_to_do(tmp_path):
    import io

    import duckdb

    from dbt_claude_batch.observe import plan as plan_cli

    path = str(tmp_path / "w.duckdb")
    duckdb.connect(path).close()
    err = io.StringIO()
    assert plan_cli.run(lambda: path, "dbt_claude_batch", None, recorded=True, as_json=False, err=err) == 1
    assert err.getvalue() == ("dbt-claude-batch plan: No plan is recorded: run `dbt-claude-batch plan` without "
                              "--recorded first.\n")


def test_the_input_range_of_a_model_with_attachments_reaches_down_to_half_its_estimate():
    """Pages and images are estimated at their most (3,000 tokens a PDF page, which counts 1,500-3,000):
    the low end must allow for the least, or the range misses what a run of documents really costs."""
    import duckdb

    from dbt_claude_batch.state.state import State

    con = duckdb.connect()
    con.execute(f"create temp table {rebuy.VERDICTS} (model varchar, cost double, out_tokens bigint, lines bigint)")
    # 10 lines of 30,000 input tokens (a 10-page PDF each) and 64 output tokens, at $1 / $5 per million
    con.execute(f"insert into {rebuy.VERDICTS} values ('claude-haiku-4-5', {(300_000 * 1 + 640 * 5) / 1e6}, 640, 10)")
    documents = cfg(attachments=[{"column": "doc", "kind": "document"}])
    tokens, _ = plan._estimate(State(con, "s", "main.m"), documents, 10, NO_HISTORY, 0.5)
    assert (tokens["input"]["low"], tokens["input"]["expected"]) == (150_000, 300_000)
    text, _ = plan._estimate(State(con, "s", "main.m"), cfg(), 10, NO_HISTORY, 0.5)
    assert text["input"]["low"] == 210_000


def test_the_plan_says_whether_the_budget_guard_would_stop_the_run_with_the_guards_own_figure():
    """The guard estimates input as bytes / 4 and output as max_tokens, at the run's route: the plan's
    cost range is another figure, so a CI gate on it could disagree with the run (found by a user test)."""
    import duckdb

    from dbt_claude_batch.state.state import State

    con = duckdb.connect()
    state = State(con, "s", "main.m")
    state.ensure()
    con.execute(f"create temp table {rebuy.VERDICTS} (model varchar, cost double, out_tokens bigint, lines bigint, "
                "batch_cost double)")
    # list prices: $0.010 of batch-lane lines, $0.002 of sync-lane ones (reruns)
    con.execute(f"insert into {rebuy.VERDICTS} values ('claude-haiku-4-5', 0.010, 640, 10, 0.010), "
                "('claude-haiku-4-5', 0.002, 64, 1, 0.0)")
    assert plan._budget(state, cfg(), 0.5) is None  # no limit set: nothing to say
    budget = plan._budget(state, cfg(max_cost_usd=0.0065), 0.5)
    assert budget["estimate_usd"] == 0.007  # 0.010 at half price + 0.002 at list
    assert budget["limits"] == {"max_cost_usd": {"limit": 0.0065, "committed_usd": 0.0, "stops": True}}
    assert not plan._budget(state, cfg(max_cost_usd=0.0075), 0.5)["limits"]["max_cost_usd"]["stops"]
    document = {**_document(), "budget": budget}
    jsonschema.validate(document, PLAN_SCHEMA)
    line = next(x for x in plan_text(document).splitlines() if x.startswith("  budget:"))
    assert line == ("  budget: the guard's estimate $0.007000 at most, plus $0.0000 committed in flight, is over "
                    "max_cost_usd $0.006500: the run would stop before any create")
