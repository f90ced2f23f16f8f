"""SQL identifiers and literals built from user config: always quoted, never pasted."""

from __future__ import annotations


def quote(name: str) -> str:
    """Quote one SQL identifier for DuckDB."""
    return '"' + str(name).replace('"', '""') + '"'


def qualified(*parts: str | None) -> str:
    """Quote a dotted name such as database.schema.table, skipping empty parts."""
    return ".".join(quote(p) for p in parts if p)


def literal(value: str) -> str:
    """A SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"
