"""Settings of a batch model: keyword arguments over the model's YAML `claude_batch` config.

Validated once, defaults in one place. Nothing secret lives here: the API key comes only from the
environment (see `client.py`), because dbt writes compiled config into `target/`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from dbt_claude_batch.errors import ConfigError

# API version 2026-10-21 (SDK 2.14) rejects these in every request; catching them here saves a
# 24-hour round trip that would end with every row errored.
REJECTED_PARAMS = ("temperature", "top_p", "top_k")
# Set by dedicated settings, or by the product itself.
RESERVED_PARAMS = ("model", "max_tokens", "messages", "system", "stop_sequences", "stream")

API_MAX_REQUESTS_PER_BATCH = 100_000
API_MAX_BATCH_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """Everything one batch model needs; built by `Settings.build`."""

    key: tuple[str, ...]
    model: str | None = None
    model_column: str | None = None
    prompt_template: str | None = None
    prompt_column: str | None = None
    max_tokens: int = 1024
    system: str | None = None
    stop_sequences: tuple[str, ...] | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    max_attempts: int = 3
    wait_seconds: float = 0.0
    poll_interval_seconds: float = 45.0
    max_requests_per_batch: int = API_MAX_REQUESTS_PER_BATCH
    max_batch_bytes: int = 256_000_000
    state_schema: str = "dbt_claude_batch"
    in_doubt_grace_seconds: float = 3600.0

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def build(cls, config: Mapping[str, Any] | None, overrides: Mapping[str, Any]) -> "Settings":
        """Merge keyword arguments over the YAML config dict and validate the result."""
        if config is not None and not isinstance(config, Mapping):
            raise ConfigError(
                "The `claude_batch` config must be a mapping of settings; fix the model's YAML config.\n"
                f"Got: {type(config).__name__}"
            )
        merged: dict[str, Any] = {**(config or {}), **{k: v for k, v in overrides.items() if v is not None}}
        unknown = sorted(set(merged) - set(cls.names()))
        if unknown:
            raise ConfigError(
                f"Unknown setting(s) {', '.join(unknown)}: remove them, or pass Messages API parameters "
                f"inside `params`.\nValid settings: {', '.join(cls.names())}"
            )
        if "key" not in merged:
            raise ConfigError("Setting `key` is missing: name the primary key column(s), e.g. key='ticket_id'.")
        merged["key"] = _as_names("key", merged["key"])
        if merged.get("stop_sequences") is not None:
            merged["stop_sequences"] = tuple(_as_names("stop_sequences", merged["stop_sequences"]))
        merged["params"] = dict(merged.get("params") or {})
        settings = cls(**merged)
        settings._validate()
        return settings

    def _validate(self) -> None:
        if (self.prompt_template is None) == (self.prompt_column is None):
            raise ConfigError(
                "Set exactly one of `prompt_template` (a Jinja file) or `prompt_column` (a column holding "
                "the prompt text)."
            )
        if not self.model and not self.model_column:
            raise ConfigError("Setting `model` is missing: name the Claude model, e.g. model='claude-haiku-4-5'.")
        for name in ("max_tokens", "max_attempts", "max_requests_per_batch", "max_batch_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"Setting `{name}` must be a positive integer; got {value!r}.")
        if self.max_requests_per_batch > API_MAX_REQUESTS_PER_BATCH:
            raise ConfigError(
                f"Setting `max_requests_per_batch` is {self.max_requests_per_batch}; the API accepts at most "
                f"{API_MAX_REQUESTS_PER_BATCH} requests per batch: lower it."
            )
        if self.max_batch_bytes > API_MAX_BATCH_BYTES:
            raise ConfigError(
                f"Setting `max_batch_bytes` is {self.max_batch_bytes}; the API accepts at most "
                f"{API_MAX_BATCH_BYTES} bytes per batch: lower it."
            )
        for name in ("wait_seconds", "poll_interval_seconds", "in_doubt_grace_seconds"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"Setting `{name}` must be a number of seconds >= 0; got {value!r}.")
        if not isinstance(self.params, Mapping):
            raise ConfigError("Setting `params` must be a mapping of Messages API parameters.")
        for name in self.params:
            if name in REJECTED_PARAMS:
                raise ConfigError(
                    f"Parameter `{name}` is rejected by the Messages API (version 2026-10-21) in every "
                    "request: remove it from `params`."
                )
            if name in RESERVED_PARAMS:
                raise ConfigError(
                    f"Parameter `{name}` cannot go in `params`: use the setting of the same name "
                    "(`messages` come from the prompt; `stream` is not allowed in batches)."
                )
        try:
            json.dumps(dict(self.params))
        except TypeError as exc:
            raise ConfigError(f"Setting `params` must be JSON-serialisable: {exc}") from None

    def fingerprint_payload(self) -> dict[str, Any]:
        """The settings that shape a request; any change to them changes every request hash."""
        return {
            "model": self.model,
            "model_column": self.model_column,
            "prompt_column": self.prompt_column,
            "max_tokens": self.max_tokens,
            "system": self.system,
            "stop_sequences": list(self.stop_sequences) if self.stop_sequences else None,
            "params": dict(self.params),
        }


def _as_names(setting: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"Setting `{setting}` must be a string or a non-empty list of strings; got {value!r}.")
    return tuple(value)
