"""Known models, their context limit and prices (USD per million tokens).

Prices follow /work/shared/reference/batches-api.md: haiku 1/5, sonnet 3/15, opus 4.5+ 5/25;
5-minute cache write 1.25x input, 1-hour cache write 2x input, cache read 0.1x input;
the batch discount (50%) applies to every component.
claude-opus-4-1 is not in that table; it is billed at its published 15/75 (an older, dearer
generation), which is what a user of that model would pay.
"""

from __future__ import annotations

import re

CONTEXT_LIMIT = 200_000
BATCH_DISCOUNT = 0.5

# base model name -> (input, output) USD per million tokens
BASE_PRICES: dict[str, tuple[float, float]] = {
    "claude-haiku-4-5": (1.0, 5.0),
    "claude-sonnet-4-5": (3.0, 15.0),
    "claude-sonnet-4-6": (3.0, 15.0),
    "claude-opus-4-5": (5.0, 25.0),
    "claude-opus-4-6": (5.0, 25.0),
    "claude-opus-4-7": (5.0, 25.0),
    "claude-opus-4-1": (15.0, 75.0),
}

_DATED = re.compile(r"^(?P<base>.+)-(?P<date>\d{8})$")


def base_model(name: object) -> str | None:
    """The known base model for `name` (exact or `<name>-YYYYMMDD`), else None."""
    if not isinstance(name, str):
        return None
    if name in BASE_PRICES:
        return name
    m = _DATED.match(name)
    if m and m.group("base") in BASE_PRICES:
        return m.group("base")
    return None


def cost_usd(model: str, usage: dict, batch: bool) -> float:
    """Cost of one Message's usage block."""
    base = base_model(model)
    if base is None:
        return 0.0
    price_in, price_out = BASE_PRICES[base]
    creation = usage.get("cache_creation") or {}
    write_5m = creation.get("ephemeral_5m_input_tokens", 0)
    write_1h = creation.get("ephemeral_1h_input_tokens", 0)
    total = (
        usage.get("input_tokens", 0) * price_in
        + usage.get("output_tokens", 0) * price_out
        + write_5m * price_in * 1.25
        + write_1h * price_in * 2.0
        + (usage.get("cache_read_input_tokens") or 0) * price_in * 0.1
    ) / 1_000_000
    return total * (BATCH_DISCOUNT if batch else 1.0)
