"""The `dbt_claude_batch` logger: dbt's own events, so lines reach the console and logs/dbt.log.

Every line names the model it is about (`dbt_claude_batch main.ticket_triage: ...`), which matters
with `--threads 4`: the model is bound per thread by `for_model` at the start of a run. dbt's
`AdapterLogger` is not used because it prefixes every line with "adapter:".
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

from dbt_common.events.base_types import EventLevel
from dbt_common.events.functions import fire_event
from dbt_common.events.types import Note

NAME = "dbt_claude_batch"
_bound = threading.local()


@contextmanager
def for_model(model_id: str) -> Iterator[None]:
    """Name `model_id` in every line logged by this thread until the block ends."""
    previous = getattr(_bound, "model_id", None)
    _bound.model_id = model_id
    try:
        yield
    finally:
        _bound.model_id = previous


def _line(message: str) -> str:
    model_id = getattr(_bound, "model_id", None)
    return f"{NAME} {model_id}: {message}" if model_id else f"{NAME}: {message}"


class _Logger:
    def debug(self, message: str) -> None:
        fire_event(Note(msg=_line(message)), level=EventLevel.DEBUG)

    def info(self, message: str) -> None:
        fire_event(Note(msg=_line(message)), level=EventLevel.INFO)

    def warning(self, message: str) -> None:
        fire_event(Note(msg=_line(message)), level=EventLevel.WARN)


logger = _Logger()
