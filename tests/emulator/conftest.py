"""Fixtures for the emulator contract tests."""

from __future__ import annotations

import pytest

from emulator_contract import checked_client


@pytest.fixture
def api(emulator):
    """A real SDK client (no retries) on the `emulator` whose every response is schema-checked."""
    client = checked_client(emulator, max_retries=0)
    yield client
    assert client.schema_violations == []
    assert client.schema_transport.checked > 0
    client.close()
