"""The dbt vars a batch model reads (pure)."""

from __future__ import annotations

import pytest

from dbt_claude_batch.base.errors import ConfigError
from dbt_claude_batch.base.run_vars import RunVars


def test_known_vars_are_read():
    found = RunVars.parse({"claude_batch_cancel": True, "claude_batch_sample": 5, "claude_batch_state_schema": "s",
                           "other_var": 1}, "m")
    assert (found.cancel, found.sample_size) == (True, 5)


@pytest.mark.parametrize("wrong, right", [("claude_batch_cancle", "claude_batch_cancel"),
                                          ("claude_batch_rerun_key", "claude_batch_rerun_keys"),
                                          ("claude_batch_resubmit_cancelled", "claude_batch_resubmit_canceled")])
def test_a_misspelt_var_fails_with_a_suggestion(wrong, right):
    with pytest.raises(ConfigError) as info:
        RunVars.parse({wrong: True}, "m")
    assert str(info.value).splitlines()[0].startswith(f"Unknown var `{wrong}`: did you mean `{right}`?")


def test_an_unknown_var_without_a_close_name_lists_the_known_ones():
    with pytest.raises(ConfigError) as info:
        RunVars.parse({"claude_batch_qqqqqqqqqqqqqqqqqq": 1}, "m")
    first = str(info.value).splitlines()[0]
    assert first.startswith("Unknown var `claude_batch_qqqqqqqqqqqqqqqqqq`") and "claude_batch_sample" in first


def test_a_project_named_like_a_var_is_a_scope_not_an_unknown_var():
    from dbt_claude_batch.base.run_vars import project_vars

    project = {"name": "claude_batch_demo",
               "vars": {"claude_batch_demo": {"claude_batch_sample": 3}, "claude_batch_cancel": "m", "other": 1}}
    found = project_vars(project)
    assert found == {"claude_batch_cancel": "m", "claude_batch_sample": 3}
    assert RunVars.parse(found, "m").sample_size == 3


def test_the_stop_line_says_what_the_next_run_does_and_what_it_needs():
    from dbt_claude_batch.run.python_model import stop_line

    rest = stop_line(2, 28, allowed_rebuy=False)
    assert rest.startswith("stopped by Ctrl-C: this run submitted 2 request(s) before the stop and 28 were not submitted")
    assert "submits the rest" in rest and "claude_batch_allow_rebuy" not in rest
    # nothing left to submit: it does not promise to submit a rest (found by a user test)
    assert "submits the rest" not in stop_line(3, 0, allowed_rebuy=True)
    # a re-buy let through by the var: the rest needs the var again, or the guard stops the next run
    assert "pass it to the next run too" in stop_line(18, 1002, allowed_rebuy=True)
