"""The plan's written rationale for each lever a user can pull: route, max_tokens, prompt caching and
de-duplication, from the plan's figures and this model's history (pure: no state, no API)."""

from __future__ import annotations

import math

from dbt_claude_batch.base.pricing import estimate_input_tokens, list_price
from dbt_claude_batch.base.prompts import request_params
from dbt_claude_batch.base.settings import Settings

# Cached prefixes shorter than this are not cached at all (the minimum is 1,024 to 4,096 tokens by model).
MIN_CACHEABLE_TOKENS = 1024
CACHE_READ_SHARE = 0.1
CACHE_WRITE_PREMIUM = {"5m": 0.25, "1h": 1.0}


def levers(cfg: Settings, route: str, route_why: str, lines: int, shared: int, avg_line_cost: float,
           history: dict, median: float | None, discount: float) -> dict[str, str]:
    """Each lever's written rationale: route, max_tokens, caching of the shared prefix, de-duplication."""
    turnaround = f"; this model's batches took {median:.2f} h (median)" if median is not None else ""
    if route == "batch":
        route_text = (f"batch ({route_why}): the Message Batches API costs half the synchronous price and answers "
                      f"within 24 h{turnaround}; `mode: sync` answers at once for twice the price")
    else:
        route_text = (f"sync ({route_why}): answers come at once at full price; `mode: batch` halves the price for "
                      "an answer within 24 h")
    if history["n"]:
        max_tokens = (f"max_tokens {cfg.max_tokens}: past answers used {history['output_mean']:.0f} tokens on "
                      f"average (p90 {history['output_p90']:.0f}, at most {history['output_max']}); "
                      f"{history['truncated']} were cut at max_tokens")
        if history["truncated"]:
            max_tokens += "; truncated answers are retried with max_tokens doubled, up to max_tokens_cap"
        elif history["output_max"] and history["output_max"] * 2 < cfg.max_tokens:
            max_tokens += (f"; about {math.ceil(history['output_max'] * 1.5)} would still leave room and tighten the "
                           "worst case of the estimate and the budget check")
    else:
        max_tokens = (f"max_tokens {cfg.max_tokens} bounds each answer: the high end of the output range assumes "
                      "every answer uses it all; after a first run the plan uses this model's real usage")
    prefix = max(0, estimate_input_tokens(request_params(cfg, "", cfg.model)) - 4) if (cfg.system or cfg.few_shot) else 0
    price = list_price(cfg.model or "", cfg.prices)
    if not prefix:
        caching = "no shared prefix (no system prompt or few_shot examples): nothing to cache"
    elif prefix < MIN_CACHEABLE_TOKENS:
        caching = (f"the shared prefix is about {prefix} tokens, under the minimum a cache entry needs "
                   f"({MIN_CACHEABLE_TOKENS:,} to 4,096 tokens by model): caching would save nothing"
                   + ("; `prompt_caching` could be turned off" if cfg.prompt_caching else ""))
    else:
        saving = 0.0
        if price and lines > 1:
            premium = CACHE_WRITE_PREMIUM.get(cfg.cache_ttl, 1.0)
            saving = prefix * price[0] / 1e6 * discount * ((lines - 1) * (1 - CACHE_READ_SHARE) - premium)
        verdict = "on" if cfg.prompt_caching else "off; `prompt_caching: true` would"
        caching = (f"{verdict}: the shared prefix is about {prefix} tokens in each of {lines} request(s); cache reads "
                   f"cost 10% of input, so caching saves up to ${max(saving, 0.0):.4f} (in a batch, hits are best "
                   "effort)")
    if not cfg.dedupe:
        dedup = "`dedupe` is off: rows with identical requests are each bought"
    elif shared:
        dedup = (f"{shared} row(s) ask exactly what another row asks and share its request: about "
                 f"${shared * avg_line_cost:.4f} saved")
    else:
        dedup = "no two rows to send render the same request: de-duplication saves nothing this run"
    return {"route": route_text, "max_tokens": max_tokens, "caching": caching, "dedup": dedup}
