"""What was billed: each outcome priced at list prices, per day and model for `all_spend`, and the
spend compaction moved into `daily_spend` (see compaction.py), which every reader of the bill adds back.

`inspect` (status, report) and the `all_spend` view read the bill through these queries.
"""

from __future__ import annotations

from typing import Any

from dbt_claude_batch.base.identifiers import qualified
from dbt_claude_batch.base.pricing import cost_sql, model_family_sql, prices_cte
from dbt_claude_batch.state.state import marker_sql


def billed_cost_sql(alias: str = "o", prices: str = "p") -> str:
    """What Anthropic billed for one outcome row: nothing without usage (errors), else `pricing.cost_sql`."""
    usage = " + ".join(f"coalesce({alias}.{c}, 0)" for c in (
        "input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))
    return f"(case when {usage} = 0 then 0.0 else {cost_sql(alias, prices)} end)"


def costed_outcomes_sql(schema: str) -> str:
    """A `with` clause ending in `cb_o`: every outcome with its batch kind, `cost` (billed: 0 for an answer
    shared or reused, which was not bought) and `full_cost` (what it would have cost if bought).

    At list prices (`pricing.LIST_PRICES`): a model's own `prices` setting is not in state.
    """
    s = lambda t: qualified(schema, t)  # noqa: E731
    return f"""with {prices_cte()},
        cb_o as (
            select o.*, o.shared_from_ is not null as shared, b.kind, p.input_price,
                   {marker_sql(schema, 'o')} as marker,
                   {billed_cost_sql('o', 'p')} as full_cost,
                   case when o.shared_from_ is not null then 0.0 else full_cost end as cost
            -- shared_from hidden from cost_sql so that it prices the copied usage: what the answer was worth
            from (select * replace (null::varchar as shared_from), shared_from as shared_from_ from {s('outcomes')}) o
            join {s('batches')} b using (batch_id)
            left join cb_prices p on p.model_family = {model_family_sql('o.answered_model')})"""


SPEND_COLUMNS = ("requests_billed", "answers_not_bought", "input_tokens", "output_tokens",
                 "cache_creation_input_tokens", "cache_read_input_tokens", "billed_usd", "saved_usd")


def spend_rows_sql(schema: str, only: str | None = None) -> str:
    """What was billed per day of harvest, batch model and Claude model, from the outcomes held (`only`:
    a condition on `cb_o` narrowing them); what compaction sums into `daily_spend` before it deletes."""
    return f"""{costed_outcomes_sql(schema)}
        select cast(harvested_at as date) as day, model_id as dbt_model, answered_model,
               count(*) filter (where not shared and not marker and result_type <> 'missing'
                                and input_tokens is not null) as requests_billed,
               count(*) filter (where shared) as answers_not_bought,
               sum(input_tokens) filter (where not shared) as input_tokens,
               sum(output_tokens) filter (where not shared) as output_tokens,
               sum(cache_creation_input_tokens) filter (where not shared) as cache_creation_input_tokens,
               sum(cache_read_input_tokens) filter (where not shared) as cache_read_input_tokens,
               coalesce(sum(cost), 0.0) as billed_usd,
               coalesce(sum(full_cost) filter (where shared), 0.0) as saved_usd
        from cb_o where answered_model is not null{f' and ({only})' if only else ''} group by all"""


def spend_view_sql(schema: str) -> str:
    """`all_spend`: what was billed, per day of harvest, batch model and Claude model, every attempt
    included (answers later replaced too; the marker requests too; outcomes compacted away too, from
    `daily_spend`), at list prices. Its sum is the bill."""
    sums = ", ".join(f"sum({c})::{'double' if c.endswith('usd') else 'bigint'} as {c}" for c in SPEND_COLUMNS)
    return f"""select day, dbt_model, answered_model, {sums} from (
        select * from ({spend_rows_sql(schema)})
        union all by name
        select day, model_id as dbt_model, answered_model, {', '.join(SPEND_COLUMNS)}
        from {qualified(schema, 'daily_spend')}) group by all"""


def compacted_spend(cursor, schema: str) -> dict[str, dict[str, Any]]:
    """Per model, the spend of outcomes compaction removed (`daily_spend`): billed USD and requests."""
    if not cursor.execute("select 1 from information_schema.tables where table_catalog = current_database() "
                          "and table_schema = ? and table_name = 'daily_spend'", [schema]).fetchall():
        return {}
    found = cursor.execute(f"""select model_id, coalesce(sum(billed_usd), 0.0), coalesce(sum(requests_billed), 0)
        from {qualified(schema, 'daily_spend')} group by all""").fetchall()
    return {m: {"billed_usd": usd, "billed_requests": n} for m, usd, n in found}
