"""Prompt caching on the emulated clock.

A block (system block or message content block) carrying `cache_control`
({"type": "ephemeral", "ttl": "5m" | "1h"}, default 5m) marks the prefix up to and including it
as cacheable. Entries are keyed by (model, sha256 of the prefix blocks without their
cache_control). For a request, the longest live breakpoint prefix is read
(`cache_read_input_tokens`); if the last breakpoint is not live, the tokens between the read
prefix and the last breakpoint are written (`cache_creation_input_tokens`, split by TTL in
`usage.cache_creation`). A hit refreshes the entry's TTL. `input_tokens` counts the rest.
The emulator has no minimum cacheable length (the real API needs 1024+ tokens).
"""

from __future__ import annotations

import hashlib
import threading

from . import pricing, tokens

TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}


class PromptCache:
    def __init__(self, entries: dict[str, float] | None = None) -> None:
        self._lock = threading.Lock()
        self.entries: dict[str, float] = dict(entries or {})  # key -> expires at (emulated)
        self.dirty = False

    def _breakpoints(self, params: dict) -> list[tuple[str, str, int]]:
        """(key, ttl, prefix tokens) for each cache_control block, in prompt order."""
        segments = tokens.prompt_segments(params)
        if not any(isinstance(block.get("cache_control"), dict) for _, block in segments):
            return []
        model = pricing.base_model(params.get("model")) or str(params.get("model"))
        digest = hashlib.sha256(model.encode("utf-8"))
        prefix_tokens = 0
        found = []
        for n, block in segments:
            prefix_tokens += n
            stripped = {k: v for k, v in block.items() if k != "cache_control"}
            digest.update(tokens.canonical_json(stripped).encode("utf-8"))
            digest.update(b"\x1e")
            control = block.get("cache_control")
            if isinstance(control, dict):
                ttl = control.get("ttl") if control.get("ttl") in TTL_SECONDS else "5m"
                found.append((digest.copy().hexdigest(), ttl, prefix_tokens))
        return found

    def usage(self, params: dict, now: float, batch: bool) -> dict:
        """The usage block for `params` at emulated time `now` (output_tokens filled later)."""
        total = tokens.input_tokens(params)
        read = write_5m = write_1h = 0
        breakpoints = self._breakpoints(params)
        with self._lock:
            live = [bp for bp in breakpoints if self.entries.get(bp[0], -1.0) > now]
            if live:
                read = max(bp[2] for bp in live)
            if breakpoints:
                key, ttl, prefix = breakpoints[-1]
                if prefix > read:
                    if ttl == "1h":
                        write_1h = prefix - read
                    else:
                        write_5m = prefix - read
                for bp_key, bp_ttl, bp_prefix in breakpoints:
                    if bp_prefix <= max(read, prefix):
                        self.entries[bp_key] = max(self.entries.get(bp_key, 0.0), now + TTL_SECONDS[bp_ttl])
                self.dirty = True
        usage = {
            "input_tokens": total - read - write_5m - write_1h,
            "output_tokens": 0,
            "cache_creation_input_tokens": write_5m + write_1h,
            "cache_read_input_tokens": read,
            "cache_creation": {"ephemeral_5m_input_tokens": write_5m, "ephemeral_1h_input_tokens": write_1h},
            "server_tool_use": None,
            "service_tier": "batch" if batch else "standard",
            "inference_geo": None,
        }
        return usage

    def prune(self, now: float) -> None:
        with self._lock:
            for key in [k for k, exp in self.entries.items() if exp <= now]:
                del self.entries[key]
                self.dirty = True
