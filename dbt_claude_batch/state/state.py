"""The tables that must survive a crash: submissions, requests, batches, outcomes.

They live in their own schema (setting `state_schema`, default ``dbt_claude_batch``) of the dbt
database, shared by every batch model and keyed by the model's relation name. Every write is one
autocommitted statement (or one explicit transaction) on a cursor of our own, made at the moment the
fact exists: DuckDB has it on disk before `execute` returns, so `kill -9` a moment later loses nothing.

The schema is versioned in ``state_version``; `ensure` applies the missing steps in order and refuses
a database written by a newer version of this package.
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Iterator, Mapping, Sequence

from dbt_claude_batch.base.errors import StateError
from dbt_claude_batch.base.identifiers import literal, qualified
from dbt_claude_batch.state.migrations import EXPECTED_COLUMNS, MIGRATIONS, SCHEMA_VERSION

# The marker requests every batch carries (see spool_files.py and keys.MARKER_PREFIX): their outcomes are
# kept for the bill, and left out of every count, table and chart of rows. A marker is recognised only
# as the exact `marker_id` recorded for its batch's submission (`marker_sql`), never by its prefix: a
# user key may start with it.


def marker_sql(schema: str, alias: str = "o") -> str:
    """SQL: whether the outcome row `alias` is its batch's marker line (its custom_id is, exactly, the
    marker id recorded for the submission that made the batch)."""
    return (f"exists (select 1 from {qualified(schema, 'batches')} mb join {qualified(schema, 'submissions')} ms "
            f"using (submission_id) where mb.batch_id = {alias}.batch_id and ms.marker_id = {alias}.custom_id)")

# Submissions whose create may have been sent: their requests count as bought (or about to be). A
# `prepared` submission (recorded ahead while the create before it was in flight, see
# submission.prepare) becomes `creating`, committed, before its create is sent; until then its
# requests are nobody's, and a run that ends first leaves it to be marked `rejected` (never sent).
LIVE_STATUSES = "('creating', 'in_doubt', 'submitted')"
# Submissions concluded never sent: `rejected` (refused by the API, or left `prepared` by a run that ended
# first) and `abandoned` (a create in doubt that no batch carries the marker of after the grace period).
NEVER_SENT_STATUSES = "('rejected', 'abandoned')"

_ensure_lock = threading.Lock()
_COUNTS = ("processing", "succeeded", "errored", "canceled", "expired")


def row_counts(request_counts, has_marker: bool) -> tuple[dict[str, int], str | None]:
    """A batch's `request_counts` as the API gives them, without its marker request: the counts of the
    rows' requests, and the count the marker was taken out of (the first non-empty one: processing while
    in progress, usually succeeded once ended; harvest moves it to where its result really is)."""
    counts = {k: getattr(request_counts, k) for k in _COUNTS}
    marker_in = next((k for k in _COUNTS if counts[k] > 0), None) if has_marker else None
    if marker_in:
        counts[marker_in] -= 1
    return counts, marker_in


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


class State:
    """Reads and writes the state tables through one DuckDB cursor of our own."""

    def __init__(self, cursor, schema: str, model_id: str, output_schema: Mapping[str, Any] | None = None):
        self.cursor = cursor
        self.schema = schema
        self.model_id = model_id
        # What this run's requests ask for, recorded with each submission (`submission_schema`).
        self.output_schema = json.dumps(dict(output_schema), sort_keys=True) if output_schema else "none"

    def table(self, name: str) -> str:
        return qualified(self.schema, name)

    def next_seq_sql(self) -> str:
        """SQL for the next value of the harvest sequence (monotonic, unlike clocks)."""
        return f"nextval({literal(qualified(self.schema, 'outcome_seq'))})"

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One explicit transaction on our cursor: all of it is on disk at the end, or none of it."""
        self.run("begin transaction")
        try:
            yield
        except BaseException:
            self.run("rollback")
            raise
        self.run("commit")

    def run(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]:
        """Execute and drain (DuckDB needs a result drained before the cursor runs anything else)."""
        result = self.cursor.execute(sql, params) if params is not None else self.cursor.execute(sql)
        return result.fetchall()

    # -- schema ---------------------------------------------------------------------------------
    def ensure(self) -> None:
        """Create or upgrade the state schema; idempotent and safe across dbt threads.

        A table of the state schema that is not ours (or was damaged) stops the run with a
        `StateError` before anything is written, rather than a raw database error later.
        """
        import duckdb

        s = qualified(self.schema)
        with _ensure_lock:
            try:
                self.run(f"create schema if not exists {s}")
                self.run(
                    f"create table if not exists {s}.state_version (version integer not null, applied_at timestamp not null)"
                )
                current = self.run(f"select coalesce(max(version), 0) from {s}.state_version")[0][0]
            except duckdb.Error as exc:
                raise self._foreign("state_version", str(exc)) from None
            if current > SCHEMA_VERSION:
                raise StateError(
                    f"State schema {self.schema} is at version {current}, newer than this dbt-claude-batch "
                    f"understands ({SCHEMA_VERSION}): upgrade the dbt-claude-batch package."
                )
            if current == 0:
                clash = self._tables() & set(EXPECTED_COLUMNS)
                if clash:
                    raise self._foreign(sorted(clash)[0], "the schema has no state_version record")
            for version in range(current + 1, SCHEMA_VERSION + 1):
                try:
                    with self.transaction():
                        for ddl in MIGRATIONS[version]:
                            self.run(ddl.format(s=s))
                        self.run(f"insert into {s}.state_version values (?, ?)", [version, utcnow()])
                except duckdb.Error as exc:
                    raise StateError(
                        f"Upgrading state schema {self.schema} to version {version} failed: it holds tables that "
                        "dbt-claude-batch did not create. Set `state_schema` to another schema, or move those "
                        f"tables away, and run again.\n{exc}"
                    ) from None
            self._check_columns()

    def _tables(self) -> set[str]:
        return {r[0] for r in self.run(
            "select table_name from information_schema.tables where table_schema = ? "
            "and table_catalog = current_database()", [self.schema])}

    def _check_columns(self) -> None:
        rows = self.run(
            "select table_name, list(column_name) from information_schema.columns where table_schema = ? "
            "and table_catalog = current_database() group by all", [self.schema])
        present = {name: set(cols) for name, cols in rows}
        for table, needed in EXPECTED_COLUMNS.items():
            missing = [c for c in needed if c not in present.get(table, set())]
            if missing:
                raise self._foreign(table, f"missing column(s) {', '.join(missing)}")

    def _foreign(self, table: str, detail: str) -> StateError:
        return StateError(
            f"Table {self.schema}.{table} is not dbt-claude-batch state or was damaged ({detail}): set "
            "`state_schema` to a schema of its own, or restore/rename that table; nothing was submitted."
        )

    def has_state(self) -> bool:
        """Whether this model has ever recorded a request."""
        return bool(self.run(f"select 1 from {self.table('requests')} where model_id = ? limit 1", [self.model_id]))

    def recorded_key(self) -> list[str] | None:
        rows = self.run(f"select key_columns from {self.table('models')} where model_id = ?", [self.model_id])
        return json.loads(rows[0][0]) if rows else None

    def recorded_key_types(self) -> dict[str, str] | None:
        rows = self.run(f"select key_types from {self.table('models')} where model_id = ?", [self.model_id])
        return json.loads(rows[0][0]) if rows and rows[0][0] else None

    def record_model(self, key_columns: list[str], key_types: dict[str, str]) -> None:
        self.run(
            f"insert into {self.table('models')} (model_id, key_columns, key_types, updated_at) values (?, ?, ?, ?) "
            "on conflict (model_id) do update set key_columns = excluded.key_columns, "
            "key_types = excluded.key_types, updated_at = excluded.updated_at",
            [self.model_id, json.dumps(key_columns), json.dumps(key_types), utcnow()],
        )

    def answers_ready(self) -> bool:
        rows = self.run(f"select answers_ready from {self.table('models')} where model_id = ?", [self.model_id])
        return bool(rows and rows[0][0])

    def set_answers_ready(self) -> None:
        self.run(f"update {self.table('models')} set answers_ready = true where model_id = ?", [self.model_id])

    def quiet_digest(self) -> str | None:
        rows = self.run(f"select quiet_digest from {self.table('models')} where model_id = ?", [self.model_id])
        return rows[0][0] if rows else None

    def set_quiet_digest(self, digest: str | None) -> None:
        # The source may have changed: what the last restore check saw (`results_gap`) no longer holds.
        self.run(f"update {self.table('models')} set quiet_digest = ?, results_gap = null where model_id = ?",
                 [digest, self.model_id])

    def results_gap(self) -> int | None:
        """Held answers less results rows when the last restore check found nothing missing (None: check)."""
        rows = self.run(f"select results_gap from {self.table('models')} where model_id = ?", [self.model_id])
        return rows[0][0] if rows else None

    def set_results_gap(self, gap: int | None) -> None:
        self.run(f"update {self.table('models')} set results_gap = ? where model_id = ?", [gap, self.model_id])

    # -- submissions ----------------------------------------------------------------------------
    def record_intent(self, submission_id: str, n_requests: int, n_bytes: int, requests_sql: str,
                      marker_id: str | None = None, est_cost_usd: float | None = None,
                      status: str = "creating") -> None:
        """Record a submission before its create call, with its requests, in one transaction
        (`status` `prepared`: ahead of time, to be made `creating` by `begin_create` before the create)."""
        with self.transaction():
            self.insert_intent(submission_id, n_requests, n_bytes, marker_id, est_cost_usd, status=status)
            self.run(
                f"insert into {self.table('requests')} (submission_id, model_id, custom_id, key_json, input_hash, "
                "request_hash, attempt, model, key_custom_id, part, parts, max_tokens, dedup_of, part_hash, "
                "first_page, last_page, components, sent_hash) "
                "select ?, ?, custom_id, key_json, input_hash, request_hash, attempt, request_model, key_custom_id, "
                "part, parts, max_tokens, dedup_of, part_hash, first_page, last_page, components, sent_hash "
                f"from ({requests_sql})",
                [submission_id, self.model_id],
            )

    def insert_intent(self, submission_id: str, n_requests: int, n_bytes: int, marker_id: str | None,
                      est_cost_usd: float | None = None, purpose: str = "rows", status: str = "creating") -> None:
        """The submission row of an intent (call inside a transaction, with what else it owns): `purpose`
        `rows` for the model's own requests, `compare` for a prompt comparison's batch."""
        self.run(
            f"insert into {self.table('submissions')} (submission_id, model_id, status, n_requests, n_bytes, "
            "intent_at, marker_id, est_cost_usd, purpose, output_schema) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [submission_id, self.model_id, status, n_requests, n_bytes, utcnow(), marker_id, est_cost_usd, purpose,
             self.output_schema],
        )

    def submission_schema(self, submission_id: str, current: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
        """The output_schema the submission's requests asked for (`current` for one recorded before v15)."""
        recorded = self.run(f"select output_schema from {self.table('submissions')} where submission_id = ?",
                            [submission_id])[0][0]
        if recorded is None:
            return current
        return None if recorded == "none" else json.loads(recorded)

    def begin_create(self, submission_id: str) -> None:
        """Make a prepared submission `creating`, committed before its create is sent (the intent's time
        is now: no batch created before it can be this submission's)."""
        changed = self.run(
            f"update {self.table('submissions')} set status = 'creating', intent_at = ? "
            "where submission_id = ? and status = 'prepared' returning submission_id",
            [utcnow(), submission_id])
        if not changed:
            raise StateError(f"Submission {submission_id} is no longer prepared: nothing was sent for it; run again.")

    def reject_unsent(self, note: str, submission_id: str | None = None) -> int:
        """Mark prepared submissions (this one, or every one of the model) `rejected`: never sent."""
        which = "submission_id = ?" if submission_id else "model_id = ?"
        return len(self.run(
            f"update {self.table('submissions')} set status = 'rejected', settled_at = ?, note = ? "
            f"where {which} and status = 'prepared' returning submission_id",
            [utcnow(), note, submission_id or self.model_id]))

    def mark_submitted(self, submission_id: str, batch, kind: str = "batch") -> None:
        """Record the batch id the moment create returns (or a listing adopts it). A comparison's
        submission makes a batch of kind `compare`, which no run of the model polls or harvests."""
        with self.transaction():
            self.run(
                f"update {self.table('submissions')} set status = 'submitted', batch_id = ?, settled_at = ? "
                "where submission_id = ?",
                [batch.id, utcnow(), submission_id],
            )
            purpose, n_requests = self.run(
                f"select purpose, n_requests from {self.table('submissions')} where submission_id = ?",
                [submission_id])[0]
            if purpose == "compare":
                kind, n, n_dedup = "compare", n_requests, 0
            else:
                n, n_dedup = self.run(
                    f"select count(*) filter (where dedup_of is null), count(*) filter (where dedup_of is not null) "
                    f"from {self.table('requests')} where submission_id = ?",
                    [submission_id],
                )[0]
            self.run(
                f"insert or ignore into {self.table('batches')} (batch_id, model_id, submission_id, n_submitted, kind, n_deduplicated) "
                "values (?, ?, ?, ?, ?, ?)",
                [batch.id, self.model_id, submission_id, n, kind, n_dedup],
            )
            self.update_batch(batch)

    def mark_submission(self, submission_id: str, status: str, note: str | None = None) -> None:
        self.run(
            f"update {self.table('submissions')} set status = ?, settled_at = ?, note = ? where submission_id = ?",
            [status, utcnow(), note, submission_id],
        )

    def awaiting_proof(self) -> bool:
        """Whether an unanswered create has candidate batches still in progress (worth waiting for)."""
        return bool(self.run(
            f"select 1 from {self.table('submissions')} where model_id = ? and (status = 'creating' "
            "or (status = 'in_doubt' and starts_with(note, 'proof pending'))) and purpose = 'rows' limit 1",
            [self.model_id]))

    def unsettled_submissions(self) -> list[tuple]:
        """Submissions of the model's rows whose create may or may not have made a batch: (id, n_requests,
        intent_at, marker_id). A comparison's are settled by the comparison (run/compare_batch.py)."""
        return self.run(
            f"select submission_id, n_requests, intent_at, marker_id from {self.table('submissions')} "
            "where model_id = ? and status in ('creating', 'in_doubt') and purpose = 'rows' order by intent_at",
            [self.model_id],
        )

    def _in_flight_sql(self, every_model: bool) -> str:
        """Submissions whose requests wait in the API's queue: creates in doubt, batches not ended."""
        mine = "" if every_model else f" and s.model_id = {literal(self.model_id)}"
        return (f"from {self.table('submissions')} s left join {self.table('batches')} b on b.batch_id = s.batch_id "
                "where (s.status in ('creating', 'in_doubt') or (s.status = 'submitted' and b.kind in ('batch', 'compare') "
                f"and b.harvested_at is null and coalesce(b.processing_status, '') <> 'ended')){mine}")

    def flying_requests_sql(self) -> str:
        """This model's requests not yet harvested (key custom_id, attempt): creates in doubt, batches in flight."""
        return (f"select coalesce(r.key_custom_id, r.custom_id) as custom_id, r.attempt from {self.table('requests')} r "
                f"join {self.table('submissions')} s using (submission_id) "
                f"left join {self.table('batches')} b on b.batch_id = s.batch_id "
                f"where s.model_id = {literal(self.model_id)} and s.status in {LIVE_STATUSES} "
                "and b.harvested_at is null")

    def requests_in_flight(self) -> int:
        """Requests of this state (every model) in the processing queue, marker requests included."""
        return int(self.run(
            f"select coalesce(sum(s.n_requests + (s.marker_id is not null)::int), 0) {self._in_flight_sql(True)}"
        )[0][0])

    def committed_usd(self, every_model: bool = False) -> float:
        """Estimated cost of the requests in flight (recorded with each intent), for the budget guard."""
        return float(self.run(f"select coalesce(sum(s.est_cost_usd), 0) {self._in_flight_sql(every_model)}")[0][0])

    def known_batch_ids(self, batch_ids: Sequence[str]) -> set[str]:
        """Which of these batches this state already knows (its own, of any model)."""
        if not batch_ids:
            return set()
        rows = self.run(f"select batch_id from {self.table('batches')} where batch_id in (select unnest(?))",
                        [list(batch_ids)])
        return {r[0] for r in rows}

    def foreign_batch_ids(self, submission_id: str) -> set[str]:
        rows = self.run(f"select batch_id from {self.table('foreign_batches')} where submission_id = ?",
                        [submission_id])
        return {r[0] for r in rows}

    def record_foreign(self, submission_id: str, batch_id: str, note: str) -> None:
        self.run(
            f"insert or ignore into {self.table('foreign_batches')} values (?, ?, ?, ?)",
            [submission_id, batch_id, utcnow(), note],
        )

    # -- batches --------------------------------------------------------------------------------
    def update_batch(self, batch) -> dict[str, int]:
        """Record a batch as the API shows it; return its counts of the rows' requests (marker taken out).

        The marker is taken out of the first non-empty count (processing while in progress, usually
        succeeded once ended); harvest moves it to the count its result really is in.
        """
        has_marker = self.run(f"select marker_id is not null from {self.table('submissions')} s join "
                              f"{self.table('batches')} b using (submission_id) where b.batch_id = ?", [batch.id]) == [(True,)]
        counts, marker_in = row_counts(batch.request_counts, has_marker)
        self.run(
            f"update {self.table('batches')} set processing_status = ?, created_at = ?, expires_at = ?, "
            "ended_at = ?, cancel_initiated_at = ?, archived_at = ?, n_processing = ?, n_succeeded = ?, "
            "n_errored = ?, n_canceled = ?, n_expired = ?, polled_at = ?, marker_in = ? where batch_id = ?",
            [
                batch.processing_status,
                as_utc(batch.created_at),
                as_utc(batch.expires_at),
                as_utc(batch.ended_at),
                as_utc(batch.cancel_initiated_at),
                as_utc(batch.archived_at),
                *counts.values(),
                utcnow(),
                marker_in,
                batch.id,
            ],
        )
        return counts

    def move_marker_count(self, batch_id: str, actual: str) -> None:
        """Harvest knows the marker's real result: take it out of that count instead (see update_batch)."""
        if actual not in _COUNTS:
            return
        rows = self.run(f"select marker_in from {self.table('batches')} where batch_id = ?", [batch_id])
        was = rows[0][0] if rows else None
        if was is None or was == actual:
            return
        self.run(
            f"update {self.table('batches')} set n_{was} = n_{was} + 1, n_{actual} = n_{actual} - 1, marker_in = ? "
            "where batch_id = ?", [actual, batch_id])

    def mark_canceled_by_user(self, batch_id: str) -> None:
        self.run(f"update {self.table('batches')} set canceled_by_user = true where batch_id = ?", [batch_id])

    def unharvested_batches(self) -> list[tuple[str, str]]:
        """(batch_id, processing_status) of this model's batches whose results are not yet in state."""
        return self.run(
            f"select batch_id, processing_status from {self.table('batches')} "
            "where model_id = ? and harvested_at is null and kind = 'batch' order by created_at",
            [self.model_id],
        )

    def unfinished_sync_batches(self) -> list[str]:
        """Synchronous runs that stopped before recording every answer (a crash mid-run)."""
        rows = self.run(
            f"select batch_id from {self.table('batches')} where model_id = ? and harvested_at is null and kind = 'sync'",
            [self.model_id],
        )
        return [r[0] for r in rows]
