"""Settings validation and prompt rendering (pure)."""

from __future__ import annotations

import pytest

from dbt_claude_batch.base.errors import ConfigError, DbtClaudeBatchError, TemplateError
from dbt_claude_batch.base.prompts import Prompt, request_params
from dbt_claude_batch.base.settings import Settings


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


# An API key pasted into config, in any setting at any depth: refused, never echoed.
SECRET = "sk-ant-api03-PASTED-IN-CONFIG-9f8e7d6c5b4a"


@pytest.mark.parametrize("where, setting", [
    ({"params": {"metadata": {"user_id": SECRET}}}, "params"),
    ({"params": {"tools": [{"name": "t", "description": "x", "input_schema": {"enum": ["a", SECRET]}}]}}, "params"),
    ({"system": f"Use the key {SECRET} to answer."}, "system"),
    ({"few_shot": [{"user": "u", "assistant": SECRET}]}, "few_shot"),
    ({"prices": {"claude-haiku-4-5": {"input": 1, "output": 5, "note": SECRET}}}, "prices"),
    ({"prices": {SECRET: {"input": 1, "output": 5}}}, "prices"),
    ({"output_schema": {"type": "object", "description": SECRET}}, "output_schema"),
    ({"stop_sequences": ["END", SECRET]}, "stop_sequences"),
    ({"max_tokens": SECRET}, "max_tokens"),  # would otherwise be echoed by "must be a positive integer; got ..."
    ({"model": SECRET}, "model"),
    ({"anthropic_api_key": SECRET}, "anthropic_api_key"),  # an unknown setting holding a key: the key wins
])
def test_a_key_in_any_setting_is_refused_without_echoing_it(where, setting):
    with pytest.raises(ConfigError) as info:
        settings(**where)
    message = str(info.value)
    first = message.splitlines()[0]
    assert first.startswith(f"Setting `{setting}` holds what looks like an Anthropic API key")
    assert "ANTHROPIC_API_KEY environment variable" in first
    assert SECRET not in message and SECRET[len("sk-ant-"):] not in message
    assert "PASTED" not in message and "api03" not in message


def test_a_key_in_the_yaml_config_is_refused_before_the_unknown_setting_check():
    with pytest.raises(ConfigError, match=r"^Setting `params` holds what looks like an Anthropic API key") as info:
        Settings.build({"key": "id", "params": {"x-api-key": SECRET}, "wait_second": 3}, {})
    assert SECRET not in str(info.value)


# Messages API body fields: unknown names are refused before any spend, with the closest valid name.
def test_unknown_params_are_refused_with_a_suggestion():
    with pytest.raises(ConfigError) as info:
        settings(params={"metdata": {"user_id": "u"}})
    first = str(info.value).splitlines()[0]
    assert first.startswith("Parameter `metdata` in `params` is not a Messages API parameter: did you mean `metadata`?")
    assert "Valid params: " in str(info.value) and "tool_choice" in str(info.value)


def test_unknown_params_without_a_close_name_list_the_valid_ones():
    with pytest.raises(ConfigError) as info:
        settings(params={"frobnicate": 1})
    first = str(info.value).splitlines()[0]
    assert first.startswith("Parameter `frobnicate` in `params` is not a Messages API parameter")
    assert "did you mean" not in first and "metadata" in first


def test_every_messages_api_field_the_sdk_knows_is_allowed_in_params_or_set_by_the_product():
    import typing

    from anthropic.types.message_create_params import MessageCreateParamsNonStreaming

    from dbt_claude_batch.base.config_refusals import MESSAGES_API_PARAMS, RESERVED_PARAMS

    sdk = set(typing.get_type_hints(MessageCreateParamsNonStreaming))
    assert set(MESSAGES_API_PARAMS) == sdk - set(RESERVED_PARAMS)
    for name in MESSAGES_API_PARAMS:
        settings(params={name: None} if name != "output_config" else {name: {}})


# A misspelt setting: the right name is suggested.
@pytest.mark.parametrize("wrong, right", [("wait_second", "wait_seconds"),
                                          ("max_cost_usd_al_models", "max_cost_usd_all_models"),
                                          ("prompt_templat", "prompt_template")])
def test_a_misspelt_setting_suggests_the_right_name(wrong, right):
    with pytest.raises(ConfigError) as info:
        settings(**{wrong: 1})
    assert str(info.value).splitlines()[0].startswith(f"Unknown setting `{wrong}`: did you mean `{right}`?")


def test_several_unknown_settings_are_named_each_with_its_suggestion():
    with pytest.raises(ConfigError) as info:
        settings(wait_second=1, frobnicate=2, metadata={"user_id": "u"})
    first = str(info.value).splitlines()[0]
    assert first.startswith("Unknown settings `frobnicate`, `metadata` (a Messages API parameter: put it inside "
                            "`params`), `wait_second` (did you mean `wait_seconds`?)")



@pytest.mark.parametrize("name", ["prompt_caching", "dedupe", "keep_message", "delete_batches_after_harvest"])
def test_a_switch_given_as_a_string_is_refused(name):
    # `{{ env_var('DEDUPE') }}` renders to the string 'false', which Python would read as true.
    with pytest.raises(ConfigError) as info:
        settings(**{name: "false"})
    assert str(info.value).splitlines()[0] == (f"Setting `{name}` must be true or false; got 'false' (a string: "
                                               "write it unquoted, or `{{ env_var(...) | as_bool }}`).")
