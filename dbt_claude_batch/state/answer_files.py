"""`dbt-claude-batch answers export / import`: a model's answers to Parquet and back, with their request hashes.

Export writes every succeeded answer of one batch model (read through `held_answers_sql`, the query
the run's reuse uses), one row per request hash: request_hash, model, answer (JSON: the outcome's
text, structured output, stop reason, model, and the batch and custom_id it was bought in), usage
(JSON: its tokens) and source (the file and state schema). Import adds such a file's rows to this
state's `imported_answers`, which every run then reads as an answer source: a team seeds CI without
opening prod's file. Both are DuckDB COPY / read_parquet, streamed.
"""

from __future__ import annotations

import os

import duckdb

from dbt_claude_batch.base.errors import ConfigError, NothingToShowError
from dbt_claude_batch.base.identifiers import literal, qualified
from dbt_claude_batch.state.answer_sources import ANSWER_COLUMNS, USAGE_COLUMNS, AnswerSource, held_answers_sql
from dbt_claude_batch.state.state import State, utcnow

EXPORT_COLUMNS = ("request_hash", "model", "answer", "usage", "source")
_ANSWER_FIELDS = tuple(c for c in ANSWER_COLUMNS if c not in USAGE_COLUMNS and c not in ("result_type", "error_type",
                                                                                          "error_message",
                                                                                          "canceled_by_user"))


def export_answers(cursor, schema: str, model: str, to_path: str, database_path: str) -> int:
    """Write `model`'s answers to the Parquet file `to_path`; return how many request hashes it holds."""
    model_id = _model_id(cursor, schema, model)
    rows = cursor.execute(
        "select table_name, list(column_name) from information_schema.columns where table_catalog = current_database() "
        "and table_schema = ? group by all", [schema]).fetchall()
    source = AnswerSource(f"{database_path}:{schema}", None, schema, {t: frozenset(c) for t, c in rows})
    answer = ", ".join(["batch_id := from_batch", "custom_id := from_custom_id",
                        *(f"{c} := {c}" for c in _ANSWER_FIELDS)])
    usage = ", ".join(f"{c} := {c}" for c in USAGE_COLUMNS)
    out = os.path.abspath(to_path)
    cursor.execute(
        f"""copy (select request_hash, {literal(model_id)} as model, to_json(struct_pack({answer})) as answer,
                   to_json(struct_pack({usage})) as usage, source
            from ({held_answers_sql(source, model_id=model_id)}) order by request_hash)
        to {literal(out)} (format parquet)""")
    return cursor.execute(f"select count(*) from read_parquet({literal(out)})").fetchall()[0][0]


def import_answers(cursor, schema: str, from_path: str) -> tuple[int, int]:
    """Add the answers of an export to this state's `imported_answers`; return (added, already held)."""
    path = os.path.abspath(from_path)
    if not os.path.isfile(path):
        raise ConfigError(f"No file at {path}: pass --from the Parquet file `dbt-claude-batch answers export` wrote.")
    try:
        names = {r[0] for r in cursor.execute(f"describe select * from read_parquet({literal(path)})").fetchall()}
    except duckdb.Error:
        raise ConfigError(f"{path} is not an answers export (not a Parquet file): import a file that "
                          "`dbt-claude-batch answers export` wrote.") from None
    missing = [c for c in EXPORT_COLUMNS if c not in names]
    if missing:
        raise ConfigError(f"{path} is not an answers export (no column {', '.join(missing)}): import a file that "
                          "`dbt-claude-batch answers export` wrote.")
    State(cursor, schema, "").ensure()
    table = qualified(schema, "imported_answers")
    total = cursor.execute(f"select count(distinct request_hash) from read_parquet({literal(path)})").fetchall()[0][0]
    before = cursor.execute(f"select count(*) from {table}").fetchall()[0][0]
    cursor.execute("begin")
    try:
        cursor.execute(
            f"""insert into {table} (request_hash, model, answer, usage, source, imported_at)
            select request_hash, model, answer::json, usage::json, {literal(path + ' <- ')} || source, ?
            from read_parquet({literal(path)}) p
            where request_hash is not null
              and not exists (select 1 from {table} i where i.request_hash = p.request_hash)
            qualify row_number() over (partition by request_hash order by model) = 1""", [utcnow()])
        added = cursor.execute(f"select count(*) from {table}").fetchall()[0][0] - before
        cursor.execute("commit")
    except BaseException:
        cursor.execute("rollback")
        raise
    return added, total - added


def _model_id(cursor, schema: str, model: str) -> str:
    """`model` as a model_id (schema.identifier); a bare identifier when exactly one model has it."""
    try:
        known = [r[0] for r in cursor.execute(f"select model_id from {qualified(schema, 'models')} order by 1").fetchall()]
    except Exception:
        raise NothingToShowError(f"No dbt-claude-batch state in schema {schema!r} of this file: pass --state-schema, "
                                 "or the right --database.") from None
    matches = [m for m in known if m == model or m.split(".")[-1] == model]
    if len(matches) != 1:
        what = "matches several models" if matches else "is no batch model of this state"
        raise ConfigError(f"--model {model!r} {what}: pass one of {', '.join(known) or '(none yet)'} as schema.identifier.")
    return matches[0]


def schemas_with_models(cursor, model_id: str | None = None) -> list[str]:
    """The schemas of this database whose `models` table names a batch model (`model_id`, or any): its
    state schemas, in order."""
    found = []
    for (schema,) in cursor.execute(
            "select table_schema from information_schema.tables where table_name = 'models' "
            "and table_catalog = current_database() order by 1").fetchall():
        narrow = "" if model_id is None else f" where model_id = {literal(model_id)}"
        try:
            if cursor.execute(f"select exists (select 1 from {qualified(schema, 'models')}{narrow})").fetchall()[0][0]:
                found.append(schema)
        except duckdb.Error:  # a table of that name that is not ours
            continue
    return found
