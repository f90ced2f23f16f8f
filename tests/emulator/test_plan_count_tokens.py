"""A plan's count_tokens sample, through the real SDK to the emulator (free of charge, no batch)."""

from __future__ import annotations

import json

from dbt_claude_batch.base.pricing import estimate_input_tokens
from dbt_claude_batch.base.prompts import request_params
from dbt_claude_batch.base.settings import Settings
from dbt_claude_batch.run.plan import counted_ratio


def test_the_ratio_is_count_tokens_over_the_estimate_and_costs_nothing(api, emulator):
    cfg = Settings.build({"key": "id", "prompt_template": "t.j2", "model": "claude-haiku-4-5", "max_tokens": 64,
                          "system": "Answer with the label only."}, {})
    lines = []
    for text in ("Item: a short ticket", "Item: a much longer ticket " * 20):
        params = request_params(cfg, text, cfg.model)
        line = json.dumps({"custom_id": "1", "params": params}).encode()
        lines.append((line, 2.0 * estimate_input_tokens(params)))  # an estimate twice the count
    # The emulator counts tokens as the byte heuristic does (emulator/tokens.py), so the ratio is exactly 1/2.
    assert counted_ratio(api, lines) == 0.5
    calls = emulator.ledger(requests=False)["calls"]
    assert sum(calls.get("POST /v1/messages/count_tokens", {}).values()) == 2
    assert "POST /v1/messages/batches" not in calls and "POST /v1/messages" not in calls
