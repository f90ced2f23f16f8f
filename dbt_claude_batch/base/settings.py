"""Settings of a batch model: keyword arguments over the model's YAML `claude_batch` config.

Validated once, defaults in one place. Nothing secret lives here: the API key comes only from the
environment (see `client.py`), because dbt writes compiled config into `target/`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from dbt_claude_batch.base.answer_source_specs import parse_answer_sources
from dbt_claude_batch.base.config_refusals import (MESSAGES_API_PARAMS, REJECTED_PARAMS, RESERVED_PARAMS,
                                                    refuse_keys, unknown_param, unknown_settings)
from dbt_claude_batch.base.errors import ConfigError
from dbt_claude_batch.base.media_types import parse_attachments

MODES = ("batch", "sync", "auto")
_TYPE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_ ]*(\([0-9, ]+\))?(\[\])?")
API_MAX_REQUESTS_PER_BATCH = 100_000
API_MAX_BATCH_BYTES = 256 * 1024 * 1024
API_MAX_PDF_PAGES = 100
OVERSIZED_IMAGE = ("downsize", "error")


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
    # a batch created this long before a create's intent (by the server's clock) is still a candidate
    clock_skew_seconds: float = 300.0
    # a run fails (red) when more than this share of what it harvested failed for a reason no retry fixes
    max_failure_ratio: float = 0.5
    # health over time (the `<model>__health` view, the failure_ratio_window test, `status`): the same
    # share over the last runs, or the last hours when set
    health_window_runs: int = 10
    health_window_hours: float | None = None
    max_failure_ratio_window: float = 0.1
    # model names accepted although the Models API does not list them (new or private models)
    extra_models: tuple[str, ...] = ()
    # routing between the Message Batches API and synchronous Messages calls
    mode: str = "batch"
    sync_concurrency: int = 4
    auto_sync_max_requests: int = 100
    deadline_hours: float | None = None
    # cost and the account's queue
    max_cost_usd: float | None = None
    max_cost_usd_all_models: float | None = None
    max_requests_in_flight: int | None = None
    # the re-buy guard and the plan (run/plan.py): a run that would buy again more held answers than
    # this share (or number) stops before any create
    max_rebuy_fraction: float | None = 0.2
    max_rebuy_rows: int | None = None
    # a plan asks count_tokens (free) about this many of the requests it would send (0: never)
    count_tokens_sample: int = 0
    prices: Mapping[str, Any] | None = None
    prompt_caching: bool = False
    cache_ttl: str = "1h"
    few_shot: tuple | None = None
    dedupe: bool = True
    # output and recovery
    output_schema: Mapping[str, Any] | None = None
    output_columns: Mapping[str, str] | None = None
    max_tokens_cap: int | None = None
    split_column: str | None = None
    split_join: str = "concat"
    context_tokens: int = 200_000
    keep_message: bool = False
    # DuckDB's memory limit while the model works, when the profile sets none (null: never touch it)
    memory_limit: str | None = "1GB"
    # documents and images sent with the prompt (see media.py): columns in the order the user declares
    attachments: tuple[Mapping[str, Any], ...] = ()
    attachments_root: str | None = None
    oversized_image: str = "downsize"
    max_pages_per_request: int = 100
    # other states whose answers are reused by exact request hash (answer_source_specs.py)
    answer_sources: tuple[Mapping[str, Any], ...] = ()
    # bounded state and erasure (retention.py, erasure.py)
    keep_history_days: float | None = 30
    keep_runs: int | None = None
    store_prompts: bool | str = False
    delete_batches_after_harvest: bool = False
    on_source_delete: str = "keep"

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
        refuse_keys(merged)  # first: later messages may quote a value
        unknown = sorted(set(merged) - set(cls.names()))
        if unknown:
            raise ConfigError(unknown_settings(unknown, cls.names()))
        if "key" not in merged:
            raise ConfigError("Setting `key` is missing: name the primary key column(s), e.g. key='ticket_id'.")
        merged["key"] = _as_names("key", merged["key"])
        merged["extra_models"] = merged.get("extra_models") or ()
        if merged["extra_models"]:
            merged["extra_models"] = tuple(_as_names("extra_models", merged["extra_models"]))
        if merged.get("stop_sequences") is not None:
            merged["stop_sequences"] = tuple(_as_names("stop_sequences", merged["stop_sequences"]))
        merged["params"] = dict(merged.get("params") or {})
        if merged.get("few_shot") is not None:
            merged["few_shot"] = tuple(merged["few_shot"])
        merged["attachments"] = parse_attachments(merged.get("attachments"))
        merged["answer_sources"] = parse_answer_sources(merged.get("answer_sources"))
        settings = cls(**merged)
        settings._validate()
        return settings

    def _validate(self) -> None:
        for name in ("prompt_caching", "dedupe", "keep_message", "delete_batches_after_harvest"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                hint = (" (a string: write it unquoted, or `{{ env_var(...) | as_bool }}`)"
                        if isinstance(value, str) else "")
                raise ConfigError(f"Setting `{name}` must be true or false; got {value!r}{hint}.")
        if (self.prompt_template is None) == (self.prompt_column is None):
            raise ConfigError(
                "Set exactly one of `prompt_template` (a Jinja file) or `prompt_column` (a column holding "
                "the prompt text)."
            )
        if not self.model and not self.model_column:
            raise ConfigError("Setting `model` is missing: name the Claude model, e.g. model='claude-haiku-4-5'.")
        if self.model is not None and not isinstance(self.model, str):
            raise ConfigError(
                f"Setting `model` must be a model name in quotes, e.g. model: 'claude-haiku-4-5'; got {self.model!r} "
                f"({type(self.model).__name__}): fix it in the model's claude_batch settings."
            )
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
        for name in ("wait_seconds", "poll_interval_seconds", "in_doubt_grace_seconds", "clock_skew_seconds"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"Setting `{name}` must be a number of seconds >= 0; got {value!r}.")
        self._validate_strategy()
        self._validate_attachments()
        self._validate_retention()
        if self.memory_limit is not None:
            from dbt_claude_batch.base.duckdb_memory import parse_size

            if not isinstance(self.memory_limit, str) or not parse_size(self.memory_limit):
                raise ConfigError(
                    f"Setting `memory_limit` must be a size DuckDB understands, like '1GB' or '512MB', or null "
                    f"to leave DuckDB's own limit; got {self.memory_limit!r}."
                )
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
            if name not in MESSAGES_API_PARAMS:
                raise ConfigError(unknown_param(name))
        try:
            json.dumps(dict(self.params))
        except TypeError as exc:
            raise ConfigError(f"Setting `params` must be JSON-serialisable: {exc}") from None

    def _validate_retention(self) -> None:
        days = self.keep_history_days
        if days is not None and (not isinstance(days, (int, float)) or isinstance(days, bool) or days < 0):
            raise ConfigError(f"Setting `keep_history_days` must be a number of days >= 0, or null to keep every "
                              f"request forever; got {days!r}.")
        runs = self.keep_runs
        if runs is not None and (not isinstance(runs, int) or isinstance(runs, bool) or runs < 1):
            raise ConfigError(f"Setting `keep_runs` must be a number of runs >= 1, or null for no runs window; "
                              f"got {runs!r}.")
        if self.store_prompts not in (False, True, "failed_only"):
            raise ConfigError(f"Setting `store_prompts` must be false, true or 'failed_only'; got {self.store_prompts!r}.")
        if self.on_source_delete not in ("keep", "delete"):
            raise ConfigError(f"Setting `on_source_delete` must be 'keep' or 'delete'; got {self.on_source_delete!r}.")

    def _validate_strategy(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"Setting `mode` must be one of {', '.join(MODES)}; got {self.mode!r}.")
        for name in ("sync_concurrency", "auto_sync_max_requests", "context_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"Setting `{name}` must be a positive integer; got {value!r}.")
        if (not isinstance(self.max_failure_ratio, (int, float)) or isinstance(self.max_failure_ratio, bool)
                or not 0 <= self.max_failure_ratio <= 1):
            raise ConfigError(f"Setting `max_failure_ratio` must be a number from 0 to 1; got {self.max_failure_ratio!r}.")
        if (not isinstance(self.max_failure_ratio_window, (int, float)) or isinstance(self.max_failure_ratio_window, bool)
                or not 0 <= self.max_failure_ratio_window <= 1):
            raise ConfigError(f"Setting `max_failure_ratio_window` must be a number from 0 to 1; "
                              f"got {self.max_failure_ratio_window!r}.")
        if (not isinstance(self.health_window_runs, int) or isinstance(self.health_window_runs, bool)
                or self.health_window_runs < 1):
            raise ConfigError(f"Setting `health_window_runs` must be a positive integer; got {self.health_window_runs!r}.")
        if self.health_window_hours is not None and (
                not isinstance(self.health_window_hours, (int, float)) or isinstance(self.health_window_hours, bool)
                or self.health_window_hours <= 0):
            raise ConfigError(f"Setting `health_window_hours` must be a number of hours > 0, or null for the last "
                              f"`health_window_runs` runs; got {self.health_window_hours!r}.")
        if self.max_requests_in_flight is not None and (
                not isinstance(self.max_requests_in_flight, int) or isinstance(self.max_requests_in_flight, bool)
                or self.max_requests_in_flight < 2):
            raise ConfigError(f"Setting `max_requests_in_flight` must be an integer >= 2 (a batch holds at least one "
                              f"row and its marker); got {self.max_requests_in_flight!r}.")
        for name in ("deadline_hours", "max_cost_usd", "max_cost_usd_all_models"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0):
                raise ConfigError(f"Setting `{name}` must be a number >= 0; got {value!r}.")
        if self.max_rebuy_fraction is not None and (
                not isinstance(self.max_rebuy_fraction, (int, float)) or isinstance(self.max_rebuy_fraction, bool)
                or not 0 <= self.max_rebuy_fraction <= 1):
            raise ConfigError(f"Setting `max_rebuy_fraction` must be a number from 0 to 1, or null to turn the share "
                              f"off; got {self.max_rebuy_fraction!r}.")
        if (not isinstance(self.count_tokens_sample, int) or isinstance(self.count_tokens_sample, bool)
                or self.count_tokens_sample < 0):
            raise ConfigError(f"Setting `count_tokens_sample` must be an integer >= 0 (0: never call count_tokens); "
                              f"got {self.count_tokens_sample!r}.")
        if self.max_rebuy_rows is not None and (not isinstance(self.max_rebuy_rows, int)
                                                or isinstance(self.max_rebuy_rows, bool) or self.max_rebuy_rows < 0):
            raise ConfigError(f"Setting `max_rebuy_rows` must be an integer >= 0, or null for no limit in rows; "
                              f"got {self.max_rebuy_rows!r}.")
        if self.prompt_caching and not (self.system or self.few_shot):
            raise ConfigError(
                "Setting `prompt_caching` needs a shared prefix to cache: set `system` and/or `few_shot`."
            )
        if self.cache_ttl not in ("5m", "1h"):
            raise ConfigError(f"Setting `cache_ttl` must be '5m' or '1h'; got {self.cache_ttl!r}.")
        if self.split_join not in ("concat", "json_array"):
            raise ConfigError(f"Setting `split_join` must be 'concat' or 'json_array'; got {self.split_join!r}.")
        if self.max_tokens_cap is not None and (not isinstance(self.max_tokens_cap, int) or self.max_tokens_cap < self.max_tokens):
            raise ConfigError(
                f"Setting `max_tokens_cap` must be an integer >= max_tokens ({self.max_tokens}); got {self.max_tokens_cap!r}."
            )
        if self.few_shot is not None:
            for i, example in enumerate(self.few_shot):
                if not isinstance(example, Mapping) or set(example) != {"user", "assistant"}:
                    raise ConfigError(
                        f"Setting `few_shot` item {i} must be a mapping with exactly `user` and `assistant` texts."
                    )
        if self.output_schema is not None and not isinstance(self.output_schema, Mapping):
            raise ConfigError("Setting `output_schema` must be a JSON schema (a mapping).")
        if self.output_columns is not None:
            if self.output_schema is None:
                raise ConfigError("Setting `output_columns` needs `output_schema`: it flattens fields of the parsed JSON.")
            if not isinstance(self.output_columns, Mapping) or not all(
                isinstance(t, str) and _TYPE_NAME.fullmatch(t) for t in self.output_columns.values()
            ):
                raise ConfigError(
                    "Setting `output_columns` must map column names to DuckDB types, e.g. {label: VARCHAR, score: DOUBLE}."
                )
        if self.prices is not None:
            for model, price in self.prices.items():
                if not isinstance(price, Mapping) or not {"input", "output"} <= set(price):
                    raise ConfigError(
                        f"Setting `prices` entry {model!r} must give `input` and `output` USD per million tokens."
                    )
        if "output_config" in self.params and self.output_schema is not None:
            raise ConfigError("Set the JSON schema once: use `output_schema`, not `params.output_config`.")

    def _validate_attachments(self) -> None:
        if self.oversized_image not in OVERSIZED_IMAGE:
            raise ConfigError(f"Setting `oversized_image` must be one of {', '.join(OVERSIZED_IMAGE)}; "
                              f"got {self.oversized_image!r}.")
        value = self.max_pages_per_request
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= API_MAX_PDF_PAGES:
            raise ConfigError(f"Setting `max_pages_per_request` must be an integer from 1 to {API_MAX_PDF_PAGES} "
                              f"(the API's limit of PDF pages per request); got {value!r}.")
        if self.attachments_root is not None and (not isinstance(self.attachments_root, str)
                                                  or not self.attachments_root.strip()):
            raise ConfigError("Setting `attachments_root` must be a folder path (relative to the dbt project "
                              f"directory) or null; got {self.attachments_root!r}.")
        if self.attachments and self.split_column is not None:
            raise ConfigError("Settings `attachments` and `split_column` cannot be used together yet: remove "
                              "`split_column` from this model (a split prompt would lose its attachments).")

    @property
    def effective_max_tokens_cap(self) -> int:
        return self.max_tokens_cap or min(64_000, max(self.max_tokens, self.max_tokens * 8))

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
            "prompt_caching": self.prompt_caching,
            "cache_ttl": self.cache_ttl if self.prompt_caching else None,
            "few_shot": [dict(e) for e in self.few_shot] if self.few_shot else None,
            "output_schema": dict(self.output_schema) if self.output_schema else None,
            **({"attachments": [dict(a) for a in self.attachments], "attachments_root": self.attachments_root,
                "oversized_image": self.oversized_image, "max_pages_per_request": self.max_pages_per_request}
               if self.attachments else {}),
        }


def _as_names(setting: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"Setting `{setting}` must be a string or a non-empty list of strings; got {value!r}.")
    return tuple(value)
