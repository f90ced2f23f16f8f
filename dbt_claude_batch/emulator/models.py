"""The Models API: every model the emulator prices, as ModelInfo objects.

IDs are the base names of pricing.BASE_PRICES, most recently released first, as the API lists
them. `GET /v1/models/{id}` also answers for a dated name `<base>-YYYYMMDD` (with that id),
because a Messages request naming it is accepted; any other id is 404 `not_found_error`, the
same name a batch request gets back as an errored result.
`created_at` is the date in the model's snapshot id where one is known (claude-opus-4-6: the API
description's example), else the epoch, which the API documents for an unknown release date.
`capabilities` say what the emulator does with a request, the same for every model: batches and
json_schema output yes; image and PDF blocks read (media.py: limits, tokens, answer labels); thinking,
effort, citations, server tools and context management no. Every model is `active`.
"""

from __future__ import annotations

from . import pagination, pricing
from .validation import ParamsError

EPOCH = "1970-01-01T00:00:00Z"
RELEASED = {
    "claude-opus-4-1": "2025-08-05T00:00:00Z",
    "claude-sonnet-4-5": "2025-09-29T00:00:00Z",
    "claude-haiku-4-5": "2025-10-01T00:00:00Z",
    "claude-opus-4-5": "2025-11-01T00:00:00Z",
    "claude-opus-4-6": "2026-02-04T00:00:00Z",
}
LINES = ("haiku", "sonnet", "opus")
LIFECYCLES = ("active", "deprecated", "retired")
DEFAULT_LIFECYCLES = ("active", "deprecated")


def _yes(supported: bool) -> dict:
    return {"supported": supported}


CAPABILITIES = {
    "batch": _yes(True),
    "citations": _yes(False),
    "code_execution": _yes(False),
    "context_management": {"supported": False, "clear_thinking_20251015": _yes(False),
                           "clear_tool_uses_20250919": _yes(False), "compact_20260112": _yes(False)},
    "effort": {"supported": False, "low": _yes(False), "medium": _yes(False), "high": _yes(False),
               "xhigh": _yes(False), "max": _yes(False)},
    "image_input": _yes(True),
    "pdf_input": _yes(True),
    "server_tools": {"supported": False, "code_execution": _yes(False), "web_search": _yes(False)},
    "structured_outputs": _yes(True),
    "thinking": {"supported": False, "types": {"adaptive": _yes(False), "between_tools": _yes(False),
                                               "disabled": _yes(True), "enabled": _yes(False)}},
}


def display_name(base: str) -> str:
    """`claude-haiku-4-5` -> `Claude Haiku 4.5`."""
    words, version = [], []
    for part in base.split("-"):
        (version if part.isdigit() else words).append(part)
    return " ".join([w.capitalize() for w in words] + ([".".join(version)] if version else []))


def info(base: str, model_id: str | None = None) -> dict:
    """The ModelInfo object of a known base model, under `model_id` (default: the base name)."""
    line = base.split("-")[1] if base.count("-") >= 1 else None
    return {
        "type": "model",
        "id": model_id or base,
        "display_name": display_name(base),
        "created_at": RELEASED.get(base, EPOCH),
        "lifecycle": "active",
        "deprecated_at": None,
        "retires_at": None,
        "line": line if line in LINES else None,
        "max_input_tokens": pricing.CONTEXT_LIMIT,
        "max_tokens": None,  # the emulator sets no ceiling on max_tokens
        "capabilities": CAPABILITIES,
    }


def catalogue() -> list[dict]:
    """Every known model, most recently released first (ties by id, descending)."""
    return sorted((info(base) for base in pricing.BASE_PRICES),
                  key=lambda m: (m["created_at"], m["id"]), reverse=True)


def get(model_id: str) -> dict:
    """GET /v1/models/{model_id}: the ModelInfo, or ParamsError 404 not_found_error."""
    base = pricing.base_model(model_id)
    if base is None:
        raise ParamsError(f"model: {model_id}", kind="not_found_error", status=404)
    return info(base, model_id)


def listing(query: dict[str, list[str]]) -> dict:
    """GET /v1/models: one page, filtered by `lifecycle` (default active and deprecated)."""
    limit, after_id, before_id = pagination.page_args(query)
    wanted = query.get("lifecycle[]", []) + query.get("lifecycle", [])
    for value in wanted:
        if value not in LIFECYCLES:
            raise ParamsError(f"lifecycle: Input should be 'active', 'deprecated' or 'retired', not '{value}'")
    if len(wanted) > len(LIFECYCLES):
        raise ParamsError(f"lifecycle: List should have at most {len(LIFECYCLES)} items")
    models = [m for m in catalogue() if m["lifecycle"] in (wanted or DEFAULT_LIFECYCLES)]
    window, has_more = pagination.select([m["id"] for m in models], limit, after_id, before_id, "model")
    return pagination.envelope(models[window], has_more)
