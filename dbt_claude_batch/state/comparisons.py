"""Prompt comparisons sent as a batch (state v13): the `comparisons` and `compare_requests` tables.

A comparison sent as a batch is paid for when it is created and answered up to 24 h later, so what it
needs to be collected is kept in state from before the create: the sampled keys with the held answer
each is compared with (`compare_requests`), and the comparison (`comparisons`), whose submission has
`purpose = 'compare'` so that the model's own runs never settle, poll or harvest it. The run
(run/compare_batch.py) writes these; the `compare` command reads `pending` to say what is in flight.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from dbt_claude_batch.base.identifiers import qualified
from dbt_claude_batch.state.state import NEVER_SENT_STATUSES, State, utcnow

# compare_requests' columns that come from the comparison's sample, in order.
REQUEST_COLUMNS = ("custom_id", "key_json", "stratum", "request_changed", "sent", "old_request_hash",
                   "new_request_hash", "old_output", "prompt", "local_result")


def record_intent(state: State, compare_id: str, submission_id: str, marker: str, n_sent: int, n_bytes: int,
                  held_keys: int, calls: Sequence[dict[str, Any]], est_cost_usd: float | None = None) -> None:
    """Commit, before the create, the submission (`purpose` compare), the comparison and its sampled keys.

    A create that is retried (refused, never sent) records a new submission for the same comparison:
    the comparison then points at the newest one.
    """
    with state.transaction():
        state.insert_intent(submission_id, n_sent, n_bytes, marker, est_cost_usd, purpose="compare")
        state.run(
            f"insert into {state.table('comparisons')} (compare_id, model_id, submission_id, created_at, held_keys, "
            "sampled_keys) values (?, ?, ?, ?, ?, ?) on conflict (compare_id) do update set "
            "submission_id = excluded.submission_id",
            [compare_id, state.model_id, submission_id, utcnow(), held_keys, len(calls)])
        state.cursor.executemany(
            f"insert or ignore into {state.table('compare_requests')} (compare_id, model_id, "
            f"{', '.join(REQUEST_COLUMNS)}) values (?, ?, {', '.join('?' for _ in REQUEST_COLUMNS)})",
            [[compare_id, state.model_id, *(_value(c, name) for name in REQUEST_COLUMNS)] for c in calls])


def _value(call: dict[str, Any], name: str) -> Any:
    value = call.get(name)
    return json.dumps(value) if name == "local_result" and value is not None else value


def pending_sql(schema: str) -> str:
    """SQL, one parameter (the model_id): the model's comparisons sent as a batch and not yet collected,
    newest first, with their submission and batch as state knows them. A comparison whose create was
    refused, or concluded never sent, is not pending."""
    s = lambda t: qualified(schema, t)  # noqa: E731
    return f"""select c.compare_id, c.submission_id, s.status as submission_status, s.batch_id, s.n_requests,
                      s.marker_id, s.intent_at, b.processing_status, c.held_keys, c.sampled_keys, c.created_at
               from {s('comparisons')} c join {s('submissions')} s using (submission_id)
               left join {s('batches')} b on b.batch_id = s.batch_id
               where c.model_id = ? and c.collected_at is null and s.status not in {NEVER_SENT_STATUSES}
               order by c.created_at desc"""


def pending(cursor, schema: str, model_id: str) -> dict[str, Any] | None:
    """The model's newest comparison batch not yet collected (see `pending_sql`), or None."""
    cur = cursor.execute(pending_sql(schema), [model_id])
    names = [d[0] for d in cur.description]
    rows = cur.fetchall()
    return dict(zip(names, rows[0])) if rows else None


def sampled(state: State, compare_id: str) -> list[dict[str, Any]]:
    """The comparison's sampled keys as recorded before the create, in custom_id order."""
    cur = state.cursor.execute(f"select {', '.join(REQUEST_COLUMNS)} from {state.table('compare_requests')} "
                               "where compare_id = ? order by custom_id", [compare_id])
    names = [d[0] for d in cur.description]
    out = []
    for row in cur.fetchall():
        call = dict(zip(names, row))
        call["local_result"] = json.loads(call["local_result"]) if call["local_result"] else None
        out.append(call)
    return out


def mark_collected(state: State, compare_id: str, note: str | None = None) -> None:
    """The comparison's rows are in `<model>__compare` (call inside the transaction that wrote them)."""
    state.run(f"update {state.table('comparisons')} set collected_at = ?, note = ? where compare_id = ?",
              [utcnow(), note, compare_id])
