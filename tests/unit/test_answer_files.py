"""Importing an answers export: what is refused, and where the answers land."""

from __future__ import annotations

import duckdb
import pytest

from dbt_claude_batch.base.errors import ConfigError
from dbt_claude_batch.state.answer_files import import_answers, schemas_with_models


def test_a_file_that_is_not_parquet_is_refused_with_the_fix(tmp_path):
    csv = tmp_path / "answers.csv"
    csv.write_text("request_hash,model,answer\nabc,claude-haiku-4-5,hi\n")
    con = duckdb.connect()
    with pytest.raises(ConfigError) as info:
        import_answers(con, "dbt_claude_batch", str(csv))
    assert str(info.value).splitlines()[0].startswith(
        f"{csv} is not an answers export (not a Parquet file): import a file that `dbt-claude-batch answers export` "
        "wrote.")


def test_the_state_schemas_that_hold_batch_models_are_found(tmp_path):
    con = duckdb.connect()
    con.execute("create schema claude_state")
    con.execute("create table claude_state.models (model_id varchar)")
    con.execute("insert into claude_state.models values ('main.items')")
    con.execute("create schema empty_state")
    con.execute("create table empty_state.models (model_id varchar)")
    assert schemas_with_models(con) == ["claude_state"]
