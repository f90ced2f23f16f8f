"""What the next run would do, computed from the same staging, planning and rendering as a run.

`claude_batch_plan` runs stop after the spool pass (run/spool.py): the candidate rows are rendered and
their request hashes known, so the plan's counts are the run's own verdicts, not a guess: new,
changed (and which component of the request changed, from the components recorded with each
request), retried (by the previous failure's kind), unchanged, in flight, and reusable from answers
held in state (the very query the run's reuse uses). Nothing is recorded but the plan itself: no
template error, alias or reuse is written, no API is called. The re-buy guard reads the same
verdicts in a real run, after reuse and before any create (run/rebuy.py).
"""

from __future__ import annotations

from contextlib import nullcontext

import json
from typing import Any

from dbt_claude_batch.base.plan_document import PLAN_SCHEMA_VERSION
from dbt_claude_batch.base.pricing import BATCH_DISCOUNT, list_price
from dbt_claude_batch.base.settings import Settings
from dbt_claude_batch.run.plan_levers import levers
from dbt_claude_batch.run.planning import PENDING, RENDERED, STAGED
from dbt_claude_batch.run.rebuy import VERDICTS, build_verdicts, changed_why, held_elsewhere, rebuy_figures, rebuy_limit
from dbt_claude_batch.state.queries import turnaround_hours, usage_history
from dbt_claude_batch.state.state import State, utcnow

# The byte heuristic (UTF-8 bytes / 4) is exact for the emulator and within about this share of real
# tokenizers on prose; the plan's input range is the estimate times (1 -/+ this).
HEURISTIC_SPREAD = 0.3
# With attachments, the low end of the input range: half the estimate (pages at 1,500 tokens, not 3,000).
ATTACHMENT_LOW = 0.5
# With count_tokens on a sample, the rest of the rows still vary around the sample's ratio.
COUNTED_SPREAD = 0.1


# Fields of a Messages body that count_tokens takes (max_tokens and the like it refuses).
_COUNTED_FIELDS = ("model", "messages", "system", "tools", "tool_choice", "thinking", "output_config")


def counted_ratio(client, lines: list[tuple[bytes, float]]) -> float | None:
    """count_tokens (free of charge) on sampled request lines, over their byte-heuristic estimates:
    the factor that turns the heuristic into the model's own count. `lines`: (request line, estimate)."""
    counted = estimated = 0.0
    for line, estimate in lines:
        params = json.loads(line)["params"]
        counted += client.messages.count_tokens(**{k: v for k, v in params.items() if k in _COUNTED_FIELDS}).input_tokens
        estimated += estimate
    return counted / estimated if estimated else None


def sample_lines(state: State, cfg: Settings, paths: dict[int, str], n: int) -> list[tuple[bytes, float]]:
    """The first `n` request lines the run would send, each with its byte-heuristic input estimate."""
    out = []
    for chunk, offset, length, cost, max_tokens, model in state.run(
            f"select r.chunk, r.line_offset, r.line_length, r.cost, r.max_tokens, p.__cb_model from {RENDERED} r "
            f"join {PENDING} p on p.__cb_ordinal = r.ordinal where r.include and r.dedup_of is null "
            f"and r.line_offset is not null order by r.ordinal limit {int(n)}"):
        price = list_price(model, cfg.prices)
        if price is None or chunk not in paths:
            continue
        with open(paths[chunk], "rb") as spool:
            spool.seek(offset)
            line = spool.read(length).rstrip(b",\n")
        out.append((line, (float(cost) * 1e6 - float(max_tokens) * price[1]) / price[0]))
    return out


def plan_and_record(state: State, cfg: Settings, prompt, source_sql: str, n_staged: int, run_vars) -> dict[str, Any]:
    """On the staged rows: plan and render them as a run would, compute the plan, record it and log it."""
    from dbt_claude_batch.api.client import LazyClient, require_api_key
    from dbt_claude_batch.base.log import logger
    from dbt_claude_batch.base.plan_document import plan_text
    from dbt_claude_batch.run import planning
    from dbt_claude_batch.run.local_outcomes import held_answer_matches_sql, source_matches_sql, wants_answers
    from dbt_claude_batch.state.answer_sources import open_sources
    from dbt_claude_batch.run.spool import build_spool
    from dbt_claude_batch.state.plans import record_plan
    from dbt_claude_batch.state.workdir import scratch

    planning.plan(state, cfg.max_attempts, run_vars.resubmit_canceled, cfg.effective_max_tokens_cap, cfg.max_tokens,
                  can_split=cfg.split_column is not None, rerun_filter=run_vars.rerun_filter(cfg.key))
    with scratch() as tmp:
        spool = build_spool(state, prompt, cfg, tmp, source_sql)
        counted = None
        if cfg.count_tokens_sample:  # free of charge, but an API call: only when the user allows it
            lines = sample_lines(state, cfg, {c.index: c.path for c in spool.chunks}, cfg.count_tokens_sample)
            require_api_key()
            with LazyClient() as api:
                ratio = counted_ratio(api.get(), lines) if lines else None
            counted = (ratio, len(lines)) if ratio else None
        local = held_answer_matches_sql(state)
        # Answer sources (other states, imported answers) are read as the run reads them: attached read-only.
        opened = (open_sources(state.cursor, state.schema, cfg.answer_sources, prompt.project_dir)
                  if wants_answers(state) else nullcontext([]))
        with opened as sources:
            reusable, other = local, None
            if sources:
                matches = " union ".join(source_matches_sql(s) for s in sources)
                other = state.run(f"select count(*) from ({matches}) m where (m.ordinal, m.custom_id) not in "
                                  f"(select (ordinal, custom_id) from ({local}))")[0][0]
                reusable = (f"select ordinal, custom_id, any_value(from_batch) as from_batch, any_value(from_custom_id) "
                            f"as from_custom_id from ({local} union all select ordinal, custom_id, null, null "
                            f"from ({matches})) group by all")
            document = compute(state, cfg, n_staged, reusable, counted, other)
    record_plan(state, document)
    logger.info(plan_text(document))
    return document


def compute(state: State, cfg: Settings, n_staged: int, reusable_sql: str,
            counted: tuple[float, int] | None = None, reusable_other: int | None = None) -> dict[str, Any]:
    """The plan document (base/plan_document.py) from the staged, planned and rendered temp tables;
    `counted`: count_tokens' factor over the byte heuristic and the size of its sample."""
    from dbt_claude_batch.run.dispatch import choose_route

    build_verdicts(state, reusable_sql)
    try:
        document = _document(state, cfg, n_staged, choose_route, counted)
        document["rows"]["reusable_other_state"] = reusable_other
        return document
    finally:
        state.run(f"drop table if exists {VERDICTS}")


def _document(state: State, cfg: Settings, n_staged: int, choose_route,
              counted: tuple[float, int] | None = None) -> dict[str, Any]:
    by_reason = dict(state.run(f"select reason, count(*) from {VERDICTS} group by all"))
    sent = {r: by_reason.get(r, 0) for r in ("new", "changed", "retry", "rerun", "resubmit_canceled")}
    not_sent = {r: n for r, n in by_reason.items()
                if r not in sent and r not in ("reused", "unchanged") and n}
    in_flight = state.run(
        f"select count(*) from {STAGED} where __cb_custom_id in (select custom_id from ({state.flying_requests_sql()}))"
    )[0][0]
    candidates = sum(by_reason.values())
    retry_by_kind = dict(state.run(
        f"select coalesce(prev_result, 'unknown'), count(*) from {VERDICTS} where reason in ('retry', "
        "'resubmit_canceled') group by all order by all"))
    lines, shared, batch_lines = state.run(
        f"select coalesce(sum(lines), 0), coalesce(sum(shared), 0), "
        f"coalesce(sum(lines) filter (where batch_chunks > 0), 0) from {VERDICTS}")[0]
    n_batches = state.run(f"select count(distinct c) from (select unnest(chunk_list) as c from {VERDICTS})")[0][0]
    route, route_why = choose_route(cfg, int(batch_lines))
    discount = BATCH_DISCOUNT if route == "batch" else 1.0
    n_rebuy, held, rebuy_why, rebuy_cost = rebuy_figures(state)
    limit = rebuy_limit(cfg, held)
    elsewhere = held_elsewhere(state) if not held else {}
    limit_elsewhere = rebuy_limit(cfg, sum(elsewhere.values()))
    history = usage_history(state)
    tokens, cost = _estimate(state, cfg, int(lines), history, discount, counted)
    median, p90, n_turned = turnaround_hours(state)
    avg_line_cost = cost["expected"] / lines if lines else 0.0
    return {
        "schema_version": PLAN_SCHEMA_VERSION,
        "model": state.model_id,
        "planned_at": utcnow().isoformat(timespec="seconds") + "Z",
        "rows": {
            "source": int(n_staged), **{k: int(v) for k, v in sent.items()},
            "unchanged": int(n_staged - in_flight - candidates + by_reason.get("unchanged", 0)),
            "in_flight": int(in_flight), "reusable": int(by_reason.get("reused", 0)),
            # Of `reusable`, answered from answer sources (compute): null while no source is configured.
            "reusable_other_state": None,
            "not_sent": {k: int(v) for k, v in sorted(not_sent.items())},
        },
        "changed_why": changed_why(state, "x.include and x.reason = 'changed'") if sent["changed"] else {},
        "retry_by_kind": {k: int(v) for k, v in retry_by_kind.items()},
        "requests": {"to_send": int(lines), "deduplicated": int(shared),
                     "batches": int(n_batches) if route == "batch" else 0, "route": route, "route_why": route_why},
        "rebuy": {"rows": int(n_rebuy), "held": int(held), "limit": limit,
                  "stops": bool(n_rebuy and limit is not None and n_rebuy > limit) or bool(
                      elsewhere and limit_elsewhere is not None and sum(elsewhere.values()) > limit_elsewhere),
                  "why": rebuy_why, "usd": round(rebuy_cost * discount, 6),
                  "held_elsewhere": {k: int(v) for k, v in elsewhere.items()}},
        "tokens": tokens,
        "cost_usd": cost,
        "turnaround_hours": {"median": median, "p90": p90, "batches_seen": int(n_turned), "window_hours": 24},
        "levers": levers(cfg, route, route_why, int(lines), int(shared), avg_line_cost, history, median, discount),
        **({"budget": budget} if (budget := _budget(state, cfg, discount)) is not None else {}),
    }


def _budget(state: State, cfg: Settings, discount: float) -> dict[str, Any] | None:
    """What the budget guard (dispatch.check_budget) would decide, with its own estimate: input as bytes / 4
    tokens and output as max_tokens at list price, batch-lane lines at this run's discount. None without
    a limit. (`cost_usd` is another figure: a range from usage history, not what the guard compares.)"""
    from dbt_claude_batch.run.dispatch import budget_limits

    if cfg.max_cost_usd is None and cfg.max_cost_usd_all_models is None:
        return None
    total, batch = state.run(f"select coalesce(sum(cost), 0), coalesce(sum(batch_cost), 0) from {VERDICTS}")[0]
    estimate = float(total) - float(batch) + float(batch) * discount
    limits = {setting: {"limit": b["limit"], "committed_usd": round(b["committed_usd"], 6), "stops": b["stops"]}
              for setting, b in budget_limits(cfg, state, estimate).items()}
    return {"estimate_usd": round(estimate, 6), "limits": limits,
            "basis": "the budget guard's worst case: input as UTF-8 bytes / 4 tokens, output as max_tokens"}


def _estimate(state: State, cfg: Settings, lines: int, history: dict, discount: float,
              counted: tuple[float, int] | None = None) -> tuple[dict, dict]:
    """Token and USD ranges for the lines to send: the byte heuristic, widened by this model's history."""
    per_model = state.run(f"select model, sum(cost), sum(out_tokens), sum(lines) from {VERDICTS} "
                          "where lines > 0 group by all")
    unpriced: dict[str, int] = {}
    heuristic_in = out_high = 0.0
    totals = {"low": 0.0, "expected": 0.0, "high": 0.0}
    spans = []
    for model, list_usd, max_out, n in per_model:
        price = list_price(model, cfg.prices)
        if price is None:
            unpriced[model] = int(n)
            continue
        # The spool priced each line as (input estimate * input price + max_tokens * output price): the
        # input estimate is recovered from it exactly.
        est_in = max(0.0, (float(list_usd) * 1e6 - float(max_out) * price[1]) / price[0])
        spread = HEURISTIC_SPREAD
        if counted:  # the model's own count on a sample: the heuristic scaled, a narrower band
            est_in, spread = est_in * counted[0], COUNTED_SPREAD
        # Pages and images are estimated at their most (a PDF page counts 1,500-3,000 tokens): the low end of
        # a model with attachments allows for the least.
        low = est_in * (ATTACHMENT_LOW if cfg.attachments else 1 - spread)
        in_range = _widen((low, est_in, est_in * (1 + spread)), history, "input", n)
        out_range = _output_range(float(max_out), n, history)
        heuristic_in += est_in
        out_high += float(max_out)
        spans.append((in_range, out_range))
        for i, key in enumerate(("low", "expected", "high")):
            totals[key] += (in_range[i] * price[0] + out_range[i] * price[1]) / 1e6 * discount
    tokens = {
        "input": _as_range(tuple(sum(s[0][i] for s in spans) for i in range(3))),
        "output": _as_range(tuple(sum(s[1][i] for s in spans) for i in range(3))),
        "basis": _basis(history, lines) + (f"; input scaled by {counted[0]:.3f}, the ratio count_tokens gave on "
                                           f"{counted[1]} sampled request(s) (range +/-{COUNTED_SPREAD:.0%})"
                                           if counted else ""),
    }
    if unpriced:
        tokens["basis"] += f"; requests to {', '.join(sorted(unpriced))} not counted (no price known)"
    note = "batch price (50% of list)" if discount < 1 else "synchronous list price"
    basis = f"{note}; the tokens' basis applies; cache writes and reads not counted"
    if unpriced:
        basis += f"; no price known for {', '.join(sorted(unpriced))} (not counted: add it to `prices`)"
    return tokens, {**{k: round(v, 6) for k, v in totals.items()}, "basis": basis, "unpriced": unpriced}


def _widen(band: tuple[float, float, float], history: dict, side: str, n: int) -> tuple[float, float, float]:
    if not history["n"]:
        return band
    low = min(band[0], n * float(history[f"{side}_p10"]))
    high = max(band[2], n * float(history[f"{side}_p90"]))
    return low, band[1], high


def _output_range(max_out: float, n: int, history: dict) -> tuple[float, float, float]:
    """max_tokens is the only hard bound on output; history gives the expected value and the low end."""
    if not history["n"]:
        return float(n), max_out, max_out
    mean = min(max_out, n * float(history["output_mean"]))
    return min(mean, n * float(history["output_p10"])), mean, max_out


def _as_range(values: tuple) -> dict[str, float]:
    low, expected, high = (round(float(v)) for v in values) if values else (0, 0, 0)
    return {"low": low, "expected": expected, "high": high}


def _basis(history: dict, lines: int) -> str:
    if not lines:
        return "nothing to send"
    if history["n"]:
        return (f"this model's usage history ({history['n']} answered request(s): input p10-p90 "
                f"{history['input_p10']:.0f}-{history['input_p90']:.0f}, output mean {history['output_mean']:.0f} "
                "tokens) and the byte heuristic (UTF-8 bytes / 4) on the rendered requests; output at most max_tokens")
    return ("byte heuristic: no usage history for this model yet; input is the rendered requests' UTF-8 bytes / 4 "
            f"(range +/-{HEURISTIC_SPREAD:.0%}), output between 1 token and max_tokens per request (expected: "
            "max_tokens, the worst case)")

