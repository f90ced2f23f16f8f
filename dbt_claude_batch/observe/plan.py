"""`dbt-claude-batch plan`: what the next run of each batch model would buy, why, and what it would cost.

By default it runs `dbt run --vars '{claude_batch_plan: true}'` (builds nothing new, calls no API) and
prints the plans that run recorded; `--recorded` only reads the newest recorded plan of each model.
`--json` prints one document: {"schema_version": 1, "plans": [plan, ...]}, each plan as
base/plan_document.py's PLAN_SCHEMA describes (docs/plan.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from typing import Callable, TextIO

from dbt_claude_batch.base.errors import DbtClaudeBatchError
from dbt_claude_batch.base.plan_document import PLAN_SCHEMA_VERSION, plan_text
from dbt_claude_batch.base.run_vars import VAR_PLAN
from dbt_claude_batch.observe.dbt_command import dbt_command
from dbt_claude_batch.state.plans import latest_plans
from dbt_claude_batch.state.warehouse import Location, open_read_only


def run(database_of: Callable[[], str], state_schema: str, select: str | None, recorded: bool, as_json: bool,
        loc: Location = Location(), out: TextIO | None = None, err: TextIO | None = None,
        user_vars: dict | None = None) -> int:
    """Plan (or read the recorded plans) and print them; exit 1 when dbt fails or there is no plan."""
    out, err = out or sys.stdout, err or sys.stderr
    since = None
    if not recorded:
        since = datetime.now(timezone.utc).replace(tzinfo=None)
        command, cwd = dbt_command({VAR_PLAN: True}, select, loc, user_vars)
        proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
        if proc.returncode != 0:
            err.write(f"dbt-claude-batch plan: dbt failed ({proc.returncode}); its output follows.\n"
                      f"{proc.stdout[-8000:]}{proc.stderr[-4000:]}")
            return 1
    try:
        con = open_read_only(database_of())
        try:
            plans = latest_plans(con, state_schema, None if since else select)
        finally:
            con.close()
    except DbtClaudeBatchError as exc:
        err.write(f"dbt-claude-batch plan: {exc}\n")
        return 1
    except Exception as exc:  # noqa: BLE001 - no plans table yet: an older state or no batch model planned
        if "plans" not in str(exc):
            raise
        plans = []
    if since is not None:
        plans = [p for p in plans if p["planned_at"].rstrip("Z") >= since.isoformat(timespec="seconds")]
    if not plans:
        err.write("dbt-claude-batch plan: No plan "
                  + ("was recorded by this dbt run: does the selection hold a batch model?\n" if since
                     else "is recorded: run `dbt-claude-batch plan` without --recorded first.\n"))
        return 1
    if as_json:
        out.write(json.dumps({"schema_version": PLAN_SCHEMA_VERSION, "plans": plans}, indent=2) + "\n")
    else:
        out.write("\n\n".join(plan_text(p) for p in plans) + "\n")
    return 0
