"""`dbt-claude-batch compare`: run one model with `claude_batch_compare` through dbt, then print the comparison.

The comparison itself is done by the dbt run (run/compare.py), so this command starts dbt as a child
process (`dbt run --select MODEL --vars '{claude_batch_compare: N}'`, dbt's output going to stderr) and
then reads the newest comparison of `<model>__compare` from the DuckDB file, read-only.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Callable

from dbt_claude_batch.base.errors import NothingToShowError
from dbt_claude_batch.base.identifiers import literal, qualified
from dbt_claude_batch.base.run_vars import VAR_COMPARE
from dbt_claude_batch.state import compare_table
from dbt_claude_batch.state.warehouse import open_read_only


def dbt_command(model: str, size: int, project_dir: str | None, profiles_dir: str | None, profile: str | None,
                target: str | None) -> list[str]:
    """The dbt run that makes the comparison, through `dbt-claude-batch dbt` (SIGTERM handled like Ctrl-C)."""
    command = [sys.executable, "-m", "dbt_claude_batch.observe.cli", "dbt", "run", "--select", model,
               "--vars", json.dumps({VAR_COMPARE: size})]
    for flag, value in (("--project-dir", project_dir), ("--profiles-dir", profiles_dir), ("--profile", profile),
                        ("--target", target)):
        if value:
            command += [flag, value]
    return command


def run(model: str, size: int, locate: Callable[[], str], state_schema: str, as_json: bool, command: list[str],
        cwd: str | None = None) -> int:
    """Run the comparison with dbt, then print its summary; dbt's exit code when it fails."""
    proc = subprocess.run(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sys.stderr.write(proc.stdout)
    if proc.returncode != 0:
        sys.stderr.write(f"dbt-claude-batch compare: the dbt run of {model} failed (exit {proc.returncode}); "
                         "its output is above\n")
        return proc.returncode
    con = open_read_only(locate())
    try:
        relation = _relation(con, model, state_schema)
        doc = compare_table.summary(con, relation, compare_table.latest_compare_id(con, relation))
    finally:
        con.close()
    print(json.dumps(doc, default=str, indent=2) if as_json else compare_table.summary_text(doc))
    return 0


def _relation(con, model: str, state_schema: str) -> str:
    """`<model>__compare` in the schema of the batch model named `model` (the newest, if several)."""
    rows = con.execute(
        f"select split_part(model_id, '.', 1) from {qualified(state_schema, 'models')} "
        f"where model_id = split_part(model_id, '.', 1) || '.' || {literal(model)} order by updated_at desc"
    ).fetchall()
    for (schema,) in rows:
        name = model + compare_table.SUFFIX
        if con.execute("select 1 from information_schema.tables where table_schema = ? and table_name = ?",
                       [schema, name]).fetchall():
            return qualified(schema, name)
    raise NothingToShowError(f"No comparison of {model} to show: the dbt run made no `{model}"
                             f"{compare_table.SUFFIX}` table; check that --model names a batch model.")
