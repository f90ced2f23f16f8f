"""DuckDB's memory limit while batch models work, when the profile set none: the `memory_limit` setting.

Without `memory_limit` in the profile, DuckDB may use 80% of the machine's memory. A batch model then
holds it to the setting (default 1GB) while it works, and resets it to DuckDB's default afterwards; a
limit the profile set is left alone. DuckDB keeps one limit per database, shared by every dbt thread:
the first batch model to start lowers it, the last to finish resets it. dbt's own materialisation of
the returned relation runs after that.
"""

from __future__ import annotations

import re
import threading
from contextlib import contextmanager
from typing import Iterator

from dbt_claude_batch.base.identifiers import literal
from dbt_claude_batch.base.log import logger

_UNITS = {"": 1, "b": 1, "bytes": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")

_lock = threading.Lock()
_holders = 0
_lowered = False


def parse_size(text: object) -> int | None:
    """Bytes in a DuckDB size such as '1GB', '953.6 MiB' or '512MB'; None if it is not one."""
    match = _SIZE.match(str(text))
    if not match or match.group(2).lower() not in _UNITS:
        return None
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def _default_limit() -> str:
    """DuckDB's own default limit on this machine, as it shows it."""
    import duckdb

    fresh = duckdb.connect()
    try:
        return fresh.execute("select current_setting('memory_limit')").fetchall()[0][0]
    finally:
        fresh.close()


@contextmanager
def bounded(cursor, limit: str | None) -> Iterator[None]:
    """Hold DuckDB's memory limit at `limit` while the block runs, unless the profile chose one (None: never)."""
    global _holders, _lowered
    if limit is None:
        yield
        return
    with _lock:
        if _holders == 0:
            current = cursor.execute("select current_setting('memory_limit')").fetchall()[0][0]
            _lowered = current == _default_limit() and parse_size(limit) < (parse_size(current) or 0)
            if _lowered:
                cursor.execute(f"set memory_limit = {literal(limit)}").fetchall()
                logger.info(f"DuckDB memory_limit held at {limit} while batch models work (the profile sets none; "
                            f"DuckDB's default here is {current}): setting `memory_limit`")
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _lowered:
                cursor.execute("reset memory_limit").fetchall()
                _lowered = False
