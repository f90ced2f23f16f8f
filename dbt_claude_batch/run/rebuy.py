"""The verdicts of a run's rendered rows, per key, and the re-buy guard that reads them.

`build_verdicts` rolls the spool pass's verdicts (run/spool.py) up to one row per candidate key: what
it would send and its estimate, after the answers reused from state. The plan (plan.py) computes its
document from them; a real run reads them once more, after reuse and before any create, to stop a
run that would buy again more held answers than `max_rebuy_fraction` / `max_rebuy_rows` allow.
"""

from __future__ import annotations

import math

from dbt_claude_batch.base.errors import RebuyGuardError
from dbt_claude_batch.base.identifiers import literal
from dbt_claude_batch.base.pricing import list_price
from dbt_claude_batch.base.settings import Settings
from dbt_claude_batch.run.components import COMPONENTS, components_sql
from dbt_claude_batch.run.planning import PENDING, RENDERED
from dbt_claude_batch.state.compaction import answers_removed_at
from dbt_claude_batch.state.state import State

VERDICTS = "cb_plan_verdicts"

def build_verdicts(state: State, reusable_sql: str | None) -> None:
    """One row per candidate key: its verdict after reuse, the lines it would send and their estimate.

    `reusable_sql` (local_outcomes.held_answer_matches_sql) marks the keys a run would answer from
    state; None when the run has already recorded that reuse in the verdicts table (the guard).
    """
    reused = (f"left join ({reusable_sql}) u on u.ordinal = v.ordinal and u.custom_id = v.custom_id"
              if reusable_sql else "left join (select null::bigint as ordinal, null as custom_id) u on false")
    state.run(
        f"""create or replace temp table {VERDICTS} as
        with v as (select v.*, u.ordinal is not null as reused from {RENDERED} v {reused})
        select v.ordinal, any_value(p.__cb_custom_id) as key_id,
               -- a key in parts is reused only when every part is; else it is what its sent parts are
               coalesce(any_value(v.reason) filter (where v.include and not v.reused),
                        any_value(case when v.reused then 'reused' else v.reason end)) as reason,
               bool_or(v.include and not v.reused) as include,
               count(*) filter (where v.include and not v.reused and v.dedup_of is null) as lines,
               count(*) filter (where v.include and not v.reused and v.dedup_of is not null) as shared,
               coalesce(sum(v.cost) filter (where v.include and not v.reused and v.dedup_of is null), 0) as cost,
               coalesce(sum(v.max_tokens) filter (where v.include and not v.reused and v.dedup_of is null), 0)
                   as out_tokens,
               coalesce(sum(v.cost) filter (where v.include and not v.reused and v.dedup_of is null
                                            and v.lane = 'batch'), 0) as batch_cost,
               count(distinct v.chunk) filter (where v.include and not v.reused and v.dedup_of is null
                                               and v.lane = 'batch') as batch_chunks,
               list(distinct v.chunk) filter (where v.include and not v.reused and v.dedup_of is null
                                              and v.lane = 'batch') as chunk_list,
               any_value(p.__cb_model) as model, any_value({components_sql('p')}) as components,
               any_value(p.__cb_attempt) as attempt, any_value(p.__cb_prev_result) as prev_result
        from v join {PENDING} p on p.__cb_ordinal = v.ordinal
        group by v.ordinal"""
    )


def changed_why(state: State, where: str) -> dict[str, int]:
    """Per component (COMPONENTS' labels): how many of the keys `where` selects differ from their last request."""
    rows = f"""(select x.ordinal, x.components as new, r.components as old
        from {VERDICTS} x left join {state.table('requests')} r
          on r.model_id = {literal(state.model_id)} and coalesce(r.key_custom_id, r.custom_id) = x.key_id
         and r.attempt = x.attempt - 1 and coalesce(r.part, 1) = 1
        where {where})"""
    labels = ", ".join(f"({literal(k)}, {literal(v)}, {i})" for i, (k, v) in enumerate(COMPONENTS.items()))
    found = state.run(
        f"""select c.label, count(distinct x.ordinal) from {rows} x, (values {labels}) c(k, label, i)
        where x.old is not null and json_extract_string(x.new, '$.' || c.k)
              is distinct from json_extract_string(x.old, '$.' || c.k)
        group by c.label, c.i order by c.i""")
    why = {label: n for label, n in found}
    unknown = state.run(f"select count(distinct ordinal) from {rows} x where x.old is null")[0][0]
    if unknown:
        why["unknown (recorded before components were)"] = unknown
    return why


def rebuy_figures(state: State) -> tuple[int, int, dict[str, int], float]:
    """Keys a run would buy again though they hold an answer: (how many, answers held, why, list price)."""
    answers = state.table("answers")
    where = _rebuy_where(state)
    n, cost = state.run(f"select count(*), coalesce(sum(cost), 0) from {VERDICTS} x where {where}")[0]
    held = state.run(f"select count(distinct custom_id) from {answers} where model_id = ?", [state.model_id])[0][0]
    return n, held, (changed_why(state, where) if n else {}), float(cost)


def _rebuy_where(state: State) -> str:
    return (f"x.include and x.reason = 'changed' and exists (select 1 from {state.table('answers')} a where "
            f"a.model_id = {literal(state.model_id)} and a.custom_id = x.key_id)")


def _unpriced_rebuys(state: State, cfg: Settings) -> int:
    """Of the keys bought again, those whose model has no known price (their estimate is not in the sum)."""
    return sum(int(n) for model, n in state.run(
        f"select model, count(*) from {VERDICTS} x where {_rebuy_where(state)} group by all")
        if list_price(model, cfg.prices) is None)


def rebuy_limit(cfg: Settings, held: int) -> int | None:
    """The most held answers a run may buy again without the var (None: no limit)."""
    limits = [cfg.max_rebuy_rows] if cfg.max_rebuy_rows is not None else []
    if cfg.max_rebuy_fraction is not None:
        # One edited row of a small model is not a mass re-buy: the share never stops a single row.
        limits.append(max(1, math.floor(cfg.max_rebuy_fraction * held)))
    return min(limits) if limits else None


def held_elsewhere(state: State) -> dict[str, int]:
    """For a model that holds no answer yet: per other model of this state, the keys this run would buy
    whose exact request (sha256) that model holds a succeeded answer for, anywhere in its history (what
    `answers export` writes), not only as a key's latest answer. A renamed or copied model starts with
    no state of its own, so the guard's count of held answers cannot see what it would buy again."""
    requests, outcomes = state.table("requests"), state.table("outcomes")
    if not state.run(f"select exists (select 1 from {requests} where model_id <> ?)", [state.model_id])[0][0]:
        return {}
    return dict(state.run(
        f"""select r.model_id, count(distinct v.ordinal) from {RENDERED} v
        join {requests} r on r.request_hash = v.request_hash and r.model_id <> ? and coalesce(r.parts, 1) = 1
        join {state.table('submissions')} s using (submission_id)
        join {outcomes} o on o.batch_id = s.batch_id and o.custom_id = r.custom_id and o.result_type = 'succeeded'
        where v.include and v.parts = 1 group by all order by 2 desc, 1""", [state.model_id]))


def check_rebuy(state: State, cfg: Settings, allowed: bool, discount: float) -> None:
    """The guard: stop before any create when a run would buy again more held answers than allowed."""
    if cfg.max_rebuy_fraction is None and cfg.max_rebuy_rows is None:
        return
    build_verdicts(state, None)
    try:
        n, held, why, cost = rebuy_figures(state)
        unpriced = _unpriced_rebuys(state, cfg) if n else 0
        elsewhere = held_elsewhere(state) if not held else {}
    finally:
        state.run(f"drop table if exists {VERDICTS}")
    if elsewhere and sum(elsewhere.values()) > rebuy_limit(cfg, sum(elsewhere.values())):
        if allowed:
            from dbt_claude_batch.base.log import logger

            logger.warning(f"buying {sum(elsewhere.values())} requests whose answers other models of this state "
                           "hold (claude_batch_allow_rebuy)")
            return
        raise RebuyGuardError(held_elsewhere_message(state.model_id, elsewhere))
    limit = rebuy_limit(cfg, held)
    if not n or limit is None or n <= limit:
        return
    if allowed:
        from dbt_claude_batch.base.log import logger

        logger.warning(f"buying again {n} of the {held} held answer(s) (claude_batch_allow_rebuy)")
        return
    raise RebuyGuardError(rebuy_message(state.model_id, n, held, why, cost * discount, limit, cfg, unpriced,
                                        answers_removed_at(state)))


def rebuy_message(model_id: str, n: int, held: int, why: dict[str, int], cost: float, limit: int,
                  cfg: Settings, unpriced: int = 0, compacted_at=None) -> str:
    setting = ("max_rebuy_rows" if cfg.max_rebuy_rows is not None and limit == cfg.max_rebuy_rows
               else "max_rebuy_fraction")
    reasons = ", ".join(f"{k} changed for {v}" for k, v in why.items()) or "their requests changed"
    unknown = f", plus {unpriced} to a model with no known price" if unpriced else ""
    return (f"This run would buy again {n} of the {held} answers held for {model_id} ({reasons}; estimated at most "
            f"${cost:.4f}{unknown}), over {setting} (limit {limit} rows): nothing was submitted. If the change is meant, let "
            "it through once with --vars '{claude_batch_allow_rebuy: true}'; otherwise revert it"
            + (" (answers of requests older than the history kept, which compaction removed on "
               f"{compacted_at:%Y-%m-%d %H:%M} UTC under keep_history_days/keep_runs, are not held: a revert to them "
               "buys them again)" if compacted_at is not None else "") + ".\n"
            "`dbt run --vars '{claude_batch_plan: true}'` (or `dbt-claude-batch plan`) shows the full plan; raise "
            "`max_rebuy_fraction` / `max_rebuy_rows`, or set them to null, to change the guard.")


def held_elsewhere_message(model_id: str, elsewhere: dict[str, int]) -> str:
    owner = next(iter(elsewhere))
    holders = (f"{owner} already holds" if len(elsewhere) == 1
               else ", ".join(f"{m} ({n})" for m, n in elsewhere.items()) + " already hold")
    return (f"This run would buy {sum(elsewhere.values())} requests whose answers {holders} in this state (the same "
            "requests, by sha256: was the model renamed or copied?): nothing was submitted. A model's state is its "
            f"name's, and {model_id} holds none yet. To reuse them at $0: `dbt-claude-batch answers export --model "
            f"{owner} --to answers.parquet`, `dbt-claude-batch answers import --from answers.parquet`, then run "
            "again. To buy them anyway, let it through once with --vars '{claude_batch_allow_rebuy: true}'.")
