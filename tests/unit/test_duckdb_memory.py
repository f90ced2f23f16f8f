"""Without a limit in the profile, the `memory_limit` setting holds DuckDB's limit while batch models work
and resets it to DuckDB's default once the last of them is done; a profile's limit is left alone (pure DuckDB)."""

from __future__ import annotations

import duckdb
import pytest

from dbt_claude_batch.base.duckdb_memory import bounded, parse_size
from dbt_claude_batch.base.errors import ConfigError
from dbt_claude_batch.base.settings import Settings


def _shown(con) -> str:
    return con.execute("select current_setting('memory_limit')").fetchall()[0][0]


def _limit(con) -> int:
    return parse_size(_shown(con))


def test_lowered_while_working_and_restored_after_the_last_model():
    con = duckdb.connect()  # the profile sets no limit: DuckDB's default, 80% of memory
    before = _shown(con)
    with bounded(con.cursor(), "1GB"):
        assert _limit(con) < 1.01 * 10**9
        with bounded(con.cursor(), "1GB"):  # a second model on another dbt thread
            pass
        assert _limit(con) < 1.01 * 10**9  # still held by the first
    assert _shown(con) == before


@pytest.mark.parametrize("profile", ["300MB", "4GB"])
def test_a_limit_from_the_profile_is_left_alone_and_null_touches_nothing(profile):
    con = duckdb.connect(config={"memory_limit": profile})
    before = _limit(con)
    with bounded(con.cursor(), "1GB"):
        assert _limit(con) == before
    with bounded(con.cursor(), None):
        assert _limit(con) == before
    assert _limit(con) == before


def test_restored_even_when_the_run_fails():
    con = duckdb.connect()
    before = _shown(con)
    with pytest.raises(RuntimeError):
        with bounded(con.cursor(), "512MB"):
            raise RuntimeError("the run failed")
    assert _shown(con) == before


@pytest.mark.parametrize("value", ["lots", "1 parsec", 1024, ""])
def test_a_memory_limit_duckdb_cannot_read_is_a_clear_config_error(value):
    with pytest.raises(ConfigError, match="Setting `memory_limit` must be a size"):
        Settings.build(None, {"key": "id", "prompt_column": "p", "model": "claude-haiku-4-5", "memory_limit": value})
