"""A local emulator of Anthropic's Message Batches API (plus /v1/messages, count_tokens, models).

Standard library only, and independent of the rest of dbt_claude_batch: the product never
imports it and it imports nothing from the product. Start it with
`dbt-claude-batch emulator --port 0 --state-dir DIR`; see `serve`.
"""

from __future__ import annotations

import signal
import sys
import threading

__all__ = ["serve"]


def serve(*, port: int, state_dir: str, processing_delay: float | None = None,
          time_factor: float | None = None, scenarios: list | None = None, seed: int | None = None,
          max_batch_bytes: int | None = None) -> int:
    """Run until SIGTERM/SIGINT; print the base URL as the first stdout line once bound."""
    from .server import make_server
    from .state import EmulatorState

    state = EmulatorState(state_dir, processing_delay=processing_delay, time_factor=time_factor,
                          scenarios=scenarios, seed=seed, max_batch_bytes=max_batch_bytes)
    server = make_server(state, port)

    def stop(signum, frame) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(state.base_url, flush=True)
    print(f"emulator: serving {state.base_url}, state in {state_dir}", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        with state.lock:
            state.save()
        print("emulator: stopped, state saved", file=sys.stderr, flush=True)
    return 0
