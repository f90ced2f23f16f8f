"""DuckDB renders plain templates and builds the request JSON byte for byte as Python does (pure DuckDB).

The request hash is what decides whether a row is bought again: if SQL and Python disagreed on one
byte, a row rendered by one and later by the other would be paid for twice.
"""

from __future__ import annotations

import hashlib

import duckdb
import pytest

from dbt_claude_batch.base.prompts import Prompt, canonical_json, params_sql, request_params
from dbt_claude_batch.base.settings import Settings

NASTY = [
    "plain", "", None, 'quote " and backslash \\ and \\u000B literally', "line\nbreak\r\ttab\b\f",
    "".join(chr(i) for i in range(32)), "\x7f del, \u2028 \u2029 separators", "unicode é ü 漢字 😀 𝄞",
    "{{ not a template }} {% if x %}", "x" * 5000,
]


def _settings(**kw):
    base = {"key": "id", "prompt_template": "t.j2", "model": "claude-haiku-4-5"}
    return Settings.build(None, {**base, **kw})


def _prompt(tmp_path, template: str, settings: Settings, types: dict[str, str]) -> Prompt:
    (tmp_path / "t.j2").write_text(template, encoding="utf-8")
    return Prompt(settings, str(tmp_path), types)


def _compare(tmp_path, template: str, settings: Settings, rows: list[dict], types: dict[str, str]) -> int:
    """Assert SQL == Python for every row SQL builds; return how many rows SQL built."""
    prompt = _prompt(tmp_path, template, settings, types)
    expression = prompt.sql_expression()
    assert expression is not None
    params = params_sql(settings, "__cb_prompt", "__cb_model")
    assert params is not None
    con = duckdb.connect()
    cols = ", ".join(f'"{c}" {t}' for c, t in types.items())
    con.execute(f"create table src ({cols}, __cb_model varchar)")
    con.executemany(f"insert into src values ({', '.join('?' for _ in types)}, ?)",
                    [[r[c] for c in types] + [r.get("model", "claude-haiku-4-5")] for r in rows])
    got = con.execute(f"select {expression} as __cb_prompt, {params} as __cb_params, sha256(__cb_params) as h "
                      "from src order by rowid").fetchall()
    built = 0
    for row, (text, line, digest) in zip(rows, got):
        expected_text = prompt.render(row)
        assert text == expected_text
        if line is None:  # left to Python
            continue
        base = request_params(settings, expected_text, row.get("model", "claude-haiku-4-5"))
        assert line == canonical_json(base)
        assert digest == hashlib.sha256(canonical_json(base).encode("utf-8")).hexdigest()
        built += 1
    return built


def test_plain_template_over_text_and_integers_matches_python_byte_for_byte(tmp_path):
    rows = [{"id": i, "body": body} for i, body in enumerate(NASTY)]
    built = _compare(tmp_path, "Ticket {{ id }}:\n{{ body }}\n", _settings(), rows, {"id": "BIGINT", "body": "VARCHAR"})
    # Only rows whose text holds a control character DuckDB escapes differently are left to Python.
    assert built == len(rows) - 1


@pytest.mark.parametrize("extra", [
    {"system": "You classify tickets. \"Quoted\" \\ and é"},
    {"system": "Sys", "prompt_caching": True, "few_shot": [{"user": "u1", "assistant": "a1"}]},
    {"stop_sequences": ["\n\n", "END"]},
    {"output_schema": {"type": "object", "properties": {"label": {"type": "string"}}}},
    {"params": {"metadata": {"user_id": "u \" é"}, "service_tier": "auto"}},
])
def test_request_settings_are_built_exactly(tmp_path, extra):
    rows = [{"id": 1, "body": "hello"}, {"id": 2, "body": 'with "quotes"\nand lines'}]
    assert _compare(tmp_path, "{{ body }}", _settings(**extra), rows, {"id": "BIGINT", "body": "VARCHAR"}) == 2


def test_templates_sql_cannot_render_exactly_are_left_to_python(tmp_path):
    """(test_template_sql.py covers the compiled shapes and what stays with Jinja in full.)"""
    settings = _settings()
    assert _prompt(tmp_path, "{{ body | wordwrap(5) }}", settings, {"body": "VARCHAR"}).sql_expression() is None
    assert _prompt(tmp_path, "{{ score }}", settings, {"score": "DOUBLE"}).sql_expression() is None
    assert _prompt(tmp_path, "{{ at }}", settings, {"at": "TIMESTAMP"}).sql_expression() is None


def test_a_null_column_renders_as_empty_text_in_both(tmp_path):
    rows = [{"id": 1, "body": None}]
    assert _compare(tmp_path, "[{{ body }}]", _settings(), rows, {"id": "BIGINT", "body": "VARCHAR"}) == 1


def test_a_null_column_gives_the_same_bytes_in_sql_as_python_with_filters(tmp_path):
    """A NULL row under a filter is '' in SQL as in Python, the same text (and request hash) as the bare
    column gives, never 'None'."""
    settings = _settings()
    types = {"id": "BIGINT", "body": "VARCHAR"}
    rows = [{"id": 1, "body": None}, {"id": 2, "body": "abc"}]
    assert _compare(tmp_path, "Item {{ id }}: {{ body }}", settings, rows, types) == 2
    bare = _prompt(tmp_path, "Item {{ id }}: {{ body }}", settings, types).render(rows[0])
    filtered = "Item {{ id }}: {{ body | replace('x', 'y') }}"
    assert _compare(tmp_path, filtered, settings, rows, types) == 2
    assert _prompt(tmp_path, filtered, settings, types).render(rows[0]) == bare == "Item 1: "
