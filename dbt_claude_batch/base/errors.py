"""One exception tree for everything dbt-claude-batch raises.

dbt shows the last line of a Python model's traceback, so every message starts with one line that says
what happened and what to do; details follow on later lines.
"""


class DbtClaudeBatchError(Exception):
    """Base class: catch this to handle any error raised by dbt_claude_batch."""


class ConfigError(DbtClaudeBatchError):
    """A setting is missing, unknown or has a wrong value."""


class MissingApiKeyError(ConfigError):
    """ANTHROPIC_API_KEY is not set in the environment."""


class TemplateError(ConfigError):
    """The prompt template cannot be read, parsed, or names a column the source lacks."""


class SourceDataError(DbtClaudeBatchError):
    """The source table cannot be submitted as it is (null or duplicate keys, a request too large)."""


class BudgetExceededError(DbtClaudeBatchError):
    """The estimated cost of the pending requests is above the configured limit."""


class RebuyGuardError(DbtClaudeBatchError):
    """A run would buy again more held answers than `max_rebuy_fraction` / `max_rebuy_rows` allow."""


class ApiError(DbtClaudeBatchError):
    """The Anthropic API refused a call in a way a later run will not fix by itself."""


class NothingToShowError(DbtClaudeBatchError):
    """`status` or `report` found nothing to read: no database file, no state schema, no batch models yet."""


class NothingToCompareError(ConfigError):
    """`claude_batch_compare` found no held answer to compare with, or no sampled key whose request changed."""


class DatabaseLockedError(DbtClaudeBatchError):
    """A running dbt holds the DuckDB file's lock, so no other process can open it, not even read-only."""


class StateError(DbtClaudeBatchError):
    """The state tables are in a shape this version cannot work with."""


class ApiUnreachableError(ApiError):
    """No connection to the API could be made; nothing was lost and the next run continues."""


class SpendLimitError(ApiError):
    """The workspace's spend limit is reached: no retry helps until it is raised or resets."""


class RowTemplateError(TemplateError):
    """The prompt template raised an error for one row (recorded as that row's failure)."""

    def __init__(self, template: str, line: int | None, error: str):
        self.template, self.line, self.error = template, line, error
        super().__init__(self.for_key(None))

    def for_key(self, key_json: str | None) -> str:
        where = f"{self.template}" + (f" line {self.line}" if self.line else "")
        row = f" for key {key_json}" if key_json else ""
        return (f"Prompt template {where} raised {self.error}{row}: fix the template (e.g. guard that value) or "
                "the row; the row is recorded as a failure with error_type template_error and rendered again when "
                "either changes.")


class RunHealthError(DbtClaudeBatchError):
    """Too much of what a run harvested failed for reasons no retry fixes (see `max_failure_ratio`)."""
