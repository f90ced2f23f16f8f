"""Prices and the budget estimate (pure)."""

from __future__ import annotations

from dbt_claude_batch.base.pricing import estimate_input_tokens, list_price


def test_dated_models_are_priced_as_their_family_and_overrides_win():
    assert list_price("claude-haiku-4-5-20251001") == (1.0, 5.0)
    assert list_price("claude-opus-4-1") == (15.0, 75.0)
    assert list_price("my-finetune") is None
    assert list_price("claude-haiku-4-5", {"claude-haiku-4-5": {"input": 2, "output": 9}}) == (2.0, 9.0)


def test_input_estimate_counts_bytes_over_four_per_block_plus_four_per_message():
    params = {
        "system": [{"type": "text", "text": "x" * 40}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "é" * 10}]},
                     {"role": "assistant", "content": "y" * 7},
                     {"role": "user", "content": "hello"}],
    }
    # 40/4 = 10; é is 2 bytes: 20/4 = 5; ceil(7/4) = 2; ceil(5/4) = 2; + 3 messages x 4
    assert estimate_input_tokens(params) == 10 + 5 + 2 + 2 + 12


def test_dollars_under_a_cent_keep_their_digits():
    from dbt_claude_batch.base.pricing import usd

    # A budget of $0.00001 read "$0.0000" in the guard's message, beside an estimate of "$0.0000".
    assert usd(0.00001) == "$0.000010" and usd(0.0000349) == "$0.000035"
    assert usd(0) == "$0.0000" and usd(0.25) == "$0.2500" and usd(1234.5) == "$1,234.50" and usd(None) == "unknown"
