"""The `plans` table: each plan a `claude_batch_plan` run computed (base/plan_document.py), as JSON."""

from __future__ import annotations

import json
import uuid
from typing import Any

from dbt_claude_batch.base.identifiers import qualified
from dbt_claude_batch.state.state import State, utcnow


def record_plan(state: State, plan: dict[str, Any]) -> str:
    """Keep a plan; return its id."""
    plan_id = str(uuid.uuid4())
    state.run(f"insert into {state.table('plans')} (plan_id, model_id, planned_at, schema_version, plan) "
              "values (?, ?, ?, ?, ?)", [plan_id, state.model_id, utcnow(), plan["schema_version"], json.dumps(plan)])
    return plan_id


def latest_plans(cursor, schema: str, model: str | None = None) -> list[dict[str, Any]]:
    """The newest plan of each model (or of the models whose identifier or schema.identifier is `model`)."""
    where = ""
    params: list[Any] = []
    if model:
        where = "where model_id = ? or split_part(model_id, '.', 2) = ?"
        params = [model, model]
    rows = cursor.execute(
        f"select plan from {qualified(schema, 'plans')} {where} "
        "qualify row_number() over (partition by model_id order by planned_at desc) = 1 order by model_id",
        params).fetchall()
    return [json.loads(r[0]) for r in rows]
