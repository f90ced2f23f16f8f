"""The one place an `anthropic.Anthropic` client is built.

The key is read from the environment only, never from config (dbt writes config into `target/`),
and never appears in a message.
"""

from __future__ import annotations

import os

import anthropic

from dbt_claude_batch.errors import MissingApiKeyError

API_KEY_ENV = "ANTHROPIC_API_KEY"
BASE_URL_ENV = "ANTHROPIC_BASE_URL"


def build_client(max_retries: int = 4, timeout: float = 600.0) -> anthropic.Anthropic:
    """A client with the SDK's retries for idempotent calls; batch creation opts out per call."""
    if not os.environ.get(API_KEY_ENV):
        raise MissingApiKeyError(
            f"{API_KEY_ENV} is not set: export your Anthropic API key in the environment that runs dbt "
            f"(for the local emulator any value works, with {BASE_URL_ENV}=http://127.0.0.1:PORT). "
            "Never put the key in dbt config: dbt writes config into target/."
        )
    # base_url comes from ANTHROPIC_BASE_URL when set, as the SDK does by itself.
    return anthropic.Anthropic(max_retries=max_retries, timeout=timeout)
