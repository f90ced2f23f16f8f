"""The dbt command a `dbt-claude-batch` command runs as a child process (`plan`, `compare`).

Always through `dbt-claude-batch dbt` on the Python running this command, so that the child is the
same installation and a SIGTERM to it stops batch models as Ctrl-C does (between creates and polls,
keeping what they hold) rather than killing dbt mid-write.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def dbt_command(vars: dict[str, Any], select: str | None = None, project_dir: str | None = None,
                profiles_dir: str | None = None, profile: str | None = None, target: str | None = None) -> list[str]:
    """`dbt run --vars VARS [--select ...] [connection flags]` through `dbt-claude-batch dbt`."""
    command = [sys.executable, "-m", "dbt_claude_batch.observe.cli", "dbt", "run", "--vars", json.dumps(vars)]
    for flag, value in (("--select", select), ("--project-dir", project_dir), ("--profiles-dir", profiles_dir),
                        ("--profile", profile), ("--target", target)):
        if value:
            command += [flag, value]
    return command
