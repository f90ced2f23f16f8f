"""One row per run in the state table `runs`, and the one summary line each run ends with.

A run is recorded when it starts and completed when it finishes (or fails: `outcome` says which and
`note` why). Its figures come from the outcomes it recorded itself: those with a `harvest_seq` above
the value the harvest sequence had when the run started, so counting them reads only new rows.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from dbt_claude_batch.base.errors import RunHealthError
from dbt_claude_batch.base.identifiers import literal
from dbt_claude_batch.base.pricing import cost_sql, model_family_sql, prices_cte
from dbt_claude_batch.state.state import State, marker_sql, utcnow

# Failures no resubmission fixes until a person changes something (counted by `max_failure_ratio`).
UNFIXABLE_KINDS = ("invalid_request", "template_error", "empty_prompt", "attachment_error", "attachment_missing",
                   "refused")
# Failures decided before a request is sent: recorded by the run that renders the row, never sent.
LOCAL_KINDS = ("template_error", "empty_prompt", "attachment_error", "attachment_missing")


@dataclass
class RunRecord:
    """Figures of one run, for the `runs` row and the summary line."""

    run_id: str
    start_seq: int
    n_source_rows: int = 0
    n_submitted: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    n_reused: int = 0
    cost_usd: float = 0.0
    finished: bool = False

    @property
    def n_harvested(self) -> int:
        return sum(self.by_kind.values())

    @property
    def n_failed(self) -> int:
        return sum(n for kind, n in self.by_kind.items() if kind != "succeeded")

    def summary(self) -> str:
        failed = ", ".join(f"{n} {kind}" for kind, n in sorted(self.by_kind.items()) if kind != "succeeded")
        return (f"run summary: {self.n_source_rows} source rows, submitted {self.n_submitted}, "
                f"harvested {self.n_harvested} ({self.by_kind.get('succeeded', 0)} succeeded"
                + (f"; failed: {failed}" if failed else "") + f"), reused {self.n_reused}, "
                f"cost of this run ${self.cost_usd:.4f}")


def start_run(state: State) -> RunRecord:
    start_seq = state.run(f"select {state.next_seq_sql()}")[0][0]
    record = RunRecord(str(uuid.uuid4()), start_seq)
    state.run(f"insert into {state.table('runs')} (run_id, model_id, started_at) values (?, ?, ?)",
              [record.run_id, state.model_id, utcnow()])
    return record


def finish_run(state: State, record: RunRecord, outcome: str, note: str | None = None,
               prices: dict | None = None, recount: bool = True) -> RunRecord:
    """Count what this run recorded, complete its `runs` row, and return the record (for the summary).
    `recount=False` keeps the counts already taken (only the outcome and note change)."""
    if recount:
        _count(state, record, prices)
    state.run(
        f"update {state.table('runs')} set finished_at = ?, n_source_rows = ?, n_submitted = ?, n_harvested = ?, "
        "n_failed = ?, n_reused = ?, cost_usd = ?, outcome = ?, note = ? where run_id = ?",
        [utcnow(), record.n_source_rows, record.n_submitted, record.n_harvested, record.n_failed, record.n_reused,
         record.cost_usd, outcome, note, record.run_id],
    )
    record.finished = True
    return record


def _count(state: State, record: RunRecord, prices: dict | None) -> None:
    new = (f"from {state.table('outcomes')} o left join cb_prices p on p.model_family = "
           f"{model_family_sql('o.answered_model')} left join {state.table('batches')} b on b.batch_id = o.batch_id "
           f"where o.model_id = {literal(state.model_id)} and o.harvest_seq > {int(record.start_seq)}")
    # A sample's calls are billed (in the cost) but are no row's harvest (not in the counts).
    rows = state.run(
        f"with {prices_cte(prices)} select case when o.reused_from is not null then 'reused' "
        f"when b.kind in ('sample', 'compare') then 'sample' "
        f"when {marker_sql(state.schema, 'o')} then 'marker' "
        f"when o.error_type = 'template_error' then 'template_error' "
        f"when o.error_type = 'empty_prompt' then 'empty_prompt' "
        f"when o.error_type in ('attachment_error', 'attachment_missing') then o.error_type "
        f"when o.error_type = 'invalid_request_error' then 'invalid_request' else o.result_type end as kind, "
        f"count(*), coalesce(sum({cost_sql('o', 'p')}), 0) {new} group by all"
    )
    record.cost_usd = sum(float(r[2]) for r in rows)
    record.n_reused = sum(r[1] for r in rows if r[0] == "reused")
    record.by_kind = {r[0]: r[1] for r in rows if r[0] not in ("reused", "marker", "sample")}


def check_health(record: RunRecord, max_failure_ratio: float) -> None:
    """Fail the model (red) when too much of what this run dealt with failed for a reason no retry fixes.

    Rows that failed before they were sent (a template error, an unreadable file) are measured against
    the rows this run rendered (sent or failed so); what came back from the API against what this run
    harvested. Everything is recorded first: the next run continues, and its merge catches up this
    run's results.
    """
    def over(kinds: tuple[str, ...], of: int) -> tuple[int, str] | None:
        failed = sum(record.by_kind.get(k, 0) for k in kinds)
        if not of or failed / of <= max_failure_ratio:
            return None
        return failed, ", ".join(f"{record.by_kind[k]} {k}" for k in kinds if record.by_kind.get(k))

    before = tuple(k for k in UNFIXABLE_KINDS if k in LOCAL_KINDS)
    n_local = sum(record.by_kind.get(k, 0) for k in LOCAL_KINDS)
    local = over(before, record.n_submitted + n_local)
    if local:
        failed, kinds = local
        raise RunHealthError(
            f"{failed} of the {record.n_submitted + n_local} rows this run rendered failed before they were sent "
            f"({kinds}), over max_failure_ratio {max_failure_ratio:g}: see the model's __failures table "
            "(error_message, next_action), fix the rows, files or template, and run again. The rows sent were "
            "recorded; the results merge on the next run."
        )
    after = tuple(k for k in UNFIXABLE_KINDS if k not in LOCAL_KINDS)
    harvested = over(after, record.n_harvested - n_local)
    if harvested:
        failed, kinds = harvested
        raise RunHealthError(
            f"{failed} of the {record.n_harvested - n_local} requests this run harvested failed for a reason no "
            f"retry fixes ({kinds}), over max_failure_ratio {max_failure_ratio:g}: see the model's __failures "
            "table (error_message, next_action), fix the requests, and run again. Everything was recorded; the "
            "results merge on the next run."
        )
