"""Everything one emulator instance holds, loaded from and saved to its state directory."""

from __future__ import annotations

import threading
import time

from .clock import Clock
from .files import Files
from .ledger import Ledger
from .prompt_cache import PromptCache
from .scenarios import Scenarios
from .store import Store
from .validation import MAX_BATCH_BYTES


class EmulatorState:
    def __init__(self, state_dir: str, *, processing_delay: float | None = None,
                 time_factor: float | None = None, scenarios: list | None = None,
                 seed: int | None = None, max_batch_bytes: int | None = None) -> None:
        self.lock = threading.RLock()
        self.store = Store(state_dir)
        saved = self.store.load_global()
        config = saved.get("config", {})
        self.processing_delay = float(processing_delay if processing_delay is not None
                                      else config.get("processing_delay", 0.0))
        factor = float(time_factor if time_factor is not None else config.get("time_factor", 1.0))
        self.seed = seed if seed is not None else config.get("seed", 0)
        self.max_batch_bytes = int(max_batch_bytes if max_batch_bytes is not None
                                   else config.get("max_batch_bytes", MAX_BATCH_BYTES))
        clock = saved.get("clock")
        start = None
        if clock:
            # Continue from where the previous run left off, never going back in time.
            start = max(time.time() + clock["offset"], clock["emulated"])
        self.clock = Clock(factor, start)
        self.scenarios = Scenarios(scenarios if scenarios is not None else saved.get("scenarios", []))
        self.cache = PromptCache(saved.get("cache"))
        self.ledger = Ledger(saved.get("ledger"))
        self.base_url = ""
        self.records: dict[str, dict] = {r["id"]: r for r in self.store.load_batches()}
        self.next_seq = max((r["seq"] for r in self.records.values()), default=0) + 1
        self.requests_cache: dict[str, list] = {}
        self.files = Files(state_dir)
        # Answers of slow_create creates waiting to be sent; POST /_emulator/release sends them now.
        self.held: set[threading.Event] = set()
        self.save()

    def configure(self, processing_delay: float | None = None, time_factor: float | None = None) -> None:
        with self.lock:
            if processing_delay is not None:
                if processing_delay < 0:
                    raise ValueError("processing_delay must be >= 0")
                self.processing_delay = float(processing_delay)
            if time_factor is not None:
                self.clock.set_factor(float(time_factor))
            self.save()

    def config(self) -> dict:
        return {"processing_delay": self.processing_delay, "time_factor": self.clock.time_factor,
                "seed": self.seed, "max_batch_bytes": self.max_batch_bytes}

    def save(self) -> None:
        with self.lock:
            now = self.clock.now()
            self.cache.prune(now)
            self.store.save_global({
                "clock": {"offset": now - time.time(), "emulated": now},
                "config": self.config(),
                "scenarios": self.scenarios.listing(),
                "cache": dict(self.cache.entries),
                "ledger": self.ledger.snapshot(),
            })
            self.scenarios.dirty = self.cache.dirty = self.ledger.dirty = False

    def save_if_dirty(self) -> None:
        if self.scenarios.dirty or self.cache.dirty or self.ledger.dirty:
            self.save()
