"""Settings validation and prompt rendering (pure)."""

from __future__ import annotations

import pytest

from dbt_claude_batch.errors import ConfigError, DbtClaudeBatchError, TemplateError
from dbt_claude_batch.prompts import Prompt, request_params
from dbt_claude_batch.settings import Settings


def settings(**kw):
    base = {"key": "id", "prompt_column": "p", "model": "claude-haiku-4-5"}
    return Settings.build(None, {**base, **kw})


def test_kwargs_override_yaml_config():
    s = Settings.build({"key": "id", "prompt_column": "p", "model": "a", "max_tokens": 10}, {"max_tokens": 20})
    assert (s.model, s.max_tokens, s.key) == ("a", 20, ("id",))


def test_every_error_is_a_dbt_claude_batch_error_with_an_actionable_first_line():
    with pytest.raises(DbtClaudeBatchError) as info:
        settings(max_attempts="3")
    assert str(info.value).splitlines()[0] == "Setting `max_attempts` must be a positive integer; got '3'."


@pytest.mark.parametrize("params", [{"temperature": 1}, {"top_p": 0.5}, {"top_k": 3}])
def test_sampling_params_are_refused(params):
    with pytest.raises(ConfigError, match="rejected by the Messages API"):
        settings(params=params)


def test_reserved_params_point_to_their_setting():
    with pytest.raises(ConfigError, match="use the setting of the same name"):
        settings(params={"max_tokens": 5})


def test_request_params_pass_through_extra_parameters():
    s = settings(system="sys", stop_sequences=["END"], params={"metadata": {"user_id": "u"}})
    assert request_params(s, "hello", None) == {
        "model": "claude-haiku-4-5", "max_tokens": 1024,
        "messages": [{"role": "user", "content": "hello"}],
        "system": "sys", "stop_sequences": ["END"], "metadata": {"user_id": "u"},
    }
    assert request_params(s, "hello", "claude-opus-4-6")["model"] == "claude-opus-4-6"


def _prompt(tmp_path, text):
    (tmp_path / "t.j2").write_text(text)
    return Prompt(settings(prompt_column=None, prompt_template="t.j2"), str(tmp_path))


def test_template_columns_are_discovered_and_checked(tmp_path):
    p = _prompt(tmp_path, "{{ subject }} {% if body %}{{ body | upper }}{% endif %}")
    assert p.columns == ["body", "subject"]
    p.check_columns(["subject", "body", "id"])
    with pytest.raises(TemplateError, match="uses column\\(s\\) body that the source does not have"):
        p.check_columns(["subject"])


def test_row_values_are_never_rendered_as_templates(tmp_path):
    p = _prompt(tmp_path, "Ticket: {{ body }}")
    assert p.render({"body": "{{ 7 * 7 }} {% if x %}y{% endif %}"}) == "Ticket: {{ 7 * 7 }} {% if x %}y{% endif %}"


def test_template_is_sandboxed(tmp_path):
    p = _prompt(tmp_path, "{{ body.__class__.__mro__ }}")
    with pytest.raises(TemplateError, match="raised SecurityError"):
        p.render({"body": "x"})


def test_fingerprint_changes_with_template_and_settings(tmp_path):
    a = _prompt(tmp_path, "A {{ body }}").fingerprint()
    b = _prompt(tmp_path, "B {{ body }}").fingerprint()
    assert a != b
    assert settings(max_tokens=5).fingerprint_payload() != settings(max_tokens=6).fingerprint_payload()


def test_missing_template_file_names_the_path(tmp_path):
    with pytest.raises(TemplateError, match=r"Prompt template .*nope\.j2 cannot be read"):
        Prompt(settings(prompt_column=None, prompt_template="nope.j2"), str(tmp_path))


def test_template_syntax_error_names_the_line(tmp_path):
    with pytest.raises(TemplateError, match="syntax error on line 2"):
        _prompt(tmp_path, "ok\n{% if %}")
