"""The dbt command a `dbt-claude-batch` command runs as a child process (`plan`, `compare`).

Always through `dbt-claude-batch dbt` on the Python running this command, so that the child is the
same installation and a SIGTERM to it stops batch models as Ctrl-C does (between creates and polls,
keeping what they hold) rather than killing dbt mid-write. It runs in the project directory, with the
project and profiles directories this command found passed as absolute paths: dbt-duckdb opens a
relative database path from the directory dbt runs in, and the command then reads the file there
(`state.warehouse.database_file`), so both are the same file wherever the command was started.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from dbt_claude_batch.state.warehouse import Location, profiles_dir_of, project_dir_of


def dbt_command(vars: dict[str, Any], select: str | None = None, loc: Location = Location(),
                user_vars: dict[str, Any] | None = None) -> tuple[list[str], str]:
    """`dbt run --vars VARS [--select ...] --project-dir ... --profiles-dir ... [--profile] [--target]`
    through `dbt-claude-batch dbt`, and the directory to run it in (the project's).

    `user_vars`: the `--vars` the user passes their own `dbt run` (a model or its staging may read
    them); the command's own vars win over one of the same name."""
    project_dir = project_dir_of(loc)
    command = [sys.executable, "-m", "dbt_claude_batch.observe.cli", "dbt", "run", "--vars",
               json.dumps({**(user_vars or {}), **vars}, default=str)]
    for flag, value in (("--select", select), ("--project-dir", str(project_dir)),
                        ("--profiles-dir", str(profiles_dir_of(loc))), ("--profile", loc.profile),
                        ("--target", loc.target)):
        if value:
            command += [flag, value]
    return command, str(project_dir)
