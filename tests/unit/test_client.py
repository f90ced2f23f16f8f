"""The SDK is imported only by a run that calls the API, and a warm-up import ends before the run does.

Each case runs in a fresh interpreter: this test process has imported the SDK already.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from dbt_claude_batch.api import client
from dbt_claude_batch.base.errors import MissingApiKeyError


def _fresh(code: str) -> list[str]:
    env = {"ANTHROPIC_API_KEY": "test-key", "PATH": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


PRELUDE = "import sys, threading\nfrom dbt_claude_batch.api.client import LazyClient\napi = LazyClient()\n"


def test_a_client_never_asked_for_never_imports_the_sdk():
    assert _fresh(PRELUDE + "api.close()\nprint('anthropic' in sys.modules)") == ["False"]


def test_a_warm_up_imports_the_sdk_on_another_thread_and_close_waits_for_it():
    code = PRELUDE + (
        "api.warm()\n"
        "names = [t.name for t in threading.enumerate()]\n"
        "api.close()\n"
        "print('dbt_claude_batch-sdk-import' in names, 'anthropic' in sys.modules,\n"
        "      any(t.name == 'dbt_claude_batch-sdk-import' for t in threading.enumerate()))\n"
    )
    assert _fresh(code) == ["True", "True", "False"]


def test_leaving_the_client_by_an_error_still_waits_for_its_warm_up():
    code = PRELUDE + (
        "try:\n"
        "    with LazyClient() as api:\n"
        "        api.warm()\n"
        "        raise ValueError('duplicate keys')\n"
        "except ValueError:\n"
        "    pass\n"
        "print(any(t.name == 'dbt_claude_batch-sdk-import' for t in threading.enumerate()), 'anthropic' in sys.modules)\n"
    )
    assert _fresh(code) == ["False", "True"]


def test_get_after_a_warm_up_builds_one_client_and_a_second_warm_up_starts_nothing():
    code = PRELUDE + (
        "api.warm()\n"
        "first = api._warming\n"
        "client = api.get()\n"
        "api.warm()\n"
        "print(type(client).__name__, api.get() is client, api._warming is first)\n"
        "api.close()\n"
    )
    assert _fresh(code) == ["Anthropic", "True", "True"]


@pytest.mark.parametrize("code", ["api.warm()\napi.close()\n", ""])
def test_an_sdk_that_cannot_be_imported_fails_in_get_not_on_the_warm_up_thread(code):
    blocked = ("import builtins\nreal = builtins.__import__\n"
               "def no_sdk(name, *a, **k):\n"
               "    if name == 'anthropic': raise ImportError('no anthropic here')\n"
               "    return real(name, *a, **k)\n"
               "builtins.__import__ = no_sdk\n")
    out = _fresh(PRELUDE + blocked + code + (
        "try:\n    api.get()\nexcept ImportError as exc:\n    print('raised:', exc)\n"))
    assert out == ["raised:", "no", "anthropic", "here"]


def test_an_error_is_checked_against_an_sdk_class_without_touching_a_half_imported_sdk():
    """While the warm-up thread is importing the SDK, `sys.modules` holds it half initialised: asking
    whether an error of the run is the SDK's must answer no, not raise and hide the run's own error."""
    code = PRELUDE + (
        "import types\n"
        "from dbt_claude_batch.api.client import is_sdk_error\n"
        "sys.modules['anthropic'] = types.ModuleType('anthropic')  # as while another thread imports it\n"
        "print(is_sdk_error(ValueError('budget'), 'APIConnectionError'))\n"
        "del sys.modules['anthropic']\n"
        "import anthropic, httpx2\n"
        "exc = anthropic.APIConnectionError(request=httpx2.Request('GET', 'http://127.0.0.1'))\n"
        "print(is_sdk_error(exc, 'APIConnectionError'), is_sdk_error(ValueError(), 'APIConnectionError'))\n"
    )
    assert _fresh(code) == ["False", "True", "False"]


@pytest.mark.parametrize("key", ["sk-ant-abc\n", "sk-ant-abc\r", "sk-ant-abc ", " sk-ant-abc", "sk-ant-\tabc"])
def test_a_key_with_whitespace_or_a_control_character_is_refused_without_showing_it(monkeypatch, key):
    # A secret made from a file keeps its trailing newline: httpx refuses the header, and its message
    # quotes the key, which then reached dbt.log, run_results.json and the runs table.
    monkeypatch.setenv("ANTHROPIC_API_KEY", key)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    with pytest.raises(MissingApiKeyError) as info:
        client.require_api_key()
    message = str(info.value)
    assert message.startswith("ANTHROPIC_API_KEY has whitespace or a control character in it: remove it where "
                              "the secret is made")
    assert "abc" not in message


def test_the_key_is_masked_in_any_text_that_quotes_it(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret123")
    assert client.redact("Illegal header value b'Bearer sk-ant-secret123'") == "Illegal header value b'Bearer ***'"
    assert client.redact("nothing here") == "nothing here"
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    assert client.redact("x") == "x"
