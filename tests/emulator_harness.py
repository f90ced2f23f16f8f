"""Start, drive and stop the local API emulator from tests (used by tests/conftest.py).

    emu = EmulatorProcess(state_dir)        # starts `python -m dbt_claude_batch.observe.cli emulator`
    emu.url, emu.pid, emu.state_dir
    emu.client(max_retries=0)               # a real anthropic.Anthropic pointed at the emulator
    emu.ledger(), emu.advance_clock(90000), emu.configure(processing_delay=3600)
    emu.set_scenarios([...]), emu.add_scenario({...}), emu.clear_scenarios()
    emu.restart(), emu.stop()

The base URL is read from the emulator's first stdout line; readiness is checked on
GET /_emulator/health. The emulator's stderr goes to <state_dir>/emulator.log.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class EmulatorProcess:
    def __init__(self, state_dir: str | os.PathLike, *extra_args: str) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.start()

    # process control -------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "dbt_claude_batch.observe.cli", "emulator", "--port", "0",
               "--state-dir", str(self.state_dir), *self.extra_args]
        self._log = open(self.state_dir / "emulator.log", "ab")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log,
                                     stdin=subprocess.DEVNULL)
        ready, _, _ = select.select([self.proc.stdout], [], [], STARTUP_TIMEOUT)
        line = self.proc.stdout.readline().decode().strip() if ready else ""  # printed once bound
        if not line.startswith("http://"):
            code = self.stop()
            raise RuntimeError(f"emulator did not start (exit {code}); "
                               f"see {self.state_dir / 'emulator.log'}")
        self.url = line
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            try:
                if self._request("GET", "/_emulator/health") == {"status": "ok"}:
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.05)  # polling readiness, not synchronising test logic

    def stop(self) -> int | None:
        """SIGTERM, wait, then SIGKILL if needed; returns the exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        proc.stdout.close()
        self._log.close()
        self.proc = None
        return proc.returncode

    def restart(self) -> None:
        self.stop()
        self.start()

    # control API -----------------------------------------------------------------------
    def _request(self, method: str, path: str, body: object = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())

    def ledger(self, requests: bool = True) -> dict:
        return self._request("GET", "/_emulator/ledger" + ("" if requests else "?requests=false"))

    def set_scenarios(self, scenarios: list) -> list:
        return self._request("POST", "/_emulator/scenarios", {"scenarios": list(scenarios)})["scenarios"]

    def add_scenario(self, scenario: dict) -> list:
        return self._request("POST", "/_emulator/scenarios/add", scenario)["scenarios"]

    def release_held(self) -> int:
        """Send now the answers slow_create holds back; how many were waiting."""
        return self._request("POST", "/_emulator/release", {})["released"]

    def clear_scenarios(self) -> list:
        return self._request("DELETE", "/_emulator/scenarios")["scenarios"]

    def scenarios(self) -> list:
        return self._request("GET", "/_emulator/scenarios")["scenarios"]

    def advance_clock(self, seconds: float) -> dict:
        return self._request("POST", "/_emulator/clock", {"advance_seconds": seconds})

    def clock(self) -> dict:
        return self._request("GET", "/_emulator/clock")

    def configure(self, processing_delay: float | None = None, time_factor: float | None = None) -> dict:
        body = {k: v for k, v in {"processing_delay": processing_delay, "time_factor": time_factor}.items()
                if v is not None}
        return self._request("POST", "/_emulator/config", body)

    def client(self, **kw):
        import anthropic

        kw.setdefault("api_key", "test-key")
        return anthropic.Anthropic(base_url=self.url, **kw)

    def __enter__(self) -> "EmulatorProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
