"""custom_id from primary keys, and the checks keys must pass before anything is submitted.

Both run as SQL in DuckDB, so a million-row source costs one scan, not a Python loop.

custom_id rules (the API allows 1 to 64 of ``[A-Za-z0-9_-]``):
- one key column whose text already fits is used as it is (``ticket_id = 10231`` -> ``10231``);
- composite keys whose parts fit ``[A-Za-z0-9_]+`` are joined with ``-`` (``acme-10231``), which
  stays reversible because no part can hold a ``-``;
- anything else (slashes, @, spaces, unicode, empty, too long) is sanitized to ``_`` for readability,
  cut to 51 characters and given a ``-`` plus 12 hex characters of the md5 of the exact key, so two
  different keys never share an id. A run also checks, in SQL, that no two staged keys collide.
- a key that spells a marker request's id (``dbt_claude_batch-proof-`` and 32 hex digits, see
  `MARKER_PATTERN`) takes the hashed form too, which never has that form (its last ``-`` is 12
  characters from the end, a marker's 32): no row's custom_id can be a marker's.
"""

from __future__ import annotations

from typing import Sequence

from dbt_claude_batch.base.errors import SourceDataError
from dbt_claude_batch.base.identifiers import literal, quote

# custom_ids of the marker requests every batch carries (see run/spool_files.py): the prefix and a uuid4's
# hex digits. No key's custom_id matches MARKER_PATTERN (custom_id_sql), so the two are disjoint.
MARKER_PREFIX = "dbt_claude_batch-proof-"
MARKER_PATTERN = MARKER_PREFIX + "[0-9a-f]{32}"
_PREFIX_LEN = 51  # 51 + "-" + 12 hex = 64
_SAMPLE = 5


def key_text_sql(columns: Sequence[str]) -> list[str]:
    return [f"cast({quote(c)} as varchar)" for c in columns]


def custom_id_sql(columns: Sequence[str]) -> str:
    """A SQL expression computing the custom_id of a row from its key columns."""
    parts = key_text_sql(columns)
    if len(parts) == 1:
        (text,) = parts
        exact = f"regexp_full_match({text}, '[A-Za-z0-9_-]{{1,64}}')"
        readable = f"regexp_replace({text}, '[^A-Za-z0-9_-]', '_', 'g')"
        digest = f"md5({text})"
    else:
        joined = " || '-' || ".join(parts)
        exact = " and ".join(f"regexp_full_match({p}, '[A-Za-z0-9_]+')" for p in parts)
        exact = f"({exact} and length({joined}) <= 64)"
        readable = f"regexp_replace({joined}, '[^A-Za-z0-9_-]', '_', 'g')"
        digest = f"md5(to_json([{', '.join(parts)}]))"
    identity = parts[0] if len(parts) == 1 else joined
    # The prefix first (a CASE, so the regular expression runs only on the rare keys that start so).
    exact = (f"({exact} and not (case when starts_with({identity}, {literal(MARKER_PREFIX)}) "
             f"then regexp_full_match({identity}, {literal(MARKER_PATTERN)}) else false end))")
    return (
        f"case when {exact} then {identity} "
        f"else left({readable}, {_PREFIX_LEN}) || '-' || left({digest}, 12) end"
    )


def key_json_sql(columns: Sequence[str]) -> str:
    """A SQL expression packing the key columns, with their values, into JSON."""
    fields = ", ".join(f"{quote(c)} := {quote(c)}" for c in columns)
    return f"to_json(struct_pack({fields}))"


def check_key_columns(columns: Sequence[str], available: Sequence[str]) -> None:
    """Raise SourceDataError for key columns the source lacks."""
    missing = [c for c in columns if c not in available]
    if missing:
        raise SourceDataError(
            f"Key column(s) {', '.join(missing)} not found in the source: fix the `key` setting.\n"
            f"Source columns: {', '.join(available)}"
        )


def check_keys(cursor, source_sql: str, columns: Sequence[str], available: Sequence[str]) -> None:
    """Raise SourceDataError for missing key columns, null key values or duplicate keys."""
    check_key_columns(columns, available)
    null_test = " or ".join(f"{quote(c)} is null" for c in columns)
    nulls = cursor.execute(
        f"select count(*) from ({source_sql}) where {null_test}"
    ).fetchall()[0][0]
    if nulls:
        sample = cursor.execute(
            f"select * from ({source_sql}) where {null_test} limit {_SAMPLE}"
        ).fetchall()
        raise SourceDataError(
            f"{nulls} source row(s) have a null key ({', '.join(columns)}): filter or fix them in the "
            f"staging model; nothing was submitted.\nFirst rows: {_rows(sample)}"
        )
    key_list = ", ".join(quote(c) for c in columns)
    dups = cursor.execute(
        f"select {key_list}, count(*) as n from ({source_sql}) group by all having count(*) > 1 "
        f"order by n desc limit {_SAMPLE}"
    ).fetchall()
    if dups:
        total = cursor.execute(
            f"select count(*) from (select 1 from ({source_sql}) group by {key_list} having count(*) > 1)"
        ).fetchall()[0][0]
        raise SourceDataError(
            f"{total} key value(s) of ({', '.join(columns)}) appear on more than one source row: "
            "deduplicate the staging model; nothing was submitted.\n"
            f"Examples (key..., count): {_rows(dups)}"
        )


def check_custom_ids_unique(cursor, staged_table: str) -> None:
    """Two different keys must never share a custom_id (guards the hash suffix)."""
    # Counting alone keeps the aggregate small at millions of rows; the keys are fetched for a clash only.
    clash = cursor.execute(
        f"select __cb_custom_id from {staged_table} group by all having count(*) > 1 limit 1"
    ).fetchall()
    if clash:
        clash = cursor.execute(
            f"select __cb_custom_id, list(__cb_key_json order by __cb_key_json) from {staged_table} "
            "where __cb_custom_id = ? group by all", [clash[0][0]]
        ).fetchall()
        raise SourceDataError(
            f"Keys {clash[0][1]} map to the same custom_id {clash[0][0]!r}: report this with the keys; "
            "nothing was submitted."
        )


def _rows(rows: list[tuple]) -> str:
    return "; ".join(repr(tuple(r)) for r in rows)
