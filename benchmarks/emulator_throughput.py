"""Throughput of the local API emulator with one batch of 100,000 requests.

Starts the emulator (subprocess, fresh state dir), creates one batch of N requests through the
anthropic SDK, lets it end (processing delay 0: the first retrieve after the first access processes it), downloads the
results as raw bytes, and prints requests/second for each step.

    .venv/bin/python benchmarks/emulator_throughput.py [N]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from emulator_harness import EmulatorProcess  # noqa: E402


def main(n: int = 100_000) -> int:
    reqs = [{"custom_id": f"row-{i}",
             "params": {"model": "claude-haiku-4-5", "max_tokens": 64,
                        "system": "Labels: billing, bug, account, other",
                        "messages": [{"role": "user", "content": f"Ticket {i}: the invoice for order {i * 7} "
                                                                 "was charged twice, please help"}]}}
            for i in range(n)]
    with tempfile.TemporaryDirectory() as state_dir:
        with EmulatorProcess(state_dir) as emu:
            client = emu.client(max_retries=0, timeout=600)
            t0 = time.perf_counter()
            batch = client.messages.batches.create(requests=reqs)
            t_create = time.perf_counter() - t0
            # A fresh batch is in progress on its first access, as the real API's; the next one processes it.
            assert client.messages.batches.retrieve(batch.id).processing_status == "in_progress"
            t0 = time.perf_counter()
            batch = client.messages.batches.retrieve(batch.id)
            t_process = time.perf_counter() - t0
            assert batch.processing_status == "ended" and batch.request_counts.succeeded == n
            t0 = time.perf_counter()
            size = lines = 0
            with client.messages.batches.with_streaming_response.results(batch.id) as response:
                for chunk in response.iter_bytes(1 << 20):
                    size += len(chunk)
                    lines += chunk.count(b"\n")
            t_download = time.perf_counter() - t0
            assert lines == n
    print(f"emulator throughput, one batch of {n} requests:")
    print(f"  create (SDK, body encode + upload + persist): {t_create:6.2f} s  {n / t_create:10,.0f} req/s")
    print(f"  processing (first retrieve after the end):    {t_process:6.2f} s  {n / t_process:10,.0f} req/s")
    print(f"  results download (raw bytes, {size / 1e6:.1f} MB):      {t_download:6.2f} s  "
          f"{n / t_download:10,.0f} req/s")
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000))
