"""The plan document: what the next run of a batch model would do, as JSON (versioned) and as text.

A plan is computed by the run (run/plan.py, on `--vars '{claude_batch_plan: true}'`), recorded in the
state table `plans`, printed in dbt's log and by `dbt-claude-batch plan`. Its JSON shape is
`PLAN_SCHEMA` (JSON Schema, draft 2020-12); `schema_version` changes when a field changes meaning or
goes away (adding a field does not).
"""

from __future__ import annotations

from typing import Any

from dbt_claude_batch.base.pricing import usd

PLAN_SCHEMA_VERSION = 1

_COUNT = {"type": "integer", "minimum": 0}
_COUNTS = {"type": "object", "additionalProperties": _COUNT}
_RANGE = {
    "type": "object",
    "required": ["low", "expected", "high"],
    "properties": {"low": {"type": "number", "minimum": 0}, "expected": {"type": "number", "minimum": 0},
                   "high": {"type": "number", "minimum": 0}},
}
_NULLABLE_NUMBER = {"type": ["number", "null"]}

PLAN_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "dbt-claude-batch plan",
    "type": "object",
    "required": ["schema_version", "model", "planned_at", "rows", "changed_why", "retry_by_kind", "requests",
                 "rebuy", "tokens", "cost_usd", "turnaround_hours", "levers"],
    "properties": {
        "schema_version": {"const": PLAN_SCHEMA_VERSION},
        "model": {"type": "string", "description": "schema.identifier of the batch model"},
        "planned_at": {"type": "string", "description": "UTC, ISO 8601"},
        "rows": {
            "type": "object",
            "required": ["source", "new", "changed", "retry", "unchanged", "in_flight", "reusable",
                         "reusable_other_state", "not_sent"],
            "properties": {
                "source": _COUNT, "new": _COUNT, "changed": _COUNT, "retry": _COUNT, "unchanged": _COUNT,
                "in_flight": _COUNT, "reusable": _COUNT, "rerun": _COUNT, "resubmit_canceled": _COUNT,
                "reusable_other_state": {"type": ["integer", "null"], "minimum": 0,
                                         "description": "answers another state holds (null: none is configured)"},
                "not_sent": _COUNTS,
            },
        },
        "changed_why": _COUNTS,
        "retry_by_kind": _COUNTS,
        "requests": {
            "type": "object",
            "required": ["to_send", "deduplicated", "batches", "route", "route_why"],
            "properties": {"to_send": _COUNT, "deduplicated": _COUNT, "batches": _COUNT,
                           "route": {"enum": ["batch", "sync", "auto"]}, "route_why": {"type": "string"}},
        },
        "rebuy": {
            "type": "object",
            "required": ["rows", "held", "limit", "stops"],
            "properties": {"rows": _COUNT, "held": _COUNT, "limit": {"type": ["integer", "null"]},
                           "stops": {"type": "boolean"}, "why": _COUNTS,
                           "usd": {"type": "number", "minimum": 0,
                                   "description": "at most (worst-case output), at this run's route"},
                           "held_elsewhere": {**_COUNTS, "description": "for a model holding no answer yet: per "
                                              "other model of this state, the keys it would buy whose exact "
                                              "request that model holds an answer for (renamed or copied?)"}},
        },
        "tokens": {
            "type": "object",
            "required": ["input", "output", "basis"],
            "properties": {"input": _RANGE, "output": _RANGE, "basis": {"type": "string"}},
        },
        "cost_usd": {
            "type": "object",
            "required": ["low", "expected", "high", "basis"],
            "properties": {**_RANGE["properties"], "basis": {"type": "string"},
                           "unpriced": {**_COUNTS, "description": "requests per model with no known price: "
                                                                  "not in low/expected/high"}},
        },
        "turnaround_hours": {
            "type": "object",
            "required": ["median", "p90", "batches_seen", "window_hours"],
            "properties": {"median": _NULLABLE_NUMBER, "p90": _NULLABLE_NUMBER, "batches_seen": _COUNT,
                           "window_hours": {"const": 24}},
        },
        "levers": {
            "type": "object",
            "required": ["route", "max_tokens", "caching", "dedup"],
            "additionalProperties": {"type": "string"},
        },
        "budget": {
            "type": "object",
            "description": "present when max_cost_usd or max_cost_usd_all_models is set: what the budget guard "
                           "would decide, with its own estimate",
            "required": ["estimate_usd", "limits", "basis"],
            "properties": {
                "estimate_usd": {"type": "number", "minimum": 0},
                "limits": {"type": "object", "additionalProperties": {
                    "type": "object", "required": ["limit", "committed_usd", "stops"],
                    "properties": {"limit": {"type": "number"}, "committed_usd": {"type": "number", "minimum": 0},
                                   "stops": {"type": "boolean"}}}},
                "basis": {"type": "string"},
            },
        },
    },
}


def _n(value: float) -> str:
    return f"{value:,.0f}"


def plan_text(plan: dict[str, Any]) -> str:
    """The plan for people: a few lines, the numbers first."""
    rows, req, tokens, cost, rebuy = plan["rows"], plan["requests"], plan["tokens"], plan["cost_usd"], plan["rebuy"]
    why = ", ".join(f"{n} {k}" for k, n in plan["changed_why"].items())
    retry = ", ".join(f"{n} {k}" for k, n in plan["retry_by_kind"].items())
    not_sent = ", ".join(f"{n} {k}" for k, n in rows["not_sent"].items())
    other = rows.get("reusable_other_state")
    turn = plan["turnaround_hours"]
    lines = [
        f"plan for {plan['model']}: {rows['source']} source rows: {rows['new']} new, {rows['changed']} changed"
        + (f" ({why})" if why else "") + f", {rows['retry']} to retry" + (f" ({retry})" if retry else "")
        + f", {rows['unchanged']} unchanged, {rows['in_flight']} in flight, {rows['reusable']} reusable from held "
        "answers" + (f", {other} from another state" if other else "")
        + (f"; not sent: {not_sent}" if not_sent else ""),
        f"  would send {req['to_send']} request(s) in {req['batches']} batch(es), route {req['route']} "
        f"({req['route_why']})" + (f"; {req['deduplicated']} row(s) share an identical request" if req['deduplicated']
                                   else ""),
        f"  tokens: input {_n(tokens['input']['low'])}-{_n(tokens['input']['high'])} "
        f"(expected {_n(tokens['input']['expected'])}), output {_n(tokens['output']['low'])}-"
        f"{_n(tokens['output']['high'])} (expected {_n(tokens['output']['expected'])}); basis: {tokens['basis']}",
        "  cost: " + "".join(f"unknown for {n} request(s) to {m} (no price known: add it to `prices`); "
                             for m, n in sorted((cost.get("unpriced") or {}).items()))
        + ("the others " if cost.get("unpriced") else "")
        + f"${cost['low']:.4f}-${cost['high']:.4f} (expected ${cost['expected']:.4f}); {cost['basis']}",
        "  time to results: " + (f"median {turn['median']:.2f} h, p90 {turn['p90']:.2f} h over "
                                 f"{turn['batches_seen']} past batch(es)" if turn["median"] is not None
                                 else "no past batch of this model")
        + f"; the API's window is {turn['window_hours']} h",
        f"  re-buy: {rebuy['rows']} of {rebuy['held']} held answer(s) would be bought again"
        + "".join(f"; {n} request(s) whose answers {m} holds" for m, n in (rebuy.get("held_elsewhere") or {}).items())
        + ((f" (limit {rebuy['limit']}: " if rebuy.get("limit") is not None and rebuy["rows"] > rebuy["limit"]
            else " (") + "the run would stop; --vars '{claude_batch_allow_rebuy: true}' lets it through once)"
           if rebuy["stops"] else ""),
    ]
    for setting, b in (plan.get("budget") or {}).get("limits", {}).items():
        lines.append(f"  budget: the guard's estimate {usd(plan['budget']['estimate_usd'])} at most, plus "
                     f"{usd(b['committed_usd'])} committed in flight, is "
                     + (f"over {setting} {usd(b['limit'])}: the run would stop before any create" if b["stops"]
                        else f"within {setting} {usd(b['limit'])}"))
    if rows["in_flight"]:
        lines.append(f"  in flight: {rows['in_flight']} row(s) in batches not yet harvested: the next run harvests "
                     "them first, and buys then those that failed or were edited since they were sent, beyond this "
                     "plan")
    lines += [f"  {name}: {text}" for name, text in plan["levers"].items()]
    return "\n".join(lines)
