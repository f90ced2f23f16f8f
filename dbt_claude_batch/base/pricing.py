"""Prices, the cost of a harvested row, and the estimate the budget guard uses before submitting.

List prices are USD per million tokens. Batch requests cost 50% of list price; the discount stacks
with prompt caching (cache writes 1.25x input for the 5-minute TTL and 2x for the 1-hour TTL, cache
reads 0.1x). Setting `prices` overrides or adds models: ``{my-model: {input: 3, output: 15}}``.

Estimate (before anything is sent): input tokens = ceil(UTF-8 bytes / 4) of each text block (system,
few-shot examples, the prompt) + 4 per message; output tokens = `max_tokens`, the worst case.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, Mapping

from dbt_claude_batch.base.identifiers import literal

BATCH_DISCOUNT = 0.5

LIST_PRICES: dict[str, tuple[float, float]] = {
    "claude-haiku-4-5": (1.0, 5.0),
    "claude-sonnet-4-5": (3.0, 15.0),
    "claude-sonnet-4-6": (3.0, 15.0),
    "claude-opus-4-5": (5.0, 25.0),
    "claude-opus-4-6": (5.0, 25.0),
    "claude-opus-4-7": (5.0, 25.0),
    "claude-opus-4-1": (15.0, 75.0),
}
CACHE_WRITE_5M = 1.25
CACHE_WRITE_1H = 2.0
CACHE_READ = 0.1

_DATED = re.compile(r"-[0-9]{8}$")


def model_family(model: str) -> str:
    """Dated model names (claude-haiku-4-5-20251001) are priced as their family."""
    return _DATED.sub("", model)


def price_table(overrides: Mapping[str, Any] | None = None) -> dict[str, tuple[float, float]]:
    table = dict(LIST_PRICES)
    for model, price in (overrides or {}).items():
        table[model_family(model)] = (float(price["input"]), float(price["output"]))
    return table


def list_price(model: str, overrides: Mapping[str, Any] | None = None) -> tuple[float, float] | None:
    return price_table(overrides).get(model_family(model))


def unpriced(models: Iterable[str], overrides: Mapping[str, Any] | None = None) -> str:
    """Models without a price, for a message: their names, the priced ones, and how to add a price."""
    known = ", ".join(sorted(price_table(overrides)))
    return (f"{', '.join(sorted(models))} (prices are known for {known}): add it to the "
            "setting `prices`, e.g. prices: {my-model: {input: 3, output: 15}} (USD per million tokens)")


def text_tokens(text: str) -> int:
    """The estimate for one text block: ceil(UTF-8 bytes / 4)."""
    return math.ceil(len(text.encode("utf-8")) / 4) if text else 0


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return text_tokens(content)
    if isinstance(content, list):
        return sum(text_tokens(b.get("text", "")) for b in content if isinstance(b, dict))
    return 0


def estimate_input_tokens(params: Mapping[str, Any]) -> int:
    messages = params.get("messages") or []
    return _content_tokens(params.get("system")) + sum(4 + _content_tokens(m.get("content")) for m in messages)


def prices_cte(overrides: Mapping[str, Any] | None = None) -> str:
    rows = ", ".join(f"({literal(m)}, {i}, {o})" for m, (i, o) in price_table(overrides).items())
    return f"cb_prices(model_family, input_price, output_price) as (values {rows})"


def model_family_sql(model_expr: str) -> str:
    return f"regexp_replace({model_expr}, '-[0-9]{{8}}$', '')"


def cost_sql(alias: str = "o", prices: str = "p") -> str:
    """USD cost of one outcome row from its usage and a joined price row; batch results at 50%.

    A row that shared another row's answer (de-duplication) cost nothing itself.
    """
    cw = f"coalesce({alias}.cache_creation_input_tokens, 0)"
    cw1h = f"coalesce({alias}.cache_creation_1h_input_tokens, 0)"
    factor = f"(case when {alias}.service_tier = 'standard' then 1.0 else {BATCH_DISCOUNT} end)"
    return (
        f"(case when {alias}.shared_from is not null then 0.0 else {factor} * ("
        f"coalesce({alias}.input_tokens, 0) * {prices}.input_price"
        f" + coalesce({alias}.output_tokens, 0) * {prices}.output_price"
        f" + ({cw} - {cw1h}) * {prices}.input_price * {CACHE_WRITE_5M}"
        f" + {cw1h} * {prices}.input_price * {CACHE_WRITE_1H}"
        f" + coalesce({alias}.cache_read_input_tokens, 0) * {prices}.input_price * {CACHE_READ}"
        f") / 1e6 end)"
    )


def usd(value: float | None) -> str:
    """Dollars as messages, status and the report show them: six decimals under a cent (one batch request
    costs a fraction of one, and a limit of $0.00001 must not read as $0.0000), else four, and two from
    $100. None is "unknown"."""
    if value is None:
        return "unknown"
    if 0 < abs(value) < 0.01:
        return f"${value:.6f}"
    return f"${value:,.4f}" if abs(value) < 100 else f"${value:,.2f}"
