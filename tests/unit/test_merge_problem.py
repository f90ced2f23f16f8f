"""Which incremental configs keep one row per key with the newest answer (`preflight.merge_problem`)."""

from __future__ import annotations

import pytest

from dbt_claude_batch.run.preflight import merge_problem

INCREMENTAL = {"materialized": "incremental", "unique_key": "id"}


@pytest.mark.parametrize("config", [
    {"materialized": "table"},  # rebuilt whole every run
    {"materialized": "table", "incremental_strategy": "append"},  # ignored by a table
    INCREMENTAL,  # dbt-duckdb's default strategy, delete+insert
    {**INCREMENTAL, "incremental_strategy": "delete+insert"},
    {**INCREMENTAL, "incremental_strategy": "merge"},
    {**INCREMENTAL, "incremental_strategy": "default"},
    {**INCREMENTAL, "incremental_strategy": "merge", "merge_on_using_columns": ["id"]},
    {**INCREMENTAL, "incremental_strategy": "merge", "merge_on_using_columns": "id"},
    {**INCREMENTAL, "incremental_predicates": []},  # set but empty: no predicate
])
def test_configs_that_replace_each_returned_keys_row_pass(config):
    assert merge_problem("m", config, ["id"]) is None


@pytest.mark.parametrize("config, first_words", [
    ({"materialized": "incremental"}, "Model m is incremental without a unique_key: set unique_key='id'"),
    ({**INCREMENTAL, "incremental_strategy": "append"}, "Model m has incremental_strategy 'append', which keeps"),
    ({**INCREMENTAL, "incremental_strategy": "microbatch"}, "Model m has incremental_strategy 'microbatch'"),
    ({**INCREMENTAL, "incremental_predicates": ["DBT_INTERNAL_DEST.id > 10"]}, "Model m sets incremental_predicates,"),
    ({**INCREMENTAL, "predicates": ["id > 10"]}, "Model m sets predicates,"),
    ({**INCREMENTAL, "incremental_strategy": "merge", "merge_exclude_columns": ["output_text"]},
     "Model m sets merge_exclude_columns,"),
    ({**INCREMENTAL, "incremental_strategy": "merge", "merge_update_columns": ["output_text"]},
     "Model m sets merge_update_columns,"),
    ({**INCREMENTAL, "incremental_strategy": "merge", "merge_update_condition": "DBT_INTERNAL_DEST.attempt < 3"},
     "Model m sets merge_update_condition,"),
    ({**INCREMENTAL, "incremental_strategy": "merge", "merge_on_using_columns": ["id", "tenant"]},
     "Model m sets merge_on_using_columns,"),
])
def test_configs_that_could_keep_an_old_row_or_column_are_refused_with_the_fix(config, first_words):
    problem = merge_problem("m", config, ["id"])
    assert problem is not None and problem.startswith(first_words), problem
    assert problem.endswith("Nothing was submitted.")


def test_a_composite_key_is_named_as_a_list_in_the_fix():
    problem = merge_problem("m", {"materialized": "incremental"}, ["tenant", "id"])
    assert "set unique_key=['tenant', 'id']" in problem
