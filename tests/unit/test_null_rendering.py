"""A NULL column renders the same with or without filters, and its request hash stays (pure)."""

from __future__ import annotations

import hashlib

import pytest

from dbt_claude_batch.base.prompts import Prompt, canonical_json, request_params
from dbt_claude_batch.base.settings import Settings


def _prompt(tmp_path, text):
    (tmp_path / "t.j2").write_text(text)
    settings = Settings.build(None, {"key": "id", "prompt_template": "t.j2", "model": "claude-haiku-4-5"})
    return Prompt(settings, str(tmp_path))


# NULL renders as empty text with or without filters, and stays testable with `is none`.
@pytest.mark.parametrize("template, expected", [
    ("[{{ body }}]", "[]"),
    ("[{{ body | replace('a', 'b') }}]", "[]"),
    ("[{{ body | upper | trim }}]", "[]"),
    ("[{{ body | string }}]", "[]"),
    ("[{{ body ~ '!' }}]", "[!]"),
    ("[{{ body[:20000] }}]", "[]"),
    ("[{{ body | default('n/a', true) }}]", "[n/a]"),
    ("{% if body is none %}(none){% else %}{{ body }}{% endif %}", "(none)"),
    ("{% if body is not none %}x{% else %}(none){% endif %}", "(none)"),
    ("{% if body == none %}(none){% endif %}", "(none)"),
    ("{% if body %}x{% else %}(empty){% endif %}", "(empty)"),
    ("{{ body | tojson }}", "null"),
])
def test_null_renders_the_same_with_or_without_filters(tmp_path, template, expected):
    assert _prompt(tmp_path, template).render({"body": None}) == expected


def test_a_value_that_is_not_null_is_untouched_by_the_null_handling(tmp_path):
    p = _prompt(tmp_path, "{{ body | replace('a', 'b') }}|{{ body is none }}|{{ body == none }}")
    assert p.render({"body": "banana"}) == "bbnbnb|False|False"
    assert _prompt(tmp_path, "{{ body | tojson }}").render({"body": ""}) == '""'


@pytest.mark.parametrize("template, digest", [
    # Request hashes of a NULL row computed by the version before the fix: templates that rendered NULL
    # as '' keep their hash, so no answer is bought again.
    ("Item {{ id }}: {{ body }}", "b93f9a86f865f873cf2fc581653defc752da39fd4596dac8f1d4e06d68c349dd"),
    ("{% if body is none %}(none){% else %}{{ body }}{% endif %}",
     "2cb4a5c1483c3de038e1e5b06a598c19bfe7f1a61b5e1a446971538a75faff51"),
    ('[{{ body | default("x") }}]', "3c645e9f0cdc9355683f821292127a1165cd4d4b26d6f96533fbe84fe47185bc"),
    ("{% if body %}{{ body | upper }}{% endif %}", "c4a619278066b61ce321494e09fc045d08a6ec7baeef0f84a77d7dec148227df"),
    ("{{ body | tojson }}", "e8af6f9695200fff711cb987c99f1153aba045847dccbbfd83cb7ada59967c46"),
])
def test_the_request_hash_of_a_null_row_is_unchanged_where_it_rendered_as_empty_text(tmp_path, template, digest):
    s = Settings.build(None, {"key": "id", "prompt_template": "t.j2", "model": "claude-haiku-4-5", "max_tokens": 64})
    (tmp_path / "t.j2").write_text(template)
    text = Prompt(s, str(tmp_path)).render({"id": 1, "body": None})
    assert hashlib.sha256(canonical_json(request_params(s, text, None)).encode()).hexdigest() == digest
