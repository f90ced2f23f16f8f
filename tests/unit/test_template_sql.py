"""A compiled template renders, in DuckDB, byte for byte what Jinja renders (property tests, pure DuckDB).

The request hash decides whether a row is bought again: were SQL and Jinja to differ by one byte, a row
rendered by one and later by the other would be paid for twice. Each shape below is rendered both ways
over hostile values: NULLs, unicode, `{{ }}` inside values, quotes, backslashes, newlines, empty text,
numbers, decimals, dates and booleans. The values reach Jinja the way the row pass reads them (Arrow from
DuckDB). A row outside a compiled template's guards renders NULL in SQL (the run then takes the row
pass): allowed, but only where the guard says why.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from dbt_claude_batch.base.prompts import Prompt, canonical_json, params_sql, request_params
from dbt_claude_batch.base.settings import Settings

TYPES = {"id": "BIGINT", "body": "VARCHAR", "tag": "VARCHAR", "n": "INTEGER", "flag": "BOOLEAN", "day": "DATE",
         "amount": "DECIMAL(18,3)", "tags": "VARCHAR[]", "nums": "BIGINT[]"}

TRICKY = ["", " ", "x", "a", "b", "{{ body }}", "{% if x %}y{% endif %}", "'", '"', "\\", "\n", "\r\n", "\t",
          "a b c d e f g h i j", "word " * 5, "ß", "İstanbul", "ǅ", "é", "漢字", "😀", "\u2028", "\u00a0 pad \u3000",
          "<b>&'x'</b>", "\\u0041", "\x7f", "\x1f", "None", "True", "  both  ", "ab ba", "aaaa", "}}{{"]
_chars = st.characters(codec="utf-8", exclude_characters="\x00")
text = st.one_of(st.none(), st.sampled_from(TRICKY), st.text(_chars, max_size=24),
                 st.text(st.sampled_from("ab xyé\n'\"\\{}%"), max_size=20))
rows = st.fixed_dictionaries({
    "id": st.integers(-(2 ** 63), 2 ** 63 - 1),
    "body": text,
    "tag": st.one_of(st.none(), st.sampled_from(["x", "a", "b", "", "y"]), text),
    "n": st.one_of(st.none(), st.integers(-3, 3), st.integers(-(2 ** 31), 2 ** 31 - 1)),
    "flag": st.one_of(st.none(), st.booleans()),
    "day": st.one_of(st.none(), st.dates()),
    "amount": st.one_of(st.none(), st.sampled_from([decimal.Decimal("0"), decimal.Decimal("1"),
                                                    decimal.Decimal("-0.001")]),
                        st.decimals(min_value=-10 ** 14, max_value=10 ** 14, places=3, allow_nan=False,
                                    allow_infinity=False)),
    "tags": st.one_of(st.none(), st.lists(st.one_of(st.none(), text), max_size=4)),
    "nums": st.one_of(st.none(), st.lists(st.one_of(st.none(), st.integers(-(2 ** 63), 2 ** 63 - 1)), max_size=3)),
})

SHAPES = {
    "columns": "Ticket {{ id }}: {{ body }}\n{{ 'lit \"q\"' }} {{ id ~ '-' ~ body ~ tag }} {{ 42 }}",
    "if-elif-else": ("{% if body %}B={{ body }}{% elif tag == 'x' %}X{% elif tag in ['a', 'b'] %}AB"
                     "{% elif tag not in ['y', ''] %}T{% else %}none{% endif %}|{% if body is none %}N{% endif %}"
                     "{% if tag is not none and not flag %}F{% endif %}{% if n and (day or amount) %}Y{% endif %}"
                     "{% if n == 3 %}three{% elif n in [1, 2] %}small{% elif amount == 1 %}one{% endif %}"
                     "{% if body != 'x' %}nx{% endif %}{% if tags or nums %}L{% endif %}\n"),
    "text filters": ("{{ body | upper }}|{{ tag | lower }}|{{ body | trim }}|{{ body | trim('ab ') }}|"
                     "{{ body | default('dflt', true) }}|{{ tag | default('z') }}|{{ body | d('w', boolean=true) }}|"
                     "{{ body | replace('a', 'A\"') }}|{{ body | replace('{{', '}}') }}|{{ body | length }}|"
                     "{{ n | upper }}|{{ (body ~ tag) | trim | replace(' ', '_') }}"),
    "truncate": ("{{ body | truncate(5) }}|{{ body | truncate(8, true) }}|{{ body | truncate(10, false, '…', 0) }}"
                 "|{{ body | truncate(3, end='', leeway=1) }}|{{ body | truncate(length=4, killwords=true, end='!') }}"),
    "tojson": "{{ body | tojson }} {{ n | tojson }} {{ flag | tojson }} {{ id | tojson }}",
    "types": "{{ n }} {{ flag }} {{ day }} {{ amount }} {{ day ~ '|' ~ amount ~ '|' ~ flag }} {{ flag | lower }}",
    "lists": ("{% for t in tags %}[{{ t }}{% if t == 'x' %}!{% elif t is none %}0{% endif %}]{% endfor %} "
              "{{ tags | join(', ') }} {{ tags | length }} {{ nums | join('-') }}"
              "{% for x in nums %}<{{ x }}{% if x %}+{% endif %}>{% endfor %}{% if tags %}T{% endif %}"),
    "filters on elements": "{% for t in tags %}{{ t | upper }};{{ t ~ '.' }}{% endfor %}{{ tags | join }}",
    "plain": "{{ body }}",
}


def _settings() -> Settings:
    return Settings.build(None, {"key": "id", "prompt_template": "t.j2", "model": "claude-haiku-4-5"})


def _prompt(tmp_path, template: str) -> Prompt:
    (tmp_path / "t.j2").write_text(template, encoding="utf-8")
    return Prompt(_settings(), str(tmp_path), TYPES)


@pytest.fixture(scope="module")
def con():
    con = duckdb.connect()
    yield con
    con.close()


def _render_both(con, prompt: Prompt, batch: list[dict]) -> list[tuple[dict, str | None, str]]:
    """Each row as the row pass reads it (Arrow from DuckDB), its SQL rendering, and Jinja's."""
    expression = prompt.sql_expression()
    assert expression is not None
    cols = ", ".join(f'"{c}" {t}' for c, t in TYPES.items())
    con.execute(f"create or replace temp table src (__ord integer, {cols})")
    con.executemany(f"insert into src values (?, {', '.join('?' for _ in TYPES)})",
                    [[i, *(r[c] for c in TYPES)] for i, r in enumerate(batch)])
    table = con.sql(f"select *, {expression} as __sql from src order by __ord").to_arrow_table()
    out = []
    for row in table.to_pylist():
        out.append((row, row["__sql"], prompt.render({c: row[c] for c in TYPES})))
    return out


def _outside_guards(row: dict) -> bool:
    """Values a guard may send to the row pass: case mapping or JSON beyond printable ASCII, a list
    element that is NULL under a filter."""
    texts = [row["body"], row["tag"], *(row["tags"] or [])]
    return (any(t is not None and not all(" " <= ch <= "~" for ch in t) for t in texts)
            or None in (row["tags"] or []))


@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_compiled_template_renders_what_jinja_renders(tmp_path, con, shape):
    prompt = _prompt(tmp_path, SHAPES[shape])
    assert prompt.sql_expression() is not None
    built = []

    @hsettings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.lists(rows, min_size=1, max_size=12))
    def check(batch):
        for row, sql, jinja in _render_both(con, prompt, batch):
            if sql is None:
                assert _outside_guards(row), (row, jinja)
                continue
            assert sql == jinja, (row, sql, jinja)
            built.append(sql)

    check()
    assert built  # the property held on rows SQL did render, not only on guarded ones


def test_a_compiled_prompt_gives_the_request_and_hash_python_gives(tmp_path, con):
    prompt = _prompt(tmp_path, SHAPES["if-elif-else"] + SHAPES["text filters"])
    settings = _settings()
    params = params_sql(settings, "__p", "'claude-haiku-4-5'")
    batch = [{**dict.fromkeys(TYPES), "id": 1, "body": 'He said "hi" {{ x }}\\', "tag": "a", "n": 3,
              "flag": False, "day": dt.date(2024, 2, 29), "amount": decimal.Decimal("1.000"), "tags": ["x"]},
             {**dict.fromkeys(TYPES), "id": 2}]
    _render_both(con, prompt, batch)
    got = con.execute(f"select __p, {params}, sha256({params}) from (select {prompt.sql_expression()} as __p "
                      "from src order by __ord)").fetchall()
    for row, (text, line, digest) in zip(batch, got):
        expected = canonical_json(request_params(settings, prompt.render(row), "claude-haiku-4-5"))
        assert (line, digest) == (expected, hashlib.sha256(expected.encode()).hexdigest())


@pytest.mark.parametrize("template", [
    "{{ score }}", "{{ at }}", "{{ body[:10] }}", "{{ body.upper() }}", "{% set x = 1 %}{{ x }}",
    "{% for t in tags %}{{ loop.index }}{% endfor %}", "{% for t in tags %}{% else %}none{% endfor %}",
    "{{ body | wordwrap(5) }}", "{{ body | replace('', '-') }}", "{{ body | replace('a', 'b', 1) }}",
    "{{ body | truncate(2) }}", "{{ n | length }}", "{{ body | join(',') }}", "{{ tags }}",
    "{% if n != 1 %}x{% endif %}", "{% if body == 1 %}x{% endif %}", "{% if body > 'a' %}x{% endif %}",
    "{{ body | tojson(2) }}", "{{ body | tojson | upper }}", "{{ day | tojson }}", "{{ body | default(n, true) }}",
    "{% macro m() %}x{% endmacro %}{{ m() }}", "{{ body | trim('') }}", "{% if flag == true %}x{% endif %}",
    "{% for t in body %}{{ t }}{% endfor %}", "{{ fine | upper }}",
])
def test_what_the_compiler_cannot_prove_is_left_to_jinja(tmp_path, template):
    (tmp_path / "t.j2").write_text(template, encoding="utf-8")
    prompt = Prompt(_settings(), str(tmp_path), {**TYPES, "score": "DOUBLE", "at": "TIMESTAMP",
                                                 "fine": "DECIMAL(18,9)"})
    assert prompt.sql_expression() is None
