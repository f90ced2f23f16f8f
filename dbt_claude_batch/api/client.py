"""The one place an `anthropic.Anthropic` client is built.

The key is read from the environment only, never from config (dbt writes config into `target/`),
and never appears in a message. The SDK is imported on first use: importing it costs most of a second,
and a run with nothing in flight and nothing to submit never needs it. A run that will need it starts
the import early on a thread of its own, so that second passes while DuckDB stages and plans.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import TYPE_CHECKING

from dbt_claude_batch.base.errors import ConfigError, MissingApiKeyError

if TYPE_CHECKING:
    import anthropic

API_KEY_ENV = "ANTHROPIC_API_KEY"
BASE_URL_ENV = "ANTHROPIC_BASE_URL"


def require_api_key() -> None:
    """Fail before any work when the key is missing, or could not go in a header as it is."""
    check_base_url()
    key = os.environ.get(API_KEY_ENV)
    if not key:
        raise MissingApiKeyError(
            f"{API_KEY_ENV} is not set: export your Anthropic API key in the environment that runs dbt "
            f"(for the local emulator any value works, with {BASE_URL_ENV}=http://127.0.0.1:PORT). "
            "Never put the key in dbt config: dbt writes config into target/."
        )
    if not key.isascii() or any(c.isspace() or not c.isprintable() for c in key):
        # httpx would refuse the header with a message that quotes the key, and that message would be logged.
        raise MissingApiKeyError(
            f"{API_KEY_ENV} has whitespace or a control character in it: remove it where the secret is made "
            "(a secret read from a file keeps its trailing newline: write the file with `printf %s`). The key "
            "is not shown here."
        )


def redact(text: str) -> str:
    """`text` with the API key, wherever it appears, masked: for messages that quote what a library saw."""
    key = (os.environ.get(API_KEY_ENV) or "").strip()
    return text.replace(key, "***") if len(key) >= 8 else text


def base_url_hint() -> str:
    """A second line for errors when ANTHROPIC_BASE_URL looks wrong, else nothing."""
    url = (os.environ.get(BASE_URL_ENV) or "").rstrip("/")
    if url.endswith("/v1"):
        return (f"\n{BASE_URL_ENV} is {url!r}: it must not end in /v1 (the SDK adds /v1/... itself); "
                f"use {url[:-3]!r}.")
    return ""


def check_base_url() -> None:
    """A base URL ending in /v1 makes every call a 404: say so before any work."""
    hint = base_url_hint()
    if hint:
        raise ConfigError(f"{BASE_URL_ENV} ends in /v1: remove the /v1 suffix and run again.{hint}")


def is_sdk_error(exc: BaseException, name: str) -> bool:
    """Whether `exc` is an instance of the SDK's exception class `name`, without importing the SDK.

    An SDK the warm-up thread is still importing sits in `sys.modules` half initialised, without the
    class yet; then no SDK call has raised, so the answer is no.
    """
    cls = getattr(sys.modules.get("anthropic"), name, None)
    return isinstance(cls, type) and isinstance(exc, cls)


def _import_sdk() -> None:
    try:
        import anthropic  # noqa: F401
    except BaseException:  # noqa: BLE001 - the import on the run's own thread raises it again, where it is seen
        pass


class LazyClient:
    """Builds the client (and imports the SDK) the first time an API call is needed."""

    def __init__(self, max_retries: int = 4, timeout: float = 600.0):
        self.max_retries = max_retries
        self.timeout = timeout
        self._client: anthropic.Anthropic | None = None
        self._warming: threading.Thread | None = None

    def warm(self) -> None:
        """Start importing the SDK on a background thread, for a run that is going to call the API.

        The run's own work meanwhile is mostly DuckDB statements, which let the thread run. Python's
        import lock makes `get()` wait for an import still under way instead of starting a second one.
        """
        if self._warming is None and self._client is None:
            self._warming = threading.Thread(target=_import_sdk, name="dbt_claude_batch-sdk-import", daemon=True)
            self._warming.start()

    def close(self) -> None:
        """Wait for a warm-up import still under way, so none is left running when dbt's process exits."""
        if self._warming is not None:
            self._warming.join()

    def __enter__(self) -> "LazyClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def get(self) -> "anthropic.Anthropic":
        if self._client is None:
            require_api_key()
            import anthropic

            # base_url comes from ANTHROPIC_BASE_URL when set, as the SDK does by itself. The SDK's
            # retries serve idempotent calls; batch creation opts out per call.
            self._client = anthropic.Anthropic(max_retries=self.max_retries, timeout=self.timeout)
        return self._client
