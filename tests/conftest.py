"""Shared fixtures: `emulator` (a running local API emulator) and `emulator_factory`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dbt_harness  # noqa: E402
from dbt_forkserver import ForkServer  # noqa: E402
from emulator_harness import EmulatorProcess  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def dbt_launcher():
    """dbt commands fork from one process that imported dbt (see tests/dbt_forkserver.py): each is
    still its own `dbt` process, without ~2 s of Python start-up and the imports of dbt and the SDK. CB_TEST_DBT_SUBPROCESS=1
    runs every command as the `dbt` script instead."""
    if os.environ.get("CB_TEST_DBT_SUBPROCESS") == "1":
        yield None
        return
    server = ForkServer()
    dbt_harness.LAUNCHER = server
    yield server
    dbt_harness.LAUNCHER = None
    server.stop()


@pytest.fixture(scope="session", autouse=True)
def dbt_parse_cache(tmp_path_factory):
    """Projects configured alike share dbt's saved parse (see `DbtProject._seed_parse`), per worker.
    CB_TEST_DBT_FULL_PARSE=1 lets every project parse on its own instead."""
    if os.environ.get("CB_TEST_DBT_FULL_PARSE") == "1":
        yield None
        return
    dbt_harness.PARSE_CACHE = tmp_path_factory.mktemp("dbt-parse")
    yield dbt_harness.PARSE_CACHE
    dbt_harness.PARSE_CACHE = None


@pytest.fixture
def emulator_factory(tmp_path_factory):
    """emulator_factory(*cli_args, state_dir=None) -> EmulatorProcess; all stopped at teardown."""
    started: list[EmulatorProcess] = []

    def start(*args: str, state_dir=None) -> EmulatorProcess:
        emu = EmulatorProcess(state_dir or tmp_path_factory.mktemp("emulator-state"), *args)
        started.append(emu)
        return emu

    yield start
    for emu in started:
        emu.stop()


@pytest.fixture
def emulator(emulator_factory) -> EmulatorProcess:
    """A fresh emulator on a free port with its own state dir (processing delay 0)."""
    return emulator_factory()
