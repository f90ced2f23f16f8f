"""What the `claude_batch` config is refused for before any setting is read: an API key anywhere in it,
names that are not settings (with the closest one), and `params` that are not Messages API parameters.
"""

from __future__ import annotations

import difflib
from typing import Any, Mapping

from dbt_claude_batch.base.errors import ConfigError

# API version 2026-10-21 (SDK 2.14) rejects these in every request; catching them here saves a
# 24-hour round trip that would end with every row errored.
REJECTED_PARAMS = ("temperature", "top_p", "top_k")
# Set by dedicated settings, or by the product itself.
RESERVED_PARAMS = ("model", "max_tokens", "messages", "system", "stop_sequences", "stream")
# The other fields of a Messages API body (anthropic 2.14, `MessageCreateParamsNonStreaming`): written out
# rather than read from the SDK at run time, since importing its types costs a second on every run; a unit
# test holds this list to the installed SDK.
MESSAGES_API_PARAMS = ("cache_control", "container", "diagnostics", "inference_geo", "metadata", "output_config",
                       "service_tier", "speed", "thinking", "tool_choice", "tools", "user_profile_id",
                       "workspace_id")
# What an Anthropic API key looks like; such a value in config would be sent, spooled and kept by dbt.
_KEY_MARK = "sk-ant-"


def refuse_keys(merged: Mapping[str, Any]) -> None:
    """Refuse any setting that holds what looks like an API key, anywhere inside it; never quote the value."""
    for name, value in merged.items():
        where = _key_inside(value, name)
        if where is not None:
            at = f" at `{where}`" if where != name else ""
            raise ConfigError(
                f"Setting `{name}` holds what looks like an Anthropic API key ({_KEY_MARK}…{at}): never put a key in "
                "config; remove it and use the ANTHROPIC_API_KEY environment variable instead; nothing was "
                "submitted.\nA key in config would be sent in every request body and spooled, and dbt keeps its "
                "config in target/ (manifest.json, compiled code): rotate a key that was ever written there."
            )
    hidden = [name for name in merged if _KEY_MARK in str(name)]
    if hidden:
        raise ConfigError(f"A setting name holds what looks like an Anthropic API key ({_KEY_MARK}…): remove it and "
                          "use the ANTHROPIC_API_KEY environment variable instead; nothing was submitted.")


def _key_inside(value: Any, path: str) -> str | None:
    """The path of the first string (or mapping key) inside `value` that holds an API key, else None."""
    if isinstance(value, str):
        return path if _KEY_MARK in value else None
    if isinstance(value, Mapping):
        for k, v in value.items():
            if _KEY_MARK in str(k):
                return f"{path}.<a key name>"
            found = _key_inside(v, f"{path}.{k}")
            if found is not None:
                return found
    elif isinstance(value, (list, tuple, set)):
        for i, v in enumerate(value):
            found = _key_inside(v, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def _suggestion(name: str, valid: list[str] | tuple[str, ...]) -> str | None:
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    return close[0] if close else None


def unknown_settings(unknown: list[str], valid: list[str]) -> str:
    """One line naming each unknown setting with the closest valid name, then every valid name."""
    hints = {}
    for name in unknown:
        close = _suggestion(name, valid)
        if name in MESSAGES_API_PARAMS or name in REJECTED_PARAMS:
            hints[name] = "a Messages API parameter: put it inside `params`"
        elif close:
            hints[name] = f"did you mean `{close}`?"
    listing = f"\nValid settings: {', '.join(valid)}"
    if len(unknown) == 1:
        name = unknown[0]
        if name in hints and hints[name].startswith("did you mean"):
            return (f"Unknown setting `{name}`: {hints[name]} Fix the name in the model's claude_batch settings; "
                    f"nothing was submitted.{listing}")
        what = f" is {hints[name]}" if name in hints else ": remove it, or pass Messages API parameters inside `params`"
        return f"Unknown setting `{name}`{what}; nothing was submitted.{listing}"
    named = ", ".join(f"`{n}`" + (f" ({hints[n]})" if n in hints else "") for n in unknown)
    return (f"Unknown settings {named}: fix or remove them (Messages API parameters go inside `params`); "
            f"nothing was submitted.{listing}")


def unknown_param(name: str) -> str:
    close = _suggestion(name, MESSAGES_API_PARAMS)
    hint = f"did you mean `{close}`? Fix" if close else "remove it, or fix"
    return (f"Parameter `{name}` in `params` is not a Messages API parameter: {hint} the name; the API would refuse "
            f"every request; nothing was submitted. Valid params: {', '.join(MESSAGES_API_PARAMS)} (and the "
            f"settings {', '.join(p for p in RESERVED_PARAMS if p not in ('messages', 'stream'))}).")
