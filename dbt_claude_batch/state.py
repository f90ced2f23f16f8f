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

SCHEMA_VERSION = 4

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
    # v4: a model's identity is `schema.identifier`, without the catalog name, which DuckDB takes from
    # the file name (copying or renaming the file must not lose the state); every batch create carries
    # a marker request whose custom_id proves whose batch it is; candidates that lack it are foreign;
    # answers held are reused by request hash; one row per run.
    4: [
        *[
            f"update {{s}}.{table} set model_id = array_to_string(string_split(model_id, '.')[-2:], '.') "
            "where len(string_split(model_id, '.')) > 2"
            for table in ("submissions", "requests", "batches", "outcomes")
        ],
        # The same model seen under two file names collapses to one: keep the most recent record.
        """delete from {s}.models where rowid not in (
            select arg_max(rowid, updated_at) from {s}.models
            group by array_to_string(string_split(model_id, '.')[-2:], '.'))""",
        "update {s}.models set model_id = array_to_string(string_split(model_id, '.')[-2:], '.') "
        "where len(string_split(model_id, '.')) > 2",
        """create table {s}.input_aliases_v4 as
            select distinct on (m, custom_id, input_hash)
                array_to_string(string_split(model_id, '.')[-2:], '.') as m, custom_id, input_hash, request_hash
            from {s}.input_aliases""",
        "drop table {s}.input_aliases",
        """create table {s}.input_aliases (
            model_id varchar not null,
            custom_id varchar not null,
            input_hash varchar not null,
            request_hash varchar not null,
            primary key (model_id, custom_id, input_hash))""",
        "insert into {s}.input_aliases select * from {s}.input_aliases_v4",
        "drop table {s}.input_aliases_v4",
        "alter table {s}.submissions add column marker_id varchar",
        """create table if not exists {s}.foreign_batches (
            submission_id varchar not null,
            batch_id varchar not null,
            checked_at timestamp not null,
            note varchar,
            primary key (submission_id, batch_id))""",
        "alter table {s}.outcomes add column reused_from varchar",  # batch_id of the answer reused
        # The n_* counts are the rows' requests: the marker is taken out of the count it is in (this column).
        "alter table {s}.batches add column marker_in varchar",
        """create table if not exists {s}.runs (
            run_id varchar primary key,
            model_id varchar not null,
            started_at timestamp not null,
            finished_at timestamp,
            n_source_rows bigint,
            n_submitted bigint,
            n_harvested bigint,
            n_failed bigint,
            n_reused bigint,
            cost_usd double,
            outcome varchar,
            note varchar)""",
    ],
}

# Columns every state table must have at the current version; a table in the state schema without
# them is not ours (or was damaged), and the run stops before touching it.
EXPECTED_COLUMNS = {
    "models": ("model_id", "key_columns", "key_types", "updated_at", "quiet_digest"),
    "submissions": ("submission_id", "model_id", "status", "batch_id", "n_requests", "intent_at", "marker_id"),
    "requests": ("submission_id", "model_id", "custom_id", "key_json", "input_hash", "request_hash", "attempt",
                 "key_custom_id", "part", "parts", "max_tokens", "dedup_of"),
    "batches": ("batch_id", "model_id", "submission_id", "processing_status", "n_submitted", "kind",
                "harvested_at"),
    "outcomes": ("batch_id", "custom_id", "model_id", "result_type", "harvest_seq", "shared_from", "reused_from"),
    "input_aliases": ("model_id", "custom_id", "input_hash", "request_hash"),
    "foreign_batches": ("submission_id", "batch_id", "checked_at"),
    "runs": ("run_id", "model_id", "started_at"),
}

_ensure_lock = threading.Lock()
_COUNTS = ("processing", "succeeded", "errored", "canceled", "expired")


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
                        for ddl in _MIGRATIONS[version]:
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
    def record_intent(self, submission_id: str, n_requests: int, n_bytes: int, requests_sql: str,
                      marker_id: str | None = None) -> None:
        """Record a submission before its create call, with its requests, in one transaction."""
        with self.transaction():
            self.run(
                f"insert into {self.table('submissions')} (submission_id, model_id, status, n_requests, n_bytes, "
                "intent_at, marker_id) values (?, ?, 'creating', ?, ?, ?, ?)",
                [submission_id, self.model_id, n_requests, n_bytes, utcnow(), marker_id],
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
        """Submissions whose create may or may not have made a batch: (id, n_requests, intent_at, marker_id)."""
        return self.run(
            f"select submission_id, n_requests, intent_at, marker_id from {self.table('submissions')} "
            "where model_id = ? and status in ('creating', 'in_doubt') order by intent_at",
            [self.model_id],
        )

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
        counts = {k: getattr(batch.request_counts, k) for k in _COUNTS}
        marker_in = None
        if self.run(f"select marker_id is not null from {self.table('submissions')} s join {self.table('batches')} b "
                    "using (submission_id) where b.batch_id = ?", [batch.id]) == [(True,)]:
            marker_in = next((k for k in _COUNTS if counts[k] > 0), None)
            if marker_in:
                counts[marker_in] -= 1
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
