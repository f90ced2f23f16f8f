"""The emulator's clock: real time scaled by a factor, plus an adjustable offset.

emulated_now = base_emulated + (real_now - base_real) * time_factor

`advance(seconds)` moves base_emulated forward; changing the factor re-bases at the
current emulated instant, so time never jumps when the factor changes. Every batch
timestamp comes from this clock, so tests can jump 25 hours or 30 days without sleeping.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone


class Clock:
    def __init__(self, time_factor: float = 1.0, start: float | None = None) -> None:
        self._lock = threading.Lock()
        self._factor = float(time_factor)
        self._base_real = time.time()
        self._base_emulated = self._base_real if start is None else float(start)

    @property
    def time_factor(self) -> float:
        return self._factor

    def now(self) -> float:
        with self._lock:
            return self._base_emulated + (time.time() - self._base_real) * self._factor

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._base_emulated += float(seconds)
        return self.now()

    def set_factor(self, factor: float) -> None:
        if factor <= 0:
            raise ValueError("time_factor must be > 0")
        with self._lock:
            real = time.time()
            self._base_emulated += (real - self._base_real) * self._factor
            self._base_real = real
            self._factor = float(factor)

    def snapshot(self) -> dict:
        return {"emulated_now": self.now(), "real_now": time.time(), "time_factor": self._factor}


def rfc3339(ts: float | None) -> str | None:
    """Format like the real API: microseconds and a trailing Z."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
