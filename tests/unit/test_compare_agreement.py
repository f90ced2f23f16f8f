"""Agreement of old and new answers, the stratified choice of keys, and the comparison's refusals before any call."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import duckdb
import pytest

from dbt_claude_batch.base.errors import NothingToCompareError
from dbt_claude_batch.base.prompts import Prompt, canonical_json, request_params
from dbt_claude_batch.base.run_vars import RunVars
from dbt_claude_batch.base.settings import Settings
from dbt_claude_batch.base.errors import ConfigError
from dbt_claude_batch.run import planning
from dbt_claude_batch.run.agreement import (
    WHOLE_FIELD, field_agreement, normalise, stratified_sample_sql, stratum_sql, text_agreement)
from dbt_claude_batch.run.compare import run_compare
from dbt_claude_batch.state.state import State

SCHEMA = {"type": "object", "properties": {"label": {"type": "string"}, "score": {"type": "integer"},
                                           "tags": {"type": "array"}}}


def test_normalise_drops_case_punctuation_and_extra_whitespace():
    assert normalise("  Billing.\n") == normalise("billing") == "billing"
    assert normalise("Feature-request!") == "feature request"
    assert normalise("Ünïcode  «quoted»") == "ünïcode quoted"
    assert normalise(None) is None
    assert normalise("bug") != normalise("billing")


def test_text_agreement_exact_and_normalised():
    [same] = text_agreement("Billing", "Billing")
    assert (same.field, same.exact, same.normalised) == ("text", True, True)
    [near] = text_agreement("Billing", " billing.")
    assert (near.exact, near.normalised) == (False, True)
    [other] = text_agreement("billing", "bug")
    assert (other.old_value, other.new_value, other.exact, other.normalised) == ("billing", "bug", False, False)
    [failed] = text_agreement("billing", None)  # the new call did not answer
    assert (failed.exact, failed.normalised) == (False, False)


def test_field_agreement_per_schema_field_in_schema_order():
    rows = field_agreement('{"label": "Bug", "score": 3, "tags": ["a", "b"]}',
                           '{"tags": ["a", "b"], "score": 4, "label": "bug "}', SCHEMA)
    assert [(r.field, r.old_value, r.new_value, r.exact, r.normalised) for r in rows] == [
        ("label", "Bug", "bug ", False, True),
        ("score", "3", "4", False, False),
        ("tags", '["a","b"]', '["a","b"]', True, True),
    ]


def test_field_agreement_fields_outside_the_schema_and_missing_ones():
    rows = field_agreement('{"label": "bug", "extra": 1}', '{"label": "bug"}', {"properties": {"label": {}}})
    assert [(r.field, r.new_value, r.exact) for r in rows] == [("label", "bug", True), ("extra", None, False)]
    # A new answer that is not JSON (or no answer) agrees on no field; its values read as null.
    rows = field_agreement('{"label": "bug", "score": 1}', "not json", SCHEMA)
    assert [(r.field, r.old_value, r.new_value, r.exact, r.normalised) for r in rows] == [
        ("label", "bug", None, False, False), ("score", "1", None, False, False), ("tags", None, None, False, False)]
    # A schema without properties, answers not objects: compared whole.
    [whole] = field_agreement("[1, 2]", "[1,2]", {"type": "array"})
    assert (whole.field, whole.exact) == (WHOLE_FIELD, True)


def test_stratified_sample_reaches_every_kind_before_a_second_of_any():
    con = duckdb.connect()
    # 90 keys answered `billing`, 9 `bug`, 1 `other`, and 5 long answers.
    con.execute("create table held (custom_id varchar, output_text varchar, stop_reason varchar)")
    rows = ([(f"b{i}", "Billing.", "end_turn") for i in range(90)] + [(f"g{i}", "bug", "end_turn") for i in range(9)]
            + [("o0", "other", "end_turn")] + [(f"l{i}", "long " * 20 + str(i), "end_turn") for i in range(5)])
    con.executemany("insert into held values (?, ?, ?)", rows)
    held = f"select custom_id, {stratum_sql('output_text', 'stop_reason')} as stratum from held"
    strata = dict(con.execute(f"select stratum, count(*) from ({held}) group by all").fetchall())
    assert strata == {"end_turn|billing": 90, "end_turn|bug": 9, "end_turn|other": 1, "end_turn|(long answer)": 5}
    picked = con.execute(f"select custom_id, stratum from ({stratified_sample_sql(held, 4)})").fetchall()
    assert sorted(s for _, s in picked) == sorted(strata)  # one of each kind, the rare `other` included
    ten = [c for c, _ in con.execute(f"select * from ({stratified_sample_sql(held, 10)})").fetchall()]
    assert len(set(ten)) == 10 and "o0" in ten  # round-robin: the one other, then 3 of each other kind
    assert [sum(c.startswith(p) for c in ten) for p in "bgl"] == [3, 3, 3]
    # Deterministic, and a hash spread, not the first keys in name order.
    assert ten == [c for c, _ in con.execute(f"select * from ({stratified_sample_sql(held, 10)})").fetchall()]
    assert sorted(c for c in ten if c.startswith("b")) != ["b0", "b1", "b10"]


def test_compare_var_must_be_a_count_and_not_with_sample():
    assert RunVars.parse({"claude_batch_compare": 50}, "m").compare_size == 50
    assert RunVars.parse({"claude_batch_compare": 5}, "m").any()
    for bad in (True, "50", -1):
        with pytest.raises(ConfigError, match="^Var `claude_batch_compare` must be a number of keys"):
            RunVars.parse({"claude_batch_compare": bad}, "m")
    with pytest.raises(ConfigError, match="^Vars `claude_batch_sample` and `claude_batch_compare` cannot be given"):
        RunVars.parse({"claude_batch_compare": 5, "claude_batch_sample": 5}, "m")


def test_compare_via_is_sync_unless_batch_is_asked_for():
    assert RunVars.parse({"claude_batch_compare": 5}, "m").compare_via == "sync"
    assert RunVars.parse({"claude_batch_compare": 5, "claude_batch_compare_via": "batch"}, "m").compare_via == "batch"
    for bad in ("Batch", "async", True, 1):
        with pytest.raises(ConfigError, match="^Var `claude_batch_compare_via` is .*: set it to sync"):
            RunVars.parse({"claude_batch_compare": 5, "claude_batch_compare_via": bad}, "m")


def test_plan_and_compare_run_dbt_the_same_way_through_the_sigterm_wrapper_in_the_project_dir(tmp_path, monkeypatch):
    import json
    import sys

    from dbt_claude_batch.observe.compare import command_for
    from dbt_claude_batch.observe.dbt_command import dbt_command
    from dbt_claude_batch.state.warehouse import Location

    (tmp_path / "proj").mkdir()
    (tmp_path / "profiles.yml").write_text("{}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DBT_PROJECT_DIR", raising=False)
    monkeypatch.delenv("DBT_PROFILES_DIR", raising=False)
    wrapper = [sys.executable, "-m", "dbt_claude_batch.observe.cli", "dbt", "run", "--vars"]
    # relative directories are made absolute: the child runs in the project directory, not here
    compare = command_for("items", 5, "batch", Location("proj", None, "prof", "ci"))
    assert compare == ([*wrapper, json.dumps({"claude_batch_compare": 5, "claude_batch_compare_via": "batch"}),
                        "--select", "items", "--project-dir", str(tmp_path / "proj"), "--profiles-dir",
                        str(tmp_path), "--profile", "prof", "--target", "ci"], str(tmp_path / "proj"))
    assert dbt_command({"claude_batch_plan": True}) == (
        [*wrapper, '{"claude_batch_plan": true}', "--project-dir", str(tmp_path), "--profiles-dir", str(tmp_path)],
        str(tmp_path))


SETTINGS = {"key": "id", "prompt_column": "body", "model": "claude-haiku-4-5", "max_tokens": 16}
SOURCE = "select * from src"


def _state(settings: Settings) -> State:
    con = duckdb.connect()
    con.execute("create table src as select * from (values (1, 'one'), (2, 'two')) t(id, body)")
    state = State(con.cursor(), "dbt_claude_batch", "main.m")
    state.ensure()
    planning.stage(state, SOURCE, ["id"], ["body"], None, settings.model, "fp")
    return state


def _hold(state: State, settings: Settings, custom_id: str, key: int, text: str) -> None:
    """A held answer whose request hash is that of the request for `text`."""
    params = request_params(settings, text, settings.model)
    digest = hashlib.sha256(canonical_json(params).encode()).hexdigest()
    state.run(f"insert into {state.table('answers')} (model_id, custom_id, attempt, key_json, request_hash, "
              "output_text, stop_reason) values ('main.m', ?, 1, ?, ?, 'an answer', 'end_turn')",
              [custom_id, f'{{"id":{key}}}', digest])


def test_compare_refuses_without_held_answers_and_when_nothing_changed():
    settings = Settings.build(None, SETTINGS)
    state = _state(settings)
    this = SimpleNamespace(database="memory", schema="main", identifier="m")
    prompt = Prompt(settings, None)
    args = (None, state, prompt, settings, 5, this, {"id": "INTEGER"}, SOURCE)  # client None: no call may happen
    with pytest.raises(NothingToCompareError, match="^main.m holds no answers for the keys of its source"):
        run_compare(*args)
    ids = dict(state.run(f"select __cb_key_json, __cb_custom_id from {planning.STAGED}"))
    _hold(state, settings, ids['{"id":1}'], 1, "one")
    _hold(state, settings, ids['{"id":2}'], 2, "two")
    with pytest.raises(NothingToCompareError, match="^nothing to compare: the current prompt and settings of main.m"):
        run_compare(*args)
    assert not state.run("select * from information_schema.tables where table_name = 'm__compare'")


def test_plan_and_compare_pass_the_users_vars_to_dbt_under_their_own(tmp_path, monkeypatch):
    import json

    from dbt_claude_batch.observe.cli import build_parser
    from dbt_claude_batch.observe.dbt_command import dbt_command

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DBT_PROJECT_DIR", raising=False)
    monkeypatch.delenv("DBT_PROFILES_DIR", raising=False)
    args = build_parser().parse_args(["plan", "--vars", "{run_date: '2026-12-01', claude_batch_plan: false}"])
    assert args.vars == {"run_date": "2026-12-01", "claude_batch_plan": False}
    command, _ = dbt_command({"claude_batch_plan": True}, user_vars=args.vars)
    # the user's vars reach the model; the command's own var wins over one of the same name
    assert json.loads(command[command.index("--vars") + 1]) == {"run_date": "2026-12-01", "claude_batch_plan": True}
    assert build_parser().parse_args(["compare", "--model", "m", "--vars", "run_date: x"]).vars == {"run_date": "x"}
    for bad in ("[1, 2]", "{unclosed"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["plan", "--vars", bad])
