"""Ctrl-C while a batch model runs: stop spending between creates and between polls, keep what is held.

dbt handles Ctrl-C (SIGINT) on its main thread: it cancels every open connection, then waits for the
model's thread to finish. dbt-duckdb cancels a Python model's connection by calling `interrupt()` on the
very cursor object the model was given as `session`; a model busy with HTTP calls never notices. So the
run puts its own `interrupt` on that object for as long as it works: dbt's call sets this run's stop
flag (then interrupts as before), and, being made on the main thread, installs handlers so that a
second SIGINT or SIGTERM ends the process at once, without a traceback (state is written as facts
happen, so that is as safe as kill -9). The run checks the flag before each create and while it waits
between polls; a create already sent finishes and is recorded.

dbt installs no SIGTERM handler: a first SIGTERM ends dbt at once (the next run settles a create cut
in the middle by proof). `dbt-claude-batch dbt ARGS...` (observe/cli.py) runs dbt with SIGTERM
treated as Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from typing import Iterator


class StopFlag:
    """Set when dbt was asked to stop; the run reads it between creates and polls."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def request(self) -> None:
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def sleep(self, seconds: float) -> bool:
        """Wait up to `seconds`, waking at once on a stop; True when a stop was requested."""
        return self._event.wait(max(0.0, seconds))


@contextmanager
def stop_on_cancel(session) -> Iterator[StopFlag]:
    """A `StopFlag` that dbt's cancellation of `session` (Ctrl-C) sets while the block runs."""
    flag = StopFlag()
    original = getattr(session, "interrupt", None)

    def interrupt(*args, **kwargs):
        flag.request()
        _exit_on_next_signal()
        if original is not None:
            return original(*args, **kwargs)
        return None

    try:
        session.interrupt = interrupt
    except AttributeError:  # not dbt's cursor wrapper (a bare DuckDB connection): nothing cancels it
        yield flag
        return
    try:
        yield flag
    finally:
        del session.interrupt


def _exit_on_next_signal() -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # handlers can only be installed on the main thread, where dbt cancels from
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _exit_now)


def _exit_now(signum, frame) -> None:  # noqa: ARG001 - a signal handler's signature
    name = signal.Signals(signum).name
    os.write(2, (f"\ndbt_claude_batch: {name} again: exiting now. Nothing is lost or bought twice: "
                 "the next dbt run continues from the state.\n").encode())
    os._exit(128 + signum)
