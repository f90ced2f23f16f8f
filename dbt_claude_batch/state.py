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
from typing import Any, Iterator, Sequence

from dbt_claude_batch.errors import StateError
from dbt_claude_batch.identifiers import literal, qualified

SCHEMA_VERSION = 3

_MIGRATIONS: dict[int, list[str]] = {
    1: [
        """create table if not exists {s}.models (
            model_id varchar primary key,
            key_columns json not null,
            key_types json not null,
            updated_at timestamp not null)""",
        """create table if not exists {s}.submissions (
            submission_id varchar primary key,
            model_id varchar not null,
            status varchar not null,        -- creating | submitted | in_doubt | rejected | abandoned
            batch_id varchar,
            n_requests integer not null,
            n_bytes bigint not null,
            intent_at timestamp not null,
            settled_at timestamp,
            note varchar)""",
        """create table if not exists {s}.requests (
            submission_id varchar not null,
            model_id varchar not null,
            custom_id varchar not null,
            key_json json not null,
            input_hash varchar not null,    -- SQL digest of the row's prompt inputs + settings
            request_hash varchar not null,  -- sha256 of the rendered request params
            attempt integer not null,
            model varchar,
            primary key (submission_id, custom_id))""",
        """create table if not exists {s}.batches (
            batch_id varchar primary key,
            model_id varchar not null,
            submission_id varchar not null,
            processing_status varchar,
            created_at timestamp,
            expires_at timestamp,
            ended_at timestamp,
            cancel_initiated_at timestamp,
            archived_at timestamp,
            n_processing integer,
            n_succeeded integer,
            n_errored integer,
            n_canceled integer,
            n_expired integer,
            n_submitted integer not null,
            canceled_by_user boolean not null default false,
            polled_at timestamp,
            harvested_at timestamp,
            result_lines integer,
            reconciled boolean,
            reconcile_note varchar)""",
        """create table if not exists {s}.outcomes (
            batch_id varchar not null,
            custom_id varchar not null,
            model_id varchar not null,
            result_type varchar not null,   -- succeeded | errored | canceled | expired | missing
            error_type varchar,
            error_message varchar,
            canceled_by_user boolean not null default false,
            output_text varchar,
            stop_reason varchar,
            answered_model varchar,
            input_tokens bigint,
            output_tokens bigint,
            cache_creation_input_tokens bigint,
            cache_creation_1h_input_tokens bigint,
            cache_read_input_tokens bigint,
            message json,
            harvested_at timestamp not null,
            primary key (batch_id, custom_id))""",
        # Inputs that changed but render to an already-known request: remembered so the next run
        # needs no rendering to know the row is unchanged.
        """create table if not exists {s}.input_aliases (
            model_id varchar not null,
            custom_id varchar not null,
            input_hash varchar not null,
            request_hash varchar not null,
            primary key (model_id, custom_id, input_hash))""",
    ],
    # v2: synchronous calls, de-duplication, split requests, max_tokens escalation, structured output.
    2: [
        "alter table {s}.requests add column key_custom_id varchar",  # the key's id; custom_id is per part
        "update {s}.requests set key_custom_id = custom_id where key_custom_id is null",
        "alter table {s}.requests add column part integer default 1",
        "alter table {s}.requests add column parts integer default 1",
        "alter table {s}.requests add column max_tokens integer",
        "alter table {s}.requests add column dedup_of varchar",  # custom_id of the identical request sent instead
        "alter table {s}.batches add column kind varchar default 'batch'",  # batch | sync
        "alter table {s}.batches add column n_deduplicated integer default 0",
        "alter table {s}.outcomes add column service_tier varchar",
        "alter table {s}.outcomes add column shared_from varchar",  # de-duplicated: the custom_id whose answer this is
        "alter table {s}.outcomes add column output_json json",
    ],
    # v3: the digest of a source that left nothing to do, so an unchanged source skips planning; a
    # monotonic harvest sequence, so a results table knows which outcomes it has already seen.
    3: [
        "alter table {s}.models add column quiet_digest varchar",
        "create sequence if not exists {s}.outcome_seq",
        "alter table {s}.outcomes add column harvest_seq bigint",
    ],
}

_ensure_lock = threading.Lock()


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

    def __init__(self, cursor, schema: str, model_id: str):
        self.cursor = cursor
        self.schema = schema
        self.model_id = model_id

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
        """Create or upgrade the state schema; idempotent and safe across dbt threads."""
        s = qualified(self.schema)
        with _ensure_lock:
            self.run(f"create schema if not exists {s}")
            self.run(
                f"create table if not exists {s}.state_version (version integer not null, applied_at timestamp not null)"
            )
            current = self.run(f"select coalesce(max(version), 0) from {s}.state_version")[0][0]
            if current > SCHEMA_VERSION:
                raise StateError(
                    f"State schema {self.schema} is at version {current}, newer than this dbt-claude-batch "
                    f"understands ({SCHEMA_VERSION}): upgrade the dbt-claude-batch package."
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                with self.transaction():
                    for ddl in _MIGRATIONS[version]:
                        self.run(ddl.format(s=s))
                    self.run(f"insert into {s}.state_version values (?, ?)", [version, utcnow()])

    def record_model(self, key_columns: list[str], key_types: dict[str, str]) -> None:
        self.run(
            f"insert into {self.table('models')} (model_id, key_columns, key_types, updated_at) values (?, ?, ?, ?) "
            "on conflict (model_id) do update set key_columns = excluded.key_columns, "
            "key_types = excluded.key_types, updated_at = excluded.updated_at",
            [self.model_id, json.dumps(key_columns), json.dumps(key_types), utcnow()],
        )

    def quiet_digest(self) -> str | None:
        rows = self.run(f"select quiet_digest from {self.table('models')} where model_id = ?", [self.model_id])
        return rows[0][0] if rows else None

    def set_quiet_digest(self, digest: str | None) -> None:
        self.run(f"update {self.table('models')} set quiet_digest = ? where model_id = ?", [digest, self.model_id])

    # -- submissions ----------------------------------------------------------------------------
    def record_intent(self, submission_id: str, n_requests: int, n_bytes: int, requests_sql: str) -> None:
        """Record a submission before its create call, with its requests, in one transaction."""
        with self.transaction():
            self.run(
                f"insert into {self.table('submissions')} (submission_id, model_id, status, n_requests, n_bytes, intent_at) "
                "values (?, ?, 'creating', ?, ?, ?)",
                [submission_id, self.model_id, n_requests, n_bytes, utcnow()],
            )
            self.run(
                f"insert into {self.table('requests')} (submission_id, model_id, custom_id, key_json, input_hash, "
                "request_hash, attempt, model, key_custom_id, part, parts, max_tokens, dedup_of) "
                "select ?, ?, custom_id, key_json, input_hash, request_hash, attempt, request_model, key_custom_id, "
                f"part, parts, max_tokens, dedup_of from ({requests_sql})",
                [submission_id, self.model_id],
            )

    def mark_submitted(self, submission_id: str, batch, kind: str = "batch") -> None:
        """Record the batch id the moment create returns (or a listing adopts it)."""
        with self.transaction():
            self.run(
                f"update {self.table('submissions')} set status = 'submitted', batch_id = ?, settled_at = ? "
                "where submission_id = ?",
                [batch.id, utcnow(), submission_id],
            )
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

    def unsettled_submissions(self) -> list[tuple]:
        """Submissions whose create may or may not have made a batch: (id, n_requests, intent_at, status)."""
        return self.run(
            f"select submission_id, n_requests, intent_at, status from {self.table('submissions')} "
            "where model_id = ? and status in ('creating', 'in_doubt') order by intent_at",
            [self.model_id],
        )

    # -- batches --------------------------------------------------------------------------------
    def update_batch(self, batch) -> None:
        counts = batch.request_counts
        self.run(
            f"update {self.table('batches')} set processing_status = ?, created_at = ?, expires_at = ?, "
            "ended_at = ?, cancel_initiated_at = ?, archived_at = ?, n_processing = ?, n_succeeded = ?, "
            "n_errored = ?, n_canceled = ?, n_expired = ?, polled_at = ? where batch_id = ?",
            [
                batch.processing_status,
                as_utc(batch.created_at),
                as_utc(batch.expires_at),
                as_utc(batch.ended_at),
                as_utc(batch.cancel_initiated_at),
                as_utc(batch.archived_at),
                counts.processing,
                counts.succeeded,
                counts.errored,
                counts.canceled,
                counts.expired,
                utcnow(),
                batch.id,
            ],
        )

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
