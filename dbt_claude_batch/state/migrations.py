"""The state schema, version by version: the DDL that creates or upgrades it, and what it must hold.

`State.ensure` applies the missing versions in order, each in one transaction, and records them in
`state_version`; a database at a newer version than `SCHEMA_VERSION` is refused.
"""

from __future__ import annotations

SCHEMA_VERSION = 17

# The usage of the parts a key bought itself, shaped as an outcome row for `pricing.cost_sql`.
PAID_TYPE = ("struct(shared_from varchar, service_tier varchar, input_tokens bigint, output_tokens bigint, "
             "cache_creation_input_tokens bigint, cache_creation_1h_input_tokens bigint, "
             "cache_read_input_tokens bigint)")

MIGRATIONS: dict[int, list[str]] = {
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
        "alter table {s}.submissions add column est_cost_usd double",  # committed while in flight
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
    # v5: each key's latest successful answer, kept up to date as outcomes are recorded (answers.py),
    # so results are a scan rather than an aggregation over every past request. No primary key: an
    # index over millions of keys would have to fit in memory. Existing models fill theirs on their
    # next run (`models.answers_ready`).
    5: [
        """create table if not exists {s}.answers (
            model_id varchar not null,
            custom_id varchar not null,     -- the key's custom_id
            attempt integer not null,
            key_json json not null,
            request_hash varchar,
            input_hash varchar,             -- of the answered request
            latest_attempt integer,         -- the key's newest attempt when this row was written
            output_text varchar,            -- the answer (a key answered in one part)
            output_parts varchar[],         -- the parts' answers, in order (a split key)
            output_json json,
            stop_reason varchar,
            answered_model varchar,
            input_tokens bigint,
            output_tokens bigint,
            cache_creation_input_tokens bigint,
            cache_creation_1h_input_tokens bigint,
            cache_read_input_tokens bigint,
            service_tier varchar,
            batch_id varchar,
            completed_at timestamp,
            harvest_seq bigint,             -- the answer's own outcome
            seq bigint,                     -- the key's newest outcome of any kind
            parts integer,
            shared_from varchar)""",
        "alter table {s}.models add column answers_ready boolean default false",
        "alter table {s}.batches add column answers_at timestamp",  # when its keys' answers were brought up to date
    ],
    # v6: held answers less results-table rows when a run last found no held answer of a source key
    # missing from the table (results.restore_sql): while both counts keep that difference and the
    # source its quiet digest, a run with nothing to do needs no anti-join to know nothing is missing.
    6: [
        "alter table {s}.models add column results_gap bigint",
    ],
    # v7: a PDF over the page limit is cut into parts (run/parts.py), each a request of its own: its
    # pages, and its own request hash, by which a held part is reused when its key is sent again.
    7: [
        "alter table {s}.requests add column if not exists part_hash varchar",
        "alter table {s}.requests add column if not exists first_page integer",
        "alter table {s}.requests add column if not exists last_page integer",
        "alter table {s}.answers add column if not exists part_pages json",  # a cut key's parts and their pages
    ],
    # v8: answers from other states (answer_sources.py): where a reused answer came from, and answers
    # imported from a Parquet export, each under its exact request hash.
    8: [
        "alter table {s}.outcomes add column if not exists reused_source varchar",
        """create table if not exists {s}.imported_answers (
            request_hash varchar not null,  -- sha256 of the rendered request params: the only proof
            model varchar,                  -- the batch model (schema.identifier) it was exported from
            answer json not null,           -- output_text, output_json, stop_reason, answered_model, ...
            usage json,                     -- the tokens it cost when it was bought
            source varchar not null,        -- the file (and state) it came from
            imported_at timestamp not null)""",
    ],
    # v9: attachments uploaded once through the Files API (run/uploads.py): one row per upload, from its
    # intent on (status uploading | held | deleted | refused | abandoned), and which request hashes of
    # which model use which content, so a file is deleted only when no model needs it.
    9: [
        """create table if not exists {s}.uploaded_files (
            upload_id varchar primary key,
            sha256 varchar not null,
            filename varchar not null,
            model_id varchar not null,
            n_bytes bigint not null,
            media_type varchar not null,
            status varchar not null,
            file_id varchar,
            intent_at timestamp not null,
            uploaded_at timestamp,
            deleted_at timestamp,
            note varchar)""",
        """create table if not exists {s}.upload_uses (
            sha256 varchar not null,
            model_id varchar not null,
            request_hash varchar not null,
            recorded_at timestamp not null,
            primary key (sha256, model_id, request_hash))""",
    ],
    # v10: each request's components (template, system, params, model, row text, attachments), hashed,
    # so a plan says *why* a row would be bought again; and the plans that `claude_batch_plan` recorded.
    10: [
        "alter table {s}.requests add column if not exists components json",
        """create table if not exists {s}.plans (
            plan_id varchar primary key,
            model_id varchar not null,
            planned_at timestamp not null,
            schema_version integer not null,
            plan json not null)""",
    ],
    # v11: bounded state and erasure (retention.py, erasure.py): per-day spend kept when old outcomes are
    # compacted away; when a model was last compacted; batches deleted from the API after harvest; keys
    # erased by `forget` (a hash of the key, no content); rendered prompts kept on request (store_prompts).
    11: [
        """create table if not exists {s}.daily_spend (
            day date not null,
            model_id varchar not null,
            answered_model varchar,
            requests_billed bigint,
            answers_not_bought bigint,
            input_tokens bigint,
            output_tokens bigint,
            cache_creation_input_tokens bigint,
            cache_read_input_tokens bigint,
            billed_usd double,
            saved_usd double,
            compacted_at timestamp not null)""",
        "alter table {s}.models add column if not exists compacted_at timestamp",
        "alter table {s}.batches add column if not exists api_deleted_at timestamp",
        """create table if not exists {s}.erased (
            model_id varchar not null,
            key_hash varchar not null,      -- sha256 of the key's custom_id: no content
            input_hash varchar,             -- the inputs it had: the same row in the source is not sent again
            erased_at timestamp not null)""",
        """create table if not exists {s}.prompts (
            model_id varchar not null,
            custom_id varchar not null,     -- the request's custom_id (a part of a split key has its own)
            key_custom_id varchar not null,
            request_hash varchar not null,
            params json not null,           -- the request as sent
            recorded_at timestamp not null)""",
    ],
    # v12: the cost of runs compaction removed, per model, so the status snapshot's spend (a sum over
    # `runs`, cheap enough for every poll) keeps the whole bill.
    12: ["alter table {s}.models add column if not exists compacted_runs_usd double"],
    # v13: a prompt comparison sent as a batch (`claude_batch_compare_via: batch`, run/compare_batch.py):
    # its submission is marked `purpose = 'compare'` (the main pipeline never settles or harvests it),
    # and the sampled keys wait here, with the held answer they are compared with, until it is collected.
    13: [
        "alter table {s}.submissions add column if not exists purpose varchar default 'rows'",  # rows | compare
        """create table if not exists {s}.comparisons (
            compare_id varchar primary key,
            model_id varchar not null,
            submission_id varchar not null, -- its newest create's intent (a refused create is retried anew)
            created_at timestamp not null,
            held_keys bigint not null,
            sampled_keys bigint not null,
            collected_at timestamp,
            note varchar)""",
        """create table if not exists {s}.compare_requests (
            compare_id varchar not null,
            model_id varchar not null,
            custom_id varchar not null,
            key_json varchar not null,
            stratum varchar,
            request_changed boolean not null,
            sent boolean not null,
            old_request_hash varchar,
            new_request_hash varchar,
            old_output varchar,
            prompt varchar,
            local_result json,              -- a row not sent (template error, empty prompt)
            primary key (compare_id, custom_id))""",
    ],
    # v14: what a key in parts paid when only some of its parts were bought (the others' answers held):
    # results price that, not every part's usage (answers.py). Models holding keys in parts rebuild their
    # answers on their next run; the others' answers are unchanged. An erased key's row digest (the
    # digests of the values its prompt read and of its attachments, whatever the template: erasure.py).
    14: [
        "alter table {s}.erased add column if not exists row_digest varchar",
        f"alter table {{s}}.answers add column if not exists paid {PAID_TYPE}",
        "update {s}.models set answers_ready = false where model_id in "
        "(select model_id from {s}.answers where parts > 1)",
    ],
    # v15: the output_schema a submission's requests asked for (its JSON text, or 'none'): answers are
    # checked against it when harvested, not against the settings of the run that harvests them. NULL
    # for submissions recorded before (checked against the run's settings, as then).
    15: ["alter table {s}.submissions add column if not exists output_schema varchar"],
    # v16: the sha256 of a request as it was sent, where that differs from its request hash (a retry at
    # an escalated max_tokens): once max_tokens is raised to that value, the new request is the one sent
    # and its held answer is kept, not bought again. NULL where the request went as rendered.
    16: ["alter table {s}.requests add column if not exists sent_hash varchar"],
    # v17: an erased key's last request hash: a row whose attachments' stamps changed (a touched file) is
    # rendered again, and when its request is the erased one it is still not sent (erasure.py).
    17: ["alter table {s}.erased add column if not exists request_hash varchar"],
}

# Columns every state table must have at the current version; a table in the state schema without
# them is not ours (or was damaged), and the run stops before touching it.
EXPECTED_COLUMNS = {
    "models": ("model_id", "key_columns", "key_types", "updated_at", "quiet_digest", "answers_ready",
               "results_gap", "compacted_at", "compacted_runs_usd"),
    "submissions": ("submission_id", "model_id", "status", "batch_id", "n_requests", "intent_at", "marker_id",
                    "est_cost_usd", "purpose", "output_schema"),
    "requests": ("submission_id", "model_id", "custom_id", "key_json", "input_hash", "request_hash", "attempt",
                 "key_custom_id", "part", "parts", "max_tokens", "dedup_of", "part_hash", "first_page", "last_page",
                 "components", "sent_hash"),
    "batches": ("batch_id", "model_id", "submission_id", "processing_status", "n_submitted", "kind",
                "harvested_at", "api_deleted_at"),
    "outcomes": ("batch_id", "custom_id", "model_id", "result_type", "harvest_seq", "shared_from", "reused_from",
                 "reused_source"),
    "input_aliases": ("model_id", "custom_id", "input_hash", "request_hash"),
    "foreign_batches": ("submission_id", "batch_id", "checked_at"),
    "runs": ("run_id", "model_id", "started_at"),
    "answers": ("model_id", "custom_id", "attempt", "key_json", "output_text", "output_parts", "harvest_seq", "seq",
                "part_pages", "paid"),
    "imported_answers": ("request_hash", "model", "answer", "usage", "source", "imported_at"),
    "uploaded_files": ("upload_id", "sha256", "filename", "status", "file_id", "n_bytes", "deleted_at"),
    "upload_uses": ("sha256", "model_id", "request_hash"),
    "plans": ("plan_id", "model_id", "planned_at", "plan"),
    "daily_spend": ("day", "model_id", "answered_model", "billed_usd", "saved_usd"),
    "erased": ("model_id", "key_hash", "input_hash", "erased_at", "row_digest", "request_hash"),
    "prompts": ("model_id", "custom_id", "key_custom_id", "request_hash", "params"),
    "comparisons": ("compare_id", "model_id", "submission_id", "held_keys", "sampled_keys", "collected_at"),
    "compare_requests": ("compare_id", "model_id", "custom_id", "key_json", "request_changed", "sent",
                         "old_output", "local_result"),
}
