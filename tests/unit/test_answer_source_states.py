"""Answer sources: the setting's parsing, the read-only sources a run opens, and the one query of their answers."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import duckdb
import pytest

from dbt_claude_batch.base.answer_source_specs import parse_answer_sources
from dbt_claude_batch.base.errors import ConfigError, StateError
from dbt_claude_batch.state import migrations
from dbt_claude_batch.state.answer_sources import open_sources
from dbt_claude_batch.state.state import State

T0 = dt.datetime(2026, 1, 1)
S = '"dbt_claude_batch"'


def test_the_setting_takes_paths_databases_and_defaults():
    assert parse_answer_sources(None) == ()
    assert parse_answer_sources("../prod/warehouse.duckdb") == (
        {"path": "../prod/warehouse.duckdb", "schema": "dbt_claude_batch", "required": True},)
    assert parse_answer_sources([{"database": "prod", "schema": "cb_state", "required": False}]) == (
        {"database": "prod", "schema": "cb_state", "required": False},)


@pytest.mark.parametrize("value, message", [
    ([{"path": "a", "database": "b"}], "item 0 must set exactly one of `path`"),
    ([{"required": False}], "item 0 must set exactly one of `path`"),
    (["ok.duckdb", {"path": "b", "reqired": False}], "item 1 has unknown field(s) reqired"),
    ([{"path": "b", "required": "no"}], "`required` must be true or false"),
    ([{"path": ""}], "`path` must be a non-empty string"),
    (3, "must be a list of sources"),
])
def test_a_bad_setting_names_the_entry_and_the_fix(value, message):
    with pytest.raises(ConfigError, match="^Setting `answer_sources`") as err:
        parse_answer_sources(value)
    assert message in str(err.value)


def _state_file(path, version: int = migrations.SCHEMA_VERSION):
    """A DuckDB file holding state at `version` with answers of three requests (and one failure, one split)."""
    con = duckdb.connect(str(path))
    if version == migrations.SCHEMA_VERSION:
        State(con, "dbt_claude_batch", "main.m").ensure()
        State(con, "dbt_claude_batch", "main.m").record_model(["id"], {"id": "BIGINT"})
    else:
        con.execute(f"create schema {S}")
        con.execute(f"create table {S}.state_version (version integer not null, applied_at timestamp not null)")
        for v in range(1, version + 1):
            for ddl in migrations.MIGRATIONS[v]:
                con.execute(ddl.format(s=S))
            con.execute(f"insert into {S}.state_version values (?, ?)", [v, T0])
    con.execute(f"insert into {S}.submissions (submission_id, model_id, status, batch_id, n_requests, n_bytes, "
                "intent_at) values ('s1', 'main.m', 'submitted', 'b1', 5, 0, ?), "
                "('s2', 'main.m', 'submitted', 'b2', 1, 0, ?)", [T0, T0])
    reqs = [("s1", "k1", "h1"), ("s1", "k2", "h2"), ("s1", "k3", "h3"), ("s1", "k4", "h4"), ("s2", "k1b", "h1")]
    for sub, cid, h in reqs:
        con.execute(f"insert into {S}.requests (submission_id, model_id, custom_id, key_json, input_hash, request_hash, "
                    "attempt, model) values (?, 'main.m', ?, '{}', 'i', ?, 1, 'claude-haiku-4-5')", [sub, cid, h])
    outcomes = [("b1", "k1", "succeeded", "old one"), ("b1", "k2", "succeeded", "two"), ("b1", "k3", "errored", None),
                ("b1", "k4", "succeeded", "part"), ("b2", "k1b", "succeeded", "new one")]
    for i, (batch, cid, kind, text) in enumerate(outcomes):
        con.execute(f"insert into {S}.outcomes (batch_id, custom_id, model_id, result_type, output_text, input_tokens, "
                    "harvested_at) values (?, ?, 'main.m', ?, ?, 10, ?)", [batch, cid, kind, text, T0 + dt.timedelta(i)])
    if version >= 2:
        con.execute(f"update {S}.requests set parts = 2, part = 1 where custom_id = 'k4'")
    if version >= 3:
        con.execute(f"update {S}.outcomes set harvest_seq = epoch(harvested_at)")
    return con


def _held(con, specs, project_dir):
    State(con, "dbt_claude_batch", "main.m").ensure()  # a run's own state always exists before its sources open
    with open_sources(con, "dbt_claude_batch", parse_answer_sources(specs), str(project_dir)) as sources:
        return {s.label: sorted(con.execute(
            f"select request_hash, output_text, from_batch, from_custom_id, input_tokens, output_json "
            f"from ({s.held_answers_sql()})").fetchall()) for s in sources}


@pytest.mark.parametrize("version", [1, 3, migrations.SCHEMA_VERSION])
def test_a_source_file_gives_the_newest_succeeded_unsplit_answer_of_each_request_hash(tmp_path, version):
    _state_file(tmp_path / "prod.duckdb", version).close()
    con = duckdb.connect(str(tmp_path / "dev.duckdb"))
    State(con, "dbt_claude_batch", "main.m").ensure()

    held = _held(con, ["prod.duckdb"], tmp_path)

    split = version >= 2  # v1 knows no split requests: its k4 is a whole answer
    expected = [("h1", "new one", "b2", "k1b", 10, None), ("h2", "two", "b1", "k2", 10, None)]
    expected += [] if split else [("h4", "part", "b1", "k4", 10, None)]
    assert held == {f"{tmp_path / 'prod.duckdb'}:dbt_claude_batch": expected}
    assert con.execute("select count(*) from duckdb_databases() where database_name like 'cb_answers_%'").fetchone() == (0,)


def test_a_source_is_opened_read_only(tmp_path):
    _state_file(tmp_path / "prod.duckdb").close()
    con = duckdb.connect(str(tmp_path / "dev.duckdb"))
    State(con, "dbt_claude_batch", "main.m").ensure()
    with open_sources(con, "dbt_claude_batch", parse_answer_sources(["prod.duckdb"]), str(tmp_path)) as (source,):
        with pytest.raises(duckdb.Error, match="read-only"):
            con.execute(f'delete from "{source.catalog}".{S}.outcomes')


def test_a_missing_file_is_refused_unless_not_required(tmp_path):
    con = duckdb.connect()
    with pytest.raises(ConfigError, match=r"^Setting `answer_sources` item 0 names 'gone.duckdb' \(.*\), which does not "
                                          r"exist: fix the path .* or add `required: false`"):
        _held(con, ["gone.duckdb"], tmp_path)
    assert _held(con, [{"path": "gone.duckdb", "required": False}], tmp_path) == {}


def test_a_file_without_state_in_the_schema_is_refused_naming_the_schema(tmp_path):
    _state_file(tmp_path / "prod.duckdb").close()
    with pytest.raises(StateError, match=r"item 0\) holds no dbt-claude-batch state in schema 'other': set that entry's"):
        _held(duckdb.connect(), [{"path": "prod.duckdb", "schema": "other"}], tmp_path)


def test_a_newer_state_is_read_while_compatible_and_refused_when_not(tmp_path):
    con = _state_file(tmp_path / "prod.duckdb")
    con.execute(f"insert into {S}.state_version values (99, ?)", [T0])
    con.close()
    assert len(next(iter(_held(duckdb.connect(), ["prod.duckdb"], tmp_path).values()))) == 2
    con = duckdb.connect(str(tmp_path / "prod.duckdb"))
    con.execute(f"alter table {S}.outcomes drop column output_text")
    con.close()
    with pytest.raises(StateError, match=r"^The answer source .* is at state version 99, newer than this dbt-claude-batch "
                                         r"\(\d+\) and incompatible \(no outcomes.output_text\): upgrade"):
        _held(duckdb.connect(), ["prod.duckdb"], tmp_path)


def test_a_schema_of_this_database_is_a_source_and_its_own_state_schema_is_not(tmp_path):
    con = _state_file(tmp_path / "prod.duckdb")  # prod's state in dbt_claude_batch; CI's in ci_state, same file
    State(con, "ci_state", "ci.m").ensure()
    spec = parse_answer_sources([{"schema": "dbt_claude_batch"}])
    with open_sources(con, "ci_state", spec, str(tmp_path)) as found:
        assert [s.label for s in found] == ["database prod:dbt_claude_batch"]
        assert len(con.execute(f"select * from ({found[0].held_answers_sql()})").fetchall()) == 2
    with open_sources(con, "dbt_claude_batch", spec, str(tmp_path)) as found:
        assert found == []


def test_imported_answers_are_a_source_of_this_state(tmp_path):
    con = duckdb.connect()
    State(con, "dbt_claude_batch", "main.m").ensure()
    assert _held(con, [], tmp_path) == {}
    con.execute(f"""insert into {S}.imported_answers values
        ('h1', 'main.m', '{{"output_text": "one", "batch_id": "b1", "custom_id": "k1", "output_json": null}}',
         '{{"input_tokens": 12}}', 'a.parquet <- prod', ?),
        ('h2', 'main.m', '{{"output_text": "two", "output_json": {{"x": 1}}}}', null, 'a.parquet <- prod', ?)""",
                [T0, T0])
    assert _held(con, [], tmp_path) == {"imported answers": [
        ("h1", "one", "b1", "k1", 12, None), ("h2", "two", None, None, None, '{"x":1}')]}


def test_an_export_imports_once_and_carries_each_answer_by_its_request_hash(tmp_path):
    from dbt_claude_batch.state.answer_files import export_answers, import_answers

    con = _state_file(tmp_path / "prod.duckdb")
    out = tmp_path / "answers.parquet"
    assert export_answers(con, "dbt_claude_batch", "m", str(out), "prod.duckdb") == 2
    ci = duckdb.connect(str(tmp_path / "ci.duckdb"))  # no state yet: the import creates it
    assert import_answers(ci, "dbt_claude_batch", str(out)) == (2, 0)
    assert import_answers(ci, "dbt_claude_batch", str(out)) == (0, 2)
    assert _held(ci, [], tmp_path) == {"imported answers": [
        ("h1", "new one", "b2", "k1b", 10, None), ("h2", "two", "b1", "k2", 10, None)]}
    assert ci.execute(f"select distinct model, source from {S}.imported_answers").fetchall() == [
        ("main.m", f"{out} <- prod.duckdb:dbt_claude_batch")]


def test_export_and_import_refuse_what_they_cannot_read_and_say_what_to_pass(tmp_path):
    from dbt_claude_batch.state.answer_files import export_answers, import_answers

    con = _state_file(tmp_path / "prod.duckdb")
    with pytest.raises(ConfigError, match=r"^--model 'other' is no batch model of this state: pass one of main.m "):
        export_answers(con, "dbt_claude_batch", "other", str(tmp_path / "a.parquet"), "prod.duckdb")
    con.execute(f"copy (select 1 as id) to '{tmp_path / 'other.parquet'}' (format parquet)")
    with pytest.raises(ConfigError, match=r"other.parquet is not an answers export \(no column request_hash, model"):
        import_answers(con, "dbt_claude_batch", str(tmp_path / "other.parquet"))
    with pytest.raises(ConfigError, match=r"^No file at .*gone.parquet: pass --from"):
        import_answers(con, "dbt_claude_batch", str(tmp_path / "gone.parquet"))


def test_a_locked_source_is_refused_when_required_and_left_out_when_not(tmp_path):
    holder = _state_file(tmp_path / "prod.duckdb")  # stands for prod's running dbt: another connection, writing
    holder.close()
    locker = subprocess.Popen([sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); "
                               "print('locked', flush=True); sys.stdin.read()", str(tmp_path / "prod.duckdb")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert locker.stdout.readline().strip() == "locked"
        with pytest.raises(StateError, match=r"^The answer source .*prod.duckdb cannot be opened read-only"):
            _held(duckdb.connect(), ["prod.duckdb"], tmp_path)
        assert _held(duckdb.connect(), [{"path": "prod.duckdb", "required": False}], tmp_path) == {}
    finally:
        locker.communicate("")
