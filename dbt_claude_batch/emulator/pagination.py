"""Cursor pagination as the API's list endpoints do it (message batches, models).

Items come in the endpoint's order. `after_id` selects the `limit` items right after that id,
`before_id` the `limit` items right before it; `has_more` says whether more items lie beyond the
page in the direction of travel. The page envelope is `data`, `has_more`, `first_id`, `last_id`.
"""

from __future__ import annotations

from .validation import ParamsError

DEFAULT_LIMIT = 20
MAX_LIMIT = 1000


def page_args(query: dict[str, list[str]]) -> tuple[int, str | None, str | None]:
    """(limit, after_id, before_id) from a parsed query string (parse_qs), or ParamsError."""
    last = {k: v[-1] for k, v in query.items()}
    try:
        limit = int(last.get("limit", DEFAULT_LIMIT))
    except ValueError:
        raise ParamsError("limit: Input should be a valid integer")
    if not 1 <= limit <= MAX_LIMIT:
        raise ParamsError(f"limit: Input should be between 1 and {MAX_LIMIT}")
    after_id, before_id = last.get("after_id") or None, last.get("before_id") or None
    if after_id and before_id:
        raise ParamsError("after_id and before_id cannot both be given")
    return limit, after_id, before_id


def select(ids: list[str], limit: int, after_id: str | None, before_id: str | None,
           kind: str) -> tuple[slice, bool]:
    """The slice of `ids` on the requested page and has_more; an unknown cursor is a 400."""
    for cursor in (after_id, before_id):
        if cursor is not None and cursor not in ids:
            raise ParamsError(f"Invalid cursor: no {kind} with id '{cursor}'")
    if before_id is not None:
        end = ids.index(before_id)
        start = max(0, end - limit)
        return slice(start, end), start > 0
    start = ids.index(after_id) + 1 if after_id is not None else 0
    return slice(start, start + limit), start + limit < len(ids)


def envelope(data: list[dict], has_more: bool) -> dict:
    """The list response body for one page of objects."""
    return {"data": data, "has_more": has_more,
            "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}
