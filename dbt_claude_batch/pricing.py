"""List prices per million tokens and the SQL that costs a row at batch prices.

Batch requests cost 50% of list price; the discount stacks with prompt caching (cache writes 1.25x
input for the 5-minute TTL and 2x for the 1-hour TTL, cache reads 0.1x).
"""

from __future__ import annotations

from dbt_claude_batch.identifiers import literal

BATCH_DISCOUNT = 0.5

# model family: (input, output) in USD per million tokens
LIST_PRICES: dict[str, tuple[float, float]] = {
    "claude-haiku-4-5": (1.0, 5.0),
    "claude-sonnet-4-5": (3.0, 15.0),
    "claude-sonnet-4-6": (3.0, 15.0),
    "claude-opus-4-5": (5.0, 25.0),
    "claude-opus-4-6": (5.0, 25.0),
    "claude-opus-4-7": (5.0, 25.0),
}
CACHE_WRITE_5M = 1.25
CACHE_WRITE_1H = 2.0
CACHE_READ = 0.1


def prices_cte() -> str:
    rows = ", ".join(f"({literal(m)}, {i}, {o})" for m, (i, o) in LIST_PRICES.items())
    return f"cb_prices(model_family, input_price, output_price) as (values {rows})"


def model_family_sql(model_expr: str) -> str:
    """Dated model names (claude-haiku-4-5-20251001) are priced as their family."""
    return f"regexp_replace({model_expr}, '-[0-9]{{8}}$', '')"


def cost_sql(alias: str = "o", prices: str = "p", factor: float = BATCH_DISCOUNT) -> str:
    """USD cost of one outcome row, given its usage columns and a joined price row."""
    cw = f"coalesce({alias}.cache_creation_input_tokens, 0)"
    cw1h = f"coalesce({alias}.cache_creation_1h_input_tokens, 0)"
    return (
        f"{factor} * ("
        f"coalesce({alias}.input_tokens, 0) * {prices}.input_price"
        f" + coalesce({alias}.output_tokens, 0) * {prices}.output_price"
        f" + ({cw} - {cw1h}) * {prices}.input_price * {CACHE_WRITE_5M}"
        f" + {cw1h} * {prices}.input_price * {CACHE_WRITE_1H}"
        f" + coalesce({alias}.cache_read_input_tokens, 0) * {prices}.input_price * {CACHE_READ}"
        f") / 1e6"
    )
