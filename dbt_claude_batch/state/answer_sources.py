"""Answers held somewhere else that a run may reuse: other states named by `answer_sources`, and
answers imported from a Parquet export (`imported_answers`).

Only the exact request hash is proof: an answer is reused for a request whose sha256 of the rendered
params equals the hash the answer was bought for, never for a key that merely matches. A source file
is attached READ_ONLY for the run and detached after it; nothing here ever writes to it. A source
state at an older schema version is read with the columns it has (the missing ones are null); a newer
one is read when it still has every column read here, and refused with a clear error otherwise.

`held_answers_sql` is the one query of a source's answers: the run's reuse (run/local_outcomes.py) and
`dbt-claude-batch answers export` (answer_files.py) both read through it.
"""

from __future__ import annotations

import hashlib
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

from dbt_claude_batch.base.errors import ConfigError, StateError
from dbt_claude_batch.base.identifiers import literal, qualified
from dbt_claude_batch.base.log import logger
from dbt_claude_batch.state.migrations import SCHEMA_VERSION

# The outcome columns a reused answer copies: what results, failures and the bill read of an answer.
ANSWER_COLUMNS = (
    "result_type", "error_type", "error_message", "canceled_by_user", "output_text", "stop_reason",
    "answered_model", "input_tokens", "output_tokens", "cache_creation_input_tokens",
    "cache_creation_1h_input_tokens", "cache_read_input_tokens", "message", "service_tier", "output_json",
)
USAGE_COLUMNS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_creation_1h_input_tokens",
                 "cache_read_input_tokens")
_JSON_COLUMNS = ("message", "output_json")
_TYPES = {**{c: "bigint" for c in USAGE_COLUMNS}, "canceled_by_user": "boolean", "message": "json",
          "output_json": "json"}
# Without these a source's answers cannot be tied to a request hash: such a state is refused.
_NEEDED = {"requests": ("submission_id", "custom_id", "request_hash"),
           "submissions": ("submission_id", "batch_id"),
           "outcomes": ("batch_id", "custom_id", "result_type", "output_text")}

_attached: dict[str, tuple[str, int]] = {}  # file -> (alias, users): dbt threads share one connection's catalogs
_attach_lock = threading.Lock()


@dataclass(frozen=True)
class AnswerSource:
    """One place answers may come from. `catalog` is None for this state's own imported answers."""

    label: str
    catalog: str | None
    schema: str
    columns: Mapping[str, frozenset[str]]  # table -> the columns it has there
    imported: bool = False

    def held_answers_sql(self, wanted: str | None = None, model_id: str | None = None) -> str:
        """One row per request hash with a succeeded answer: request_hash, source, from_batch,
        from_custom_id and ANSWER_COLUMNS. `wanted`, a query of request hashes, narrows it."""
        return held_answers_sql(self, wanted, model_id)


def held_answers_sql(source: AnswerSource, wanted: str | None = None, model_id: str | None = None) -> str:
    """See `AnswerSource.held_answers_sql`: the newest succeeded, unsplit answer of each request hash."""
    t = lambda name: qualified(source.catalog, source.schema, name)  # noqa: E731
    if source.imported:
        narrow = " and ".join(x for x in (
            f"request_hash in ({wanted})" if wanted else "", f"model = {literal(model_id)}" if model_id else "") if x)
        fields = ", ".join(f"{c} := {_from_json(c)}" for c in ANSWER_COLUMNS)
        return f"""select request_hash, unnest(a) from (
            select request_hash,
                   arg_max(struct_pack(source := 'imported ' || source, from_batch := answer->>'batch_id',
                                       from_custom_id := answer->>'custom_id', {fields}), imported_at) as a
            from {t('imported_answers')} {'where ' + narrow if narrow else ''} group by request_hash)"""
    has = source.columns
    o = lambda c: f"o.{c}" if c in has["outcomes"] else f"null::{_TYPES.get(c, 'varchar')}"  # noqa: E731
    parts = "coalesce(r.parts, 1)" if "parts" in has["requests"] else "1"
    seq = "coalesce(o.harvest_seq, 0)" if "harvest_seq" in has["outcomes"] else "o.harvested_at"
    narrow = (f" and r.request_hash in ({wanted})" if wanted else "") + (
        f" and r.model_id = {literal(model_id)}" if model_id else "")
    fields = ", ".join(f"{c} := {o(c)}" for c in ANSWER_COLUMNS)
    return f"""select request_hash, unnest(a) from (
        select r.request_hash,
               arg_max(struct_pack(source := {literal(source.label)}, from_batch := o.batch_id,
                                   from_custom_id := o.custom_id, {fields}), {seq}) as a
        from {t('requests')} r
        join {t('submissions')} s using (submission_id)
        join {t('outcomes')} o on o.batch_id = s.batch_id and o.custom_id = r.custom_id
        where o.result_type = 'succeeded' and {parts} = 1{narrow}
        group by r.request_hash)"""


def _from_json(column: str) -> str:
    if column in _JSON_COLUMNS:
        return f"nullif(answer->'{column}', 'null'::json)"
    if column in USAGE_COLUMNS:
        return f"(usage->>'{column}')::bigint"
    if column == "canceled_by_user":
        return "false"
    if column == "result_type":  # only succeeded answers are exported
        return "'succeeded'"
    if column in ("error_type", "error_message"):
        return "null::varchar"
    return f"answer->>'{column}'"


@contextmanager
def open_sources(cursor, state_schema: str, specs: Sequence[Mapping[str, Any]],
                 project_dir: str | None) -> Iterator[list[AnswerSource]]:
    """The answer sources of a run: this state's imported answers (when it has any), then each entry of
    the `answer_sources` setting, attached READ_ONLY until the block ends."""
    sources: list[AnswerSource] = []
    files: list[str] = []
    try:
        if cursor.execute(f"select 1 from {qualified(state_schema, 'imported_answers')} limit 1").fetchall():
            sources.append(AnswerSource("imported answers", None, state_schema, {}, imported=True))
        for i, spec in enumerate(specs):
            if "path" in spec:
                path = os.path.realpath(os.path.join(project_dir or os.getcwd(), os.path.expanduser(spec["path"])))
                if not os.path.isfile(path):
                    if spec["required"]:
                        raise ConfigError(
                            f"Setting `answer_sources` item {i} names {spec['path']!r} ({path}), which does not "
                            "exist: fix the path (relative to the dbt project directory), or add `required: false` "
                            "to run without it; nothing was submitted.")
                    logger.info(f"answer source {path} does not exist (required: false): not used")
                    continue
                if path == _current_file(cursor):
                    logger.info(f"answer source {path} is this run's own database file: not used as a source")
                    continue
                try:
                    catalog = _attach(cursor, path)
                except StateError as exc:
                    if spec["required"]:
                        raise
                    logger.warning(f"{str(exc).splitlines()[0]} (required: false): not used in this run")
                    continue
                files.append(path)
                label = f"{path}:{spec['schema']}"
            else:
                catalog = spec.get("database") or _current_catalog(cursor)
                if catalog == _current_catalog(cursor) and spec["schema"] == state_schema:
                    logger.info(f"answer source {spec['schema']} is this run's own state schema: not used as a source")
                    continue
                label = f"database {catalog}:{spec['schema']}"
            sources.append(_checked(cursor, catalog, spec["schema"], label, i))
        yield sources
    finally:
        for path in files:
            _detach(cursor, path)


def _current_catalog(cursor) -> str:
    return cursor.execute("select current_database()").fetchall()[0][0]


def _current_file(cursor) -> str | None:
    row = cursor.execute("select path from duckdb_databases() where database_name = current_database()").fetchall()
    return os.path.realpath(row[0][0]) if row and row[0][0] else None


def _attach(cursor, path: str) -> str:
    import duckdb

    with _attach_lock:
        alias, users = _attached.get(path, (f"cb_answers_{hashlib.sha256(path.encode()).hexdigest()[:12]}", 0))
        if not users:
            try:
                cursor.execute(f"attach if not exists {literal(path)} as {qualified(alias)} (read_only)")
            except duckdb.Error as exc:
                raise StateError(
                    f"The answer source {path} cannot be opened read-only ({exc}): when another process (a running "
                    "dbt) holds it, run again when it has finished, or export its answers with `dbt-claude-batch "
                    "answers export` and import them here; nothing was submitted.") from None
        _attached[path] = (alias, users + 1)
        return alias


def _detach(cursor, path: str) -> None:
    with _attach_lock:
        alias, users = _attached[path]
        if users > 1:
            _attached[path] = (alias, users - 1)
            return
        del _attached[path]
        cursor.execute(f"detach database if exists {qualified(alias)}")


def _checked(cursor, catalog: str, schema: str, label: str, i: int) -> AnswerSource:
    """The source, once its state is known to hold what is read here at a version that can be read."""
    rows = cursor.execute(
        "select table_name, list(column_name) from information_schema.columns where table_catalog = ? "
        "and table_schema = ? group by all", [catalog, schema]).fetchall()
    columns = {name: frozenset(cols) for name, cols in rows}
    if "state_version" not in columns or not set(_NEEDED) <= set(columns):
        raise StateError(
            f"The answer source {label} (setting `answer_sources` item {i}) holds no dbt-claude-batch state in "
            f"schema {schema!r}: set that entry's `schema` to its `state_schema`; nothing was submitted.")
    version = cursor.execute(f"select max(version) from {qualified(catalog, schema, 'state_version')}").fetchall()[0][0]
    missing = [f"{t}.{c}" for t, cols in _NEEDED.items() for c in cols if c not in columns[t]]
    if missing:
        newer = (version or 0) > SCHEMA_VERSION
        raise StateError(
            f"The answer source {label} is at state version {version}, "
            + (f"newer than this dbt-claude-batch ({SCHEMA_VERSION}) and incompatible" if newer else "damaged")
            + f" (no {', '.join(missing)}): "
            + ("upgrade the dbt-claude-batch package, " if newer else "")
            + "or remove it from `answer_sources`; nothing was submitted.")
    return AnswerSource(label, catalog, schema, columns)
