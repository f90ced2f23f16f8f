"""`dbt-claude-batch compare`: run one model with `claude_batch_compare` through dbt, then print the comparison.

The comparison itself is done by the dbt run (run/compare.py), so this command starts dbt as a child
process (`dbt run --select MODEL --vars '{claude_batch_compare: N, claude_batch_compare_via: sync|batch}'`
through `dbt-claude-batch dbt`, dbt's output going to stderr) and then reads the newest comparison of
`<model>__compare` from the DuckDB file, read-only. Via batch, while the model's comparison batch is
still in flight, it says so instead (the same command collects it once it has ended).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Callable

from dbt_claude_batch.base.errors import NothingToShowError
from dbt_claude_batch.base.identifiers import literal, qualified
from dbt_claude_batch.base.run_vars import VAR_COMPARE, VAR_COMPARE_VIA
from dbt_claude_batch.observe.dbt_command import dbt_command
from dbt_claude_batch.state import compare_table, comparisons
from dbt_claude_batch.state.warehouse import Location, open_read_only


def command_for(model: str, size: int, via: str, loc: Location,
                user_vars: dict | None = None) -> tuple[list[str], str]:
    """The dbt run that makes (or, via batch, sends or collects) the comparison, and where to run it."""
    return dbt_command({VAR_COMPARE: size, VAR_COMPARE_VIA: via}, model, loc, user_vars)


def run(model: str, size: int, locate: Callable[[], str], state_schema: str, as_json: bool, command: list[str],
        cwd: str | None = None, via: str = "sync") -> int:
    """Run the comparison with dbt, then print its summary (or, via batch, that its batch is still in
    flight and how to collect it); dbt's exit code when it fails."""
    before = _pending_id(locate, model, state_schema) if via == "batch" else None
    proc = subprocess.run(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sys.stderr.write(proc.stdout)
    if proc.returncode != 0:
        sys.stderr.write(f"dbt-claude-batch compare: the dbt run of {model} failed (exit {proc.returncode}); "
                         "its output is above\n")
        return proc.returncode
    con = open_read_only(locate())
    try:
        waiting = _in_flight(con, model, state_schema) if via == "batch" else None
        if waiting is None:
            relation = _relation(con, model, state_schema)
            doc = compare_table.summary(con, relation, compare_table.latest_compare_id(con, relation))
    finally:
        con.close()
    if waiting is not None:
        waiting["sent_now"] = waiting["compare_id"] != before
        print(json.dumps(waiting, default=str, indent=2) if as_json else _in_flight_text(waiting, model))
        return 0
    print(json.dumps(doc, default=str, indent=2) if as_json else compare_table.summary_text(doc))
    return 0


def _in_flight(con, model: str, state_schema: str) -> dict | None:
    """The model's comparison batch not yet collected, as a document, or None."""
    for (model_id,) in _model_ids(con, model, state_schema):
        found = comparisons.pending(con, state_schema, model_id)
        if found is not None:
            return {"status": "in_flight", "compare_id": found["compare_id"], "batch_id": found["batch_id"],
                    "processing_status": found["processing_status"] or found["submission_status"],
                    "requests": found["n_requests"], "sampled_keys": found["sampled_keys"],
                    "created_at": found["created_at"],
                    "collect": f"dbt-claude-batch compare --model {model} --via batch"}
    return None


def _pending_id(locate: Callable[[], str], model: str, state_schema: str) -> str | None:
    """The comparison in flight before this command's dbt run, to tell one it sends from one it finds."""
    try:
        con = open_read_only(locate())
    except Exception:  # noqa: BLE001 - no database yet, or none to read: nothing was in flight
        return None
    try:
        found = _in_flight(con, model, state_schema)
    except Exception:  # noqa: BLE001 - no state schema yet
        found = None
    finally:
        con.close()
    return found["compare_id"] if found else None


def _in_flight_text(doc: dict, model: str) -> str:
    batch = f"batch {doc['batch_id']}" if doc["batch_id"] else "a batch whose create is not settled yet"
    news = "sent now" if doc["sent_now"] else "sent by an earlier call; nothing new was sent"
    return (f"comparison {doc['compare_id']} of {model}: {doc['requests']} requests in {batch}, "
            f"{doc['processing_status']}, {news}. Collect it with `{doc['collect']}` "
            "(batches end within 24 h).")


def _model_ids(con, model: str, state_schema: str) -> list[tuple]:
    return con.execute(
        f"select model_id from {qualified(state_schema, 'models')} "
        f"where model_id = split_part(model_id, '.', 1) || '.' || {literal(model)} order by updated_at desc"
    ).fetchall()


def _relation(con, model: str, state_schema: str) -> str:
    """`<model>__compare` in the schema of the batch model named `model` (the newest, if several)."""
    for (model_id,) in _model_ids(con, model, state_schema):
        schema = model_id.split(".", 1)[0]
        name = model + compare_table.SUFFIX
        if con.execute("select 1 from information_schema.tables where table_schema = ? and table_name = ?",
                       [schema, name]).fetchall():
            return qualified(schema, name)
    raise NothingToShowError(f"No comparison of {model} to show: the dbt run made no `{model}"
                             f"{compare_table.SUFFIX}` table; check that --model names a batch model.")
