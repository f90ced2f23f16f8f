"""Fixtures for integration tests: a real dbt project on a real DuckDB file, against the emulator."""

from __future__ import annotations

import pytest

from dbt_harness import DbtProject


@pytest.fixture
def project(tmp_path, emulator) -> DbtProject:
    return DbtProject(tmp_path / "project", emulator)


