"""The `dbt-claude-batch emulator` command: startup line, health, config, clean SIGTERM stop."""

from __future__ import annotations

import json
import subprocess
import sys

from emulator_contract import checked_client, request


def test_first_stdout_line_is_base_url_and_sigterm_exits_zero(emulator_factory):
    emu = emulator_factory("--processing-delay", "120", "--time-factor", "1", "--seed", "3")
    assert emu.url.startswith("http://127.0.0.1:") and not emu.url.endswith("/")
    assert emu.configure() == {"processing_delay": 120.0, "time_factor": 1.0, "seed": 3,
                               "max_batch_bytes": 256 * 1024 * 1024}
    client = checked_client(emu, max_retries=0)
    batch = client.messages.batches.create(requests=[request("a", "hello")])
    assert batch.processing_status == "in_progress"
    assert emu.stop() == 0
    saved = json.loads((emu.state_dir / "emulator.json").read_text())
    assert saved["ledger"]["calls"]["POST /v1/messages/batches"] == {"200": 1}
    assert (emu.state_dir / "batches" / batch.id / "batch.json").exists()


def test_configure_at_run_time(emulator):
    assert emulator.configure(processing_delay=50, time_factor=3600)["time_factor"] == 3600
    before = emulator.clock()["epoch_seconds"]
    client = checked_client(emulator, max_retries=0)
    batch = client.messages.batches.create(requests=[request("a", "hello")])
    assert batch.processing_status == "in_progress"
    emulator.configure(time_factor=1)
    emulator.advance_clock(60)
    assert emulator.clock()["epoch_seconds"] - before >= 60
    assert client.messages.batches.retrieve(batch.id).processing_status == "in_progress"  # first access
    assert client.messages.batches.retrieve(batch.id).processing_status == "ended"


def test_cli_help_lists_emulator_subcommand():
    out = subprocess.run([sys.executable, "-m", "dbt_claude_batch.observe.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "emulator" in out
    bad = subprocess.run([sys.executable, "-m", "dbt_claude_batch.observe.cli", "emulator", "--state-dir", "/tmp/x",
                          "--scenario", "not json"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--scenario" in bad.stderr
