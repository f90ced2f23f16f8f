"""Erasure: a key's prompts, answers, failures and held answers removed from everywhere state keeps them.

`ERASURE` lists every (state table, predicate) that holds something of a key, in the order they are
deleted (a predicate may read a table deleted later); a new table that holds per-key content is one
more entry. A table in `SCRUB` is scrubbed instead of deleted from: an outcome keeps its usage, so
`all_spend` and the bill stay whole, and loses its text and its custom_id (a hash takes its place); a
run keeps its counts and spend and loses a note that names the key. Predicates name `{model}` (the
model_id literal), `{keys}` (a query of the key custom_ids to erase), `{key_note}`
(`note_names_key_sql`) and `{s}` (the quoted state schema). The package's `forget` macro
(macros/forget.sql) runs the same statements from dbt; a unit test holds the two to the same list.

What is kept: a row in `erased` per key (model, sha256 of its custom_id, its row digest and input
hash, when): no content. The row digest is what its last request's components say of the row itself
(the values its prompt read, its attachments), whatever the template and settings. Planning leaves a
source row alone while its key has sent nothing since and its row digest is the erased one's, so an
unchanged row is not sent again, a template edit included; a key that comes back with other values is
new data and is sent, and from then on is planned as any other key (`erased` no longer holds it back).
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

from dbt_claude_batch.base.errors import StateError
from dbt_claude_batch.base.identifiers import literal, qualified, quote
from dbt_claude_batch.base.keys import custom_id_sql
from dbt_claude_batch.state.compare_table import SUFFIX as COMPARE_SUFFIX
from dbt_claude_batch.state.state import State, utcnow

FORGET = "cb_forget"
SAMPLE_SUFFIX = "__sample"  # the sample preview's table (run/sample.py)

ERASURE: list[tuple[str, str]] = [
    ("outcomes", "exists (select 1 from {s}.requests r join {s}.submissions x using (submission_id) "
                 "where r.model_id = {model} and coalesce(r.key_custom_id, r.custom_id) in ({keys}) "
                 "and x.batch_id = t.batch_id and r.custom_id = t.custom_id)"),
    ("answers", "t.model_id = {model} and t.custom_id in ({keys})"),
    ("input_aliases", "t.model_id = {model} and t.custom_id in ({keys})"),
    ("prompts", "t.model_id = {model} and t.key_custom_id in ({keys})"),
    ("compare_requests", "t.model_id = {model} and t.custom_id in ({keys})"),
    # An imported answer is the answer to the key's exact request, whichever model exported it.
    ("imported_answers", "t.request_hash in (select r.request_hash from {s}.requests r where r.model_id = {model} "
                         "and coalesce(r.key_custom_id, r.custom_id) in ({keys}))"),
    # A run's note is the first line of the error that failed it, which may name a row by its key_json,
    # also a key that failed before any request of it was recorded (a request over the size limit).
    ("runs", "t.model_id = {model} and (({key_note}) or exists (select 1 from {s}.requests r "
             "where r.model_id = {model} and coalesce(r.key_custom_id, r.custom_id) in ({keys}) "
             "and contains(t.note, r.key_json)))"),
    ("requests", "t.model_id = {model} and coalesce(t.key_custom_id, t.custom_id) in ({keys})"),
]


# Columns of other keys' rows that name the custom_id (or a part's) whose answer they share: they are
# given the erased id instead, as the shared outcome's own custom_id is (`SCRUB`), before `ERASURE`
# deletes the requests that say which custom_ids were the key's. The results table's is `RESULTS_REFERENCE`.
REFERENCES: list[tuple[str, str]] = [("answers", "shared_from"), ("outcomes", "shared_from"), ("requests", "dedup_of")]
RESULTS_REFERENCE = "shared_from"
_IDS = ("select r.custom_id from {s}.requests r where r.model_id = {model} and coalesce(r.key_custom_id, r.custom_id) "
        "in ({keys}) union {keys}")


def erased_id_sql(expr: str) -> str:
    """SQL: what an erased key's custom_id `expr` becomes where a row stays for the bill (an outcome)."""
    return f"'erased-' || left(sha256({expr}), 32)"


ERASED_NOTE = "(this note named a key since erased by forget)"

# An erased key's row digest, from its request's components (run/components.py); `staged_row_digest_sql`
# is the same digest of a staged row. The forget macro records it with the same expression.
ROW_DIGEST_OF_REQUEST = "(components->>'text') || '|' || coalesce(components->>'attachments', '')"


def staged_row_digest_sql(alias: str) -> str:
    """SQL: a staged row's row digest, as `ROW_DIGEST_OF_REQUEST` gives it for its request."""
    return f"({alias}.__cb_text_digest || '|' || coalesce({alias}.__cb_attach_digest, ''))"

SCRUB: dict[str, str] = {
    "outcomes": f"custom_id = {erased_id_sql('t.custom_id')}, output_text = null, error_message = null, "
                "message = null, output_json = null, stop_reason = null, shared_from = null",
    "runs": f"note = {literal(ERASED_NOTE)}",
}


def note_names_key_sql(key: Mapping[str, Any], expr: str = "t.note") -> str:
    """SQL: whether the text `expr` names `key` as the product's messages do, by its key_json
    (`{"id":42}`, `{"tenant":"acme","n":1}`): each column with its value, bare or as a JSON string,
    followed by `,` or `}` (so key 1 is not found in a note naming key 11)."""
    conds = []
    for column, value in key.items():
        text = literal(_text(value))
        pair = f"to_json({literal(str(column))}) || ':' || "
        forms = [pair + text, f"{pair}to_json({text})"]
        conds.append("(" + " or ".join(f"contains({expr}, {form} || {literal(end)})"
                                       for form in forms for end in (",", "}")) + ")")
    return " and ".join(conds)


def erasure_statements(schema: str, model_id: str, keys: str, key: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(table, statement) for every entry of `ERASURE`, for `key`, whose custom_ids query `keys` gives."""
    s = qualified(schema)
    ids = _IDS.format(s=s, model=literal(model_id), keys=keys)
    out = [(f"{table}.{column}", f"update {s}.{table} t set {column} = {erased_id_sql('t.' + column)} where "
                                 f"t.model_id = {literal(model_id)} and t.{column} in ({ids})")
           for table, column in REFERENCES]
    for table, pred in ERASURE:
        where = pred.format(s=s, model=literal(model_id), keys=keys, key_note=note_names_key_sql(key))
        out.append((table, f"update {s}.{table} t set {SCRUB[table]} where {where}" if table in SCRUB
                    else f"delete from {s}.{table} t where {where}"))
    return out


def parse_key(values: Sequence[str]) -> dict[str, Any]:
    """`--key` arguments as one key: each a JSON object or `column=value`; composite keys merge them."""
    key: dict[str, Any] = {}
    for value in values:
        text = value.strip()
        if text.startswith("{"):
            try:
                parsed = json.loads(text)
            except ValueError as exc:
                raise StateError(f"--key {value!r} is not a JSON object ({exc}): give {{\"column\": value}} or "
                                 "column=value.") from None
            key.update(parsed)
        elif "=" in text:
            column, _, item = text.partition("=")
            key[column.strip()] = item
        else:
            raise StateError(f"--key {value!r} names no column: give column=value (once per key column) or a JSON "
                             "object such as {\"ticket_id\": 42}.")
    return key


def key_filter_sql(key: Mapping[str, Any], expr: str = "key_json") -> str:
    """SQL: whether the packed key `expr` (state's key_json) is `key`, comparing values as text."""
    return " and ".join(
        f"json_extract_string({expr}, {literal('$.' + json.dumps(str(c)))}) = {literal(_text(v))}"
        for c, v in key.items())


def _text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value).lower() if isinstance(value, bool) \
        else str(value)


def forget(cursor, schema: str, model_id: str, key: Mapping[str, Any], missing_ok: bool = False) -> dict[str, int]:
    """Erase one key of `model_id` from state and from the tables next to the model (results, compare,
    sample); return rows removed per table. Refused (nothing erased) while the key has a request in flight,
    and when nothing holds the key (a value written otherwise than its type writes it matches nothing),
    unless `missing_ok`. Values are compared as the key column's type writes them (`07` is the BIGINT 7)."""
    state = State(cursor, schema, model_id)
    rows = state.run(f"select key_columns, key_types from {state.table('models')} where model_id = ?", [model_id])
    if not rows:
        known = [r[0] for r in state.run(f"select model_id from {state.table('models')} order by 1")]
        raise StateError(f"No batch model {model_id!r} in state schema {schema}: name it as schema.model, one of: "
                         f"{', '.join(known) or '(none)'}; nothing was erased.")
    columns = json.loads(rows[0][0])
    # An earlier key (before a `key` change) finds what the model still holds under it: the history the
    # rebuild retired. Its values are compared as given (its types are not kept), and only state rows
    # of exactly its columns match: the results tables hold the current key's rows only.
    earlier = sorted(key) != sorted(columns)
    shape = f"list_sort(json_keys(key_json)) = list_sort([{', '.join(literal(str(c)) for c in key) or 'null'}])"
    if earlier and not state.run(f"select exists (select 1 from {state.table('requests')} where model_id = ? "
                                 f"and {shape})", [model_id])[0][0]:
        raise StateError(f"The key given ({', '.join(sorted(key)) or 'none'}) is not the key of {model_id} "
                         f"({', '.join(columns)}), nor one it had before: give a value for each key column; "
                         "nothing was erased.")
    given, key = key, (dict(key) if earlier else _as_typed(state, key, json.loads(rows[0][1] or "{}")))
    only = f" and {shape}" if earlier else ""
    state.run(f"""create or replace temp table {FORGET} as
        select distinct coalesce(key_custom_id, custom_id) as custom_id from {state.table('requests')}
        where model_id = {literal(model_id)} and {key_filter_sql(key)}{only}
        union select custom_id from {state.table('answers')} where model_id = {literal(model_id)}
        and {key_filter_sql(key)}{only}""")
    keys = f"select custom_id from {FORGET}"
    if not missing_ok and not state.run(f"select count(*) from {FORGET}")[0][0] \
            and not (not earlier and _results_rows(state, key)) \
            and not state.run(f"select count(*) from {state.table('runs')} t where t.model_id = ? "
                              f"and {note_names_key_sql(key)}", [model_id])[0][0]:
        state.run(f"drop table if exists {FORGET}")
        erased_at = None if earlier else _erased_at(state, key, json.loads(rows[0][1] or "{}"), columns)
        if erased_at is not None:
            raise StateError(
                f"Key {json.dumps(dict(given), default=str)} of {model_id} was erased by forget already (at "
                f"{erased_at:%Y-%m-%d %H:%M:%S} UTC), and nothing of it is held since: there is nothing more to "
                "erase. Pass --missing-ok (the macro: missing_ok: true) to make a repeated erasure succeed.")
        raise StateError(
            f"Nothing is held for key {json.dumps(dict(given), default=str)} of {model_id}: no request, answer, "
            f"results row or run note has it. Check the value (key columns: {_typed_columns(rows[0][1], columns)}); "
            "a key never sent has nothing to erase. Pass --missing-ok (the macro: missing_ok: true) when that is expected; "
            "nothing was erased.")
    flying = state.run(f"select count(*) from ({state.flying_requests_sql()}) where custom_id in ({keys})")[0][0]
    if flying:
        raise StateError(f"Key {json.dumps(dict(key), default=str)} of {model_id} has a request in flight: wait for "
                         "its batch to end (or cancel it with the claude_batch_cancel var), run dbt once to harvest "
                         "it, then run forget again; nothing was erased.")
    removed: dict[str, int] = {}
    with state.transaction():
        state.run(f"""insert into {state.table('erased')} (model_id, key_hash, input_hash, row_digest, request_hash,
                erased_at)
            select {literal(model_id)}, sha256(coalesce(key_custom_id, custom_id)), arg_max(input_hash, attempt),
                   arg_max({ROW_DIGEST_OF_REQUEST}, attempt), arg_max(request_hash, attempt), ?
            from {state.table('requests')} where model_id = {literal(model_id)}
            and coalesce(key_custom_id, custom_id) in ({keys}) group by coalesce(key_custom_id, custom_id)""",
                  [utcnow()])
        if not earlier:
            removed[f"results.{RESULTS_REFERENCE}"] = _scrub_results_references(
                state, _IDS.format(s=qualified(schema), model=literal(model_id), keys=keys))
        for table, sql in erasure_statements(schema, model_id, keys, key):
            removed[table] = int(state.run(sql)[0][0])
        removed["results"] = 0 if earlier else _erase_from_results(state, model_id, key)
        # The next run plans afresh (no quiet skip) and checks the results table against the answers again.
        state.run(f"update {state.table('models')} set quiet_digest = null, results_gap = null where model_id = ?",
                  [model_id])
    state.run(f"drop table if exists {FORGET}")
    return removed


def _erased_at(state: State, key: Mapping[str, Any], types: Mapping[str, str], columns: Sequence[str]):
    """When `key` (its values as their types write them) was last erased from the model, or None."""
    values = ", ".join(f"try_cast({literal(_text(key[c]))} as {types.get(c) or 'varchar'}) as {quote(c)}"
                       for c in columns)
    return state.run(f"select max(erased_at) from {state.table('erased')} where model_id = ? and key_hash = "
                     f"(select sha256({custom_id_sql(columns)}) from (select {values}))", [state.model_id])[0][0]


def _as_typed(state: State, key: Mapping[str, Any], types: Mapping[str, str]) -> dict[str, Any]:
    """The key's values as their columns' types write them (what key_json and a cast to text give)."""
    out = dict(key)
    for column, value in key.items():
        kind = types.get(column)
        if not kind or kind.upper() in ("VARCHAR", "TEXT", "STRING") or isinstance(value, (dict, list)):
            continue
        written = state.run(f"select try_cast({literal(_text(value))} as {kind})::varchar")[0][0]
        if written is None:
            raise StateError(f"--key {column}={_text(value)!r} is not a {kind}, the type of key column {column}: give "
                             "its value as the source holds it; nothing was erased.")
        out[column] = written
    return out


def _typed_columns(types_json: str | None, columns: Sequence[str]) -> str:
    types = json.loads(types_json or "{}")
    return ", ".join(f"{c} {types[c]}" if c in types else c for c in columns)


def _results_tables(state: State) -> tuple[str, list[str]]:
    """The tables next to the model that hold a key's text: the results table (and leftover dbt temp
    tables), `<model>__compare` and `<model>__sample`."""
    schema, identifier = state.model_id.rsplit(".", 1)
    return schema, [r[0] for r in state.run(
        "select table_name from information_schema.tables where table_catalog = current_database() "
        "and table_schema = ? and table_type = 'BASE TABLE' and (table_name in (?, ?, ?) or starts_with(table_name, ?))",
        [schema, identifier, identifier + COMPARE_SUFFIX, identifier + SAMPLE_SUFFIX, identifier + "__dbt_tmp"])]


def _results_where(key: Mapping[str, Any]) -> str:
    return " and ".join(f"cast({quote(c)} as varchar) = {literal(_text(v))}" for c, v in key.items())


def _results_rows(state: State, key: Mapping[str, Any]) -> int:
    schema, tables = _results_tables(state)
    return sum(state.run(f"select count(*) from {qualified(schema, t)} where {_results_where(key)}")[0][0]
               for t in tables)


def _scrub_results_references(state: State, ids: str) -> int:
    """Other keys' rows of the results table that name one of `ids` as the answer they share."""
    schema, identifier = state.model_id.rsplit(".", 1)
    if not state.run("select count(*) from information_schema.columns where table_catalog = current_database() "
                     "and table_schema = ? and table_name = ? and column_name = ?",
                     [schema, identifier, RESULTS_REFERENCE])[0][0]:
        return 0
    column = quote(RESULTS_REFERENCE)
    return int(state.run(f"update {qualified(schema, identifier)} set {column} = {erased_id_sql(column)} "
                         f"where {column} in ({ids})")[0][0])


def _erase_from_results(state: State, model_id: str, key: Mapping[str, Any]) -> int:
    """Rows of the key, by its key columns, in the tables next to the model (`_results_tables`)."""
    schema, tables = _results_tables(state)
    return sum(int(state.run(f"delete from {qualified(schema, t)} where {_results_where(key)}")[0][0])
               for t in tables)


def rewrite_file(path: str) -> None:
    """Copy the DuckDB file's live data into a fresh file and put it in place: a delete leaves the
    erased bytes in the file's free blocks, a copy of the database does not carry them."""
    import duckdb

    fresh = f"{path}.forget-rewrite"
    if os.path.exists(fresh):
        os.remove(fresh)
    con = duckdb.connect(path)
    try:
        catalog = con.execute("select current_database()").fetchone()[0]
        con.execute(f"attach {literal(fresh)} as cb_fresh")
        con.execute(f"copy from database {quote(catalog)} to cb_fresh")
        con.execute("detach cb_fresh")
    finally:
        con.close()
    os.chmod(fresh, os.stat(path).st_mode & 0o777)
    os.replace(fresh, path)


def forget_in_file(path: str, schema: str, model_id: str, key: Mapping[str, Any],
                   missing_ok: bool = False) -> dict[str, int]:
    """`forget` on the DuckDB file at `path`, then the status snapshot rewritten and the file itself
    rewritten so no erased byte is left in it, and stale scratch directories (spool files) removed."""
    from dbt_claude_batch.state.snapshot import write_snapshot
    from dbt_claude_batch.state.warehouse import connect
    from dbt_claude_batch.state.workdir import clean_stale

    if not os.path.isfile(path):
        raise StateError(f"No DuckDB file at {path}: point --database at the file dbt writes; nothing was erased.")
    con = connect(path, "run forget when it has finished; nothing was erased.")
    try:
        removed = forget(con.cursor(), schema, model_id, key, missing_ok)
        write_snapshot(con.cursor(), schema)
        con.execute("checkpoint")
    finally:
        con.close()
    rewrite_file(path)
    clean_stale()
    return removed
