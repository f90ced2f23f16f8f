"""Results of ended batches: raw bytes to a file, loaded by DuckDB, joined on custom_id, reconciled.

The results file is never decoded line by line in Python (the SDK's decoder is ~13x slower than
DuckDB's reader and fails on blank lines). Lines are matched to requests by custom_id only, within the
submission that made the batch; a submitted request with no line becomes an outcome of kind `missing`.
Everything one batch contributes is written in one transaction, so a crash leaves it either fully
harvested or not at all, and the next run harvests it again.
"""

from __future__ import annotations

import os
import tempfile

import anthropic
import httpx2

from dbt_claude_batch.identifiers import literal
from dbt_claude_batch.log import logger
from dbt_claude_batch.state import State, utcnow

_RESULT_COLUMNS = "{'custom_id': 'VARCHAR', 'result': 'JSON'}"
_DOWNLOAD_CHUNK = 1 << 20


class DownloadIncomplete(Exception):
    """The results download broke off; the batch stays unharvested and is fetched again."""


def download_results(client: anthropic.Anthropic, batch_id: str, path: str) -> int:
    """Stream the batch's results file to `path` as raw bytes; return the number of bytes."""
    size = 0
    last = b""
    try:
        with client.messages.batches.with_streaming_response.results(batch_id) as response:
            with open(path, "wb") as out:
                for chunk in response.iter_bytes(_DOWNLOAD_CHUNK):
                    if chunk:
                        out.write(chunk)
                        size += len(chunk)
                        last = chunk[-1:]
    except (httpx2.HTTPError, anthropic.APIConnectionError) as exc:
        raise DownloadIncomplete(f"results download of {batch_id} broke off after {size} bytes: {exc}") from exc
    if size and last != b"\n":
        # Every line of a complete results file ends with "\n": anything else was cut short.
        raise DownloadIncomplete(f"results download of {batch_id} ended mid-line after {size} bytes")
    return size


def harvest_batch(client: anthropic.Anthropic, state: State, batch_id: str, archived: bool) -> bool:
    """Harvest one ended batch into the outcomes table. Returns False if it must be tried again later."""
    row = state.run(
        f"select submission_id, n_submitted, canceled_by_user, coalesce(n_succeeded,0) + coalesce(n_errored,0) "
        f"+ coalesce(n_canceled,0) + coalesce(n_expired,0) + coalesce(n_processing,0) "
        f"from {state.table('batches')} where batch_id = ?",
        [batch_id],
    )[0]
    submission_id, n_submitted, canceled_by_user, n_counted = row
    if archived:
        _write_outcomes(state, batch_id, submission_id, None, canceled_by_user, n_submitted, n_counted, archived=True)
        return True
    with tempfile.TemporaryDirectory(prefix="dbt_claude_batch_") as tmp:
        path = os.path.join(tmp, f"{batch_id}.jsonl")
        try:
            size = download_results(client, batch_id, path)
        except anthropic.NotFoundError:
            logger.warning(f"results of {batch_id} are gone (archived); its requests become failures to resubmit")
            _write_outcomes(state, batch_id, submission_id, None, canceled_by_user, n_submitted, n_counted, archived=True)
            return True
        except DownloadIncomplete as exc:
            logger.warning(f"{exc}; it will be downloaded again")
            return False
        _write_outcomes(state, batch_id, submission_id, path if size else None, canceled_by_user, n_submitted, n_counted)
    return True


def _write_outcomes(state: State, batch_id, submission_id, path, canceled_by_user, n_submitted, n_counted, archived=False):
    outcomes, requests, batches = state.table("outcomes"), state.table("requests"), state.table("batches")
    now = utcnow()
    state.run("begin transaction")
    try:
        if path is not None:
            state.run(
                "create or replace temp table cb_lines as select custom_id, result "
                f"from read_json({literal(path)}, format = 'newline_delimited', columns = {_RESULT_COLUMNS})"
            )
        else:
            state.run("create or replace temp table cb_lines (custom_id varchar, result json)")
        state.run(
            f"""insert or ignore into {outcomes}
            select ?, q.custom_id, q.model_id,
                case when l.result->>'$.type' in ('succeeded', 'errored', 'canceled', 'expired')
                     then l.result->>'$.type' else 'errored' end,
                l.result->>'$.error.error.type',
                l.result->>'$.error.error.message',
                ? and l.result->>'$.type' = 'canceled',
                array_to_string(json_extract_string(l.result, '$.message.content[*].text'), ''),
                l.result->>'$.message.stop_reason',
                l.result->>'$.message.model',
                (l.result->>'$.message.usage.input_tokens')::bigint,
                (l.result->>'$.message.usage.output_tokens')::bigint,
                (l.result->>'$.message.usage.cache_creation_input_tokens')::bigint,
                (l.result->>'$.message.usage.cache_creation.ephemeral_1h_input_tokens')::bigint,
                (l.result->>'$.message.usage.cache_read_input_tokens')::bigint,
                l.result->'$.message',
                ?
            from cb_lines l join {requests} q on q.custom_id = l.custom_id and q.submission_id = ?""",
            [batch_id, bool(canceled_by_user), now, submission_id],
        )
        reason = (
            "results no longer available from the API (archived 29 days after the batch was created)"
            if archived
            else "the batch ended but its results file has no line for this request"
        )
        state.run(
            f"""insert or ignore into {outcomes} (batch_id, custom_id, model_id, result_type, error_type,
                error_message, harvested_at)
            select ?, q.custom_id, q.model_id, 'missing', ?, ?, ?
            from {requests} q
            where q.submission_id = ? and q.custom_id not in (select custom_id from cb_lines where custom_id is not null)""",
            [batch_id, "results_archived" if archived else "missing_result", reason, now, submission_id],
        )
        lines, matched, distinct = state.run(
            f"""select count(*), count(q.custom_id), count(distinct l.custom_id)
            from cb_lines l left join {requests} q on q.custom_id = l.custom_id and q.submission_id = ?""",
            [submission_id],
        )[0]
        notes = []
        if n_counted != n_submitted:
            notes.append(f"request_counts sum to {n_counted}, {n_submitted} submitted")
        if not archived and lines != n_submitted:
            notes.append(f"results file has {lines} lines, {n_submitted} submitted")
        if matched != lines:
            notes.append(f"{lines - matched} result lines with unknown custom_id ignored")
        if distinct != lines:
            notes.append(f"{lines - distinct} duplicate result lines ignored")
        if archived:
            notes.append("results archived before harvest")
        state.run(
            f"update {batches} set harvested_at = ?, result_lines = ?, reconciled = ?, reconcile_note = ? where batch_id = ?",
            [now, lines, not notes, "; ".join(notes) or None, batch_id],
        )
        state.run("drop table if exists cb_lines")
        state.run("commit")
    except Exception:
        state.run("rollback")
        raise
    if notes:
        logger.warning(f"batch {batch_id} did not reconcile: {'; '.join(notes)}")
