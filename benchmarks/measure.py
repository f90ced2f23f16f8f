"""How the benchmarks measure one process: wall time, peak RSS and DuckDB's spill to disk.

Peak RSS is the kernel's ru_maxrss of exactly that process, read with os.wait4() on its pid (not
RUSAGE_CHILDREN, a maximum over every child this script ever waited for). dbt runs Python models in
its own process, so this covers dbt, DuckDB and the product together.

Spill is the largest total size of the files in DuckDB's temp directory (`<database>.tmp`, its
default beside the database file) seen while the process runs, sampled every 50 ms from a thread of
this script. DuckDB removes what it spilled as statements end, so only sampling during the run sees
it; a spike shorter than 50 ms can be missed, which understates, never overstates.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

SAMPLE_SECONDS = 0.05


def spill_bytes(directory: Path) -> int:
    """Total size of the files under `directory` now (0 if it does not exist)."""
    total = 0
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    for entry in entries:
        try:
            total += entry.stat(follow_symlinks=False).st_size if entry.is_file(follow_symlinks=False) else 0
        except OSError:  # removed between the listing and the stat
            pass
    return total


class SpillSampler:
    """Samples `spill_bytes(directory)` on a thread until stopped; `peak` is the largest seen."""

    def __init__(self, directory: Path | None):
        self.directory, self.peak = directory, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True) if directory else None

    def _loop(self) -> None:
        while True:
            self.peak = max(self.peak, spill_bytes(self.directory))
            if self._stop.wait(SAMPLE_SECONDS):
                self.peak = max(self.peak, spill_bytes(self.directory))
                return

    def __enter__(self) -> SpillSampler:
        if self._thread:
            self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self._thread:
            self._stop.set()
            self._thread.join()


def run_measured(cmd: list[str], cwd: Path, env: dict, log_path: Path, database: Path | None = None) -> dict:
    """Run cmd to completion: wall seconds, peak RSS (MiB) of exactly that process, exit code, output,
    and (given the DuckDB `database` it works on) the peak spill to `<database>.tmp` in MiB."""
    with open(log_path, "w") as log, SpillSampler(Path(f"{database}.tmp") if database else None) as spill:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; keep Popen consistent
    out = log_path.read_text(errors="replace")
    return {"wall": wall, "rss_mib": usage.ru_maxrss / 1024, "rc": proc.returncode, "out": out,
            "spill_mib": spill.peak / 2**20}
