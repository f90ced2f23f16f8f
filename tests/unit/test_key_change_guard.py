"""A key change is refused while anything of the model is in flight, a prompt comparison's batch included."""

from __future__ import annotations

import duckdb
import pytest

from dbt_claude_batch.base.errors import ConfigError
from dbt_claude_batch.base.settings import Settings
from dbt_claude_batch.run.preflight import check_key_change
from dbt_claude_batch.state.state import State, utcnow


def test_a_comparison_batch_in_flight_holds_a_key_change_back():
    con = duckdb.connect()
    state = State(con, "dbt_claude_batch", "main.items")
    state.ensure()
    state.record_model(["id"], {"id": "BIGINT"})
    con.execute("insert into dbt_claude_batch.submissions (submission_id, model_id, status, n_requests, n_bytes, "
                "intent_at, purpose) values ('s1', 'main.items', 'submitted', 1, 10, ?, 'rows'), "
                "('s2', 'main.items', 'submitted', 1, 10, ?, 'compare')", [utcnow(), utcnow()])
    con.execute("insert into dbt_claude_batch.requests (submission_id, model_id, custom_id, key_json, input_hash, "
                "request_hash, attempt) values ('s1', 'main.items', '1', '{\"id\":1}', 'i', 'r', 1)")
    con.execute("insert into dbt_claude_batch.comparisons (compare_id, model_id, submission_id, created_at, "
                "held_keys, sampled_keys) values ('c1', 'main.items', 's2', ?, 1, 1)", [utcnow()])
    cfg = Settings.build({"key": "code", "prompt_column": "p", "model": "claude-haiku-4-5"}, {})
    with pytest.raises(ConfigError) as info:
        check_key_change(state, cfg, "items", is_incremental=False, key_types={"code": "VARCHAR"})
    assert str(info.value).startswith("Setting `key` of main.items changed while 1 batch(es) are in flight")
    con.execute("update dbt_claude_batch.comparisons set collected_at = ?", [utcnow()])
    assert check_key_change(state, cfg, "items", is_incremental=False, key_types={"code": "VARCHAR"}) == ["id"]
