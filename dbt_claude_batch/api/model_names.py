"""Claude model names, checked against the Models API before anything is sent.

A misspelt or retired model name is not refused when a batch is created: every request comes back
errored a day later. The names a run is about to use are checked against `GET /v1/models` (listed
once per dbt process and base URL), so such a run stops before any spend. Names the API does not
list yet can be allowed with the setting `extra_models`.
"""

from __future__ import annotations

import os
import threading
from typing import Iterable

from dbt_claude_batch.base.errors import ConfigError
from dbt_claude_batch.base.log import logger
from dbt_claude_batch.base.pricing import model_family

_cache: dict[str, frozenset[str]] = {}
_lock = threading.Lock()


def listed_models(client) -> frozenset[str] | None:
    """Every model id the API lists for this key; None when the API offers no list (then nothing is checked)."""
    import anthropic

    base = os.environ.get("ANTHROPIC_BASE_URL") or ""
    with _lock:
        if base not in _cache:
            try:
                _cache[base] = frozenset(m.id for m in client.models.list(limit=1000))
            except (anthropic.NotFoundError, anthropic.PermissionDeniedError) as exc:
                logger.warning(f"the Models API is not available here (HTTP {exc.status_code}); "
                               "model names are not checked before submitting")
                return None
        return _cache[base]


def check_model_names(client, names: Iterable[str], extra: Iterable[str], setting: str) -> None:
    """Raise ConfigError naming the first model the API does not list (unless allowed in `extra_models`)."""
    wanted = {n for n in names if n} - set(extra)
    if not wanted:
        return
    known = listed_models(client)
    if known is None:
        return
    unknown = sorted(n for n in wanted if n not in known and not _dated_alias_of(n, known))
    if unknown:
        raise ConfigError(
            f"Model {unknown[0]!r} (from {setting}) is not a model the API lists for this key: fix the name, or add "
            "it to the setting `extra_models` if it is too new to be listed; nothing was submitted.\n"
            f"Models listed: {', '.join(sorted(known))}"
        )


def _dated_alias_of(name: str, known: frozenset[str]) -> bool:
    """`claude-haiku-4-5` is an alias of a listed `claude-haiku-4-5-20251001`, and the other way round."""
    family = model_family(name)
    return any(model_family(k) == family for k in known)
