"""The `answer_sources` setting: other states whose answers a run may reuse, by exact request hash.

Each entry names a DuckDB file (`path`, relative to the dbt project directory) or a database the
profile already attaches (`database`; neither: this database), the state schema inside it (`schema`,
default ``dbt_claude_batch``), and whether a missing file stops the run (`required`, default true). A plain
string is a `path`. Pure parsing; opening the sources is `state/answer_sources.py`.
"""

from __future__ import annotations

from typing import Any, Mapping

from dbt_claude_batch.base.errors import ConfigError

SOURCE_FIELDS = ("path", "database", "schema", "required")
DEFAULT_SCHEMA = "dbt_claude_batch"


def parse_answer_sources(value: Any) -> tuple[Mapping[str, Any], ...]:
    """The setting as a tuple of {path | database, schema, required}; a ConfigError naming the entry and the fix."""
    if value is None:
        return ()
    if isinstance(value, (str, Mapping)):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"Setting `answer_sources` must be a list of sources, e.g. [{{path: ../prod/warehouse.duckdb, "
                          f"schema: dbt_claude_batch}}]; got {value!r}.")
    return tuple(_entry(i, item) for i, item in enumerate(value))


def _entry(i: int, item: Any) -> Mapping[str, Any]:
    where = f"Setting `answer_sources` item {i}"
    if isinstance(item, str):
        item = {"path": item}
    if not isinstance(item, Mapping):
        raise ConfigError(f"{where} must be a path or a mapping with `path` (a DuckDB file) or `database` (a "
                          f"database the profile attaches); got {item!r}.")
    unknown = sorted(set(item) - set(SOURCE_FIELDS))
    if unknown:
        raise ConfigError(f"{where} has unknown field(s) {', '.join(unknown)}: use only {', '.join(SOURCE_FIELDS)}.")
    if ("path" in item and "database" in item) or not {"path", "database", "schema"} & set(item):
        raise ConfigError(f"{where} must set exactly one of `path` (a DuckDB file) or `database` (a database the "
                          f"profile attaches), or only `schema` (a schema of this database); got {dict(item)!r}.")
    for name in ("path", "database", "schema"):
        if name in item and (not isinstance(item[name], str) or not item[name].strip()):
            raise ConfigError(f"{where}: `{name}` must be a non-empty string; got {item[name]!r}.")
    required = item.get("required", True)
    if not isinstance(required, bool):
        raise ConfigError(f"{where}: `required` must be true or false; got {required!r}.")
    entry: dict[str, Any] = {"schema": item.get("schema", DEFAULT_SCHEMA), "required": required}
    for name in ("path", "database"):
        if name in item:
            entry[name] = item[name]
    return entry
