"""Results of ended batches: raw bytes to a file, loaded by DuckDB, joined on custom_id, reconciled.

The results file is never decoded line by line in Python (the SDK's decoder is ~13x slower than
DuckDB's reader and fails on blank lines). Lines are matched to requests by custom_id only, within the
submission that made the batch; a submitted request with no line becomes an outcome of kind `missing`.
Succeeded answers cut off by `max_tokens` become `truncated`, refusals `refused`, and answers that
fail `output_schema` `invalid_output`. Rows that shared a de-duplicated request get a copy of its
outcome. Everything one batch contributes is written in one transaction: a crash leaves it either
fully harvested or not at all, and the next run harvests it again. The answers table is brought up
to date once per round of harvests (`answers.refresh_pending`), so a round of many batches reads the
history once.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Mapping

from dbt_claude_batch.base.identifiers import literal
from dbt_claude_batch.base.log import logger
from dbt_claude_batch.run.outputs import validate_outputs
from dbt_claude_batch.run.polling import is_passing
from dbt_claude_batch.state.state import State, utcnow
from dbt_claude_batch.state.workdir import scratch

# The results file is read with a declared schema: DuckDB parses each line once, straight into typed
# columns, with no JSON column to extract from afterwards. Fields not named here are skipped.
_USAGE = ("STRUCT(input_tokens BIGINT, output_tokens BIGINT, cache_creation_input_tokens BIGINT, "
          "cache_read_input_tokens BIGINT, cache_creation STRUCT(ephemeral_1h_input_tokens BIGINT), "
          "service_tier VARCHAR)")
_RESULT_TYPE = (
    "STRUCT(type VARCHAR, message STRUCT(model VARCHAR, stop_reason VARCHAR, "
    f"content STRUCT(type VARCHAR, text VARCHAR)[], usage {_USAGE}), "
    "error STRUCT(error STRUCT(type VARCHAR, message VARCHAR)))"
)
_RESULT_COLUMNS = "{'custom_id': 'VARCHAR', 'result': " + literal(_RESULT_TYPE) + "}"
# One row per results line, already flattened: what finish_batch counts and load_lines inserts.
_LINES_SQL = """select custom_id, result.type as result_type,
       coalesce(array_to_string([c.text for c in result.message.content], ''), '') as text,
       result.message.stop_reason as stop_reason, result.message.model as answered_model,
       result.error.error.type as api_error_type, result.error.error.message as api_error_message,
       result.message.usage.input_tokens as input_tokens, result.message.usage.output_tokens as output_tokens,
       result.message.usage.cache_creation_input_tokens as cache_creation_input_tokens,
       result.message.usage.cache_creation.ephemeral_1h_input_tokens as cache_creation_1h_input_tokens,
       result.message.usage.cache_read_input_tokens as cache_read_input_tokens,
       result.message.usage.service_tier as service_tier
from read_json({path}, format = 'newline_delimited', columns = {columns})"""
_EMPTY_LINES = ("create temp table cb_lines (custom_id varchar, result_type varchar, text varchar, stop_reason varchar, "
                "answered_model varchar, api_error_type varchar, api_error_message varchar, input_tokens bigint, "
                "output_tokens bigint, cache_creation_input_tokens bigint, cache_creation_1h_input_tokens bigint, "
                "cache_read_input_tokens bigint, service_tier varchar)")
_DOWNLOAD_CHUNK = 1 << 20
_OUTCOME_COLUMNS = (
    "batch_id, custom_id, model_id, result_type, error_type, error_message, canceled_by_user, output_text, "
    "stop_reason, answered_model, input_tokens, output_tokens, cache_creation_input_tokens, "
    "cache_creation_1h_input_tokens, cache_read_input_tokens, message, harvested_at, service_tier, shared_from, "
    "output_json, harvest_seq"
)


class DownloadIncomplete(Exception):
    """The results download broke off; the batch stays unharvested and is fetched again."""


def download_results(client, batch_id: str, path: str) -> int:
    """Stream the batch's results file to `path` as raw bytes; return the number of bytes."""
    import anthropic
    import httpx2

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
        raise DownloadIncomplete(f"results download of {batch_id} broke off ({size} bytes saved before the break; "
                                 f"{exc})") from exc
    if not size:
        # An ended batch has a result line per request (its marker's at least): an empty body is a broken
        # download, not a batch whose every request went missing (which would buy them all again).
        raise DownloadIncomplete(f"results download of {batch_id} was empty")
    if last != b"\n":
        # Every line of a complete results file ends with "\n": anything else was cut short.
        raise DownloadIncomplete(f"results download of {batch_id} ended mid-line after {size} bytes")
    return size


def harvest_ended(client, state: State, ended: list[tuple[str, bool]],
                  output_schema: Mapping[str, Any] | None = None, keep_message: bool = False,
                  warned: set[str] | None = None) -> None:
    """Harvest ended batches, in order, into the outcomes table.

    Each batch's results download on a second thread while the batch before it loads: the network and
    DuckDB overlap, and at most two results files are on disk at once. A download that breaks off
    leaves its batch unharvested (the next poll fetches it again); the others go on. `warned`: as in
    `polling.refresh`, the batches whose passing server error this run has logged already.
    """
    import anthropic

    warned = set() if warned is None else warned

    with scratch() as tmp, ThreadPoolExecutor(max_workers=1, thread_name_prefix="dbt_claude_batch-download") as pool:
        def fetch(batch_id: str) -> tuple[str, int]:
            path = os.path.join(tmp, f"{batch_id}.jsonl")
            return path, download_results(client, batch_id, path)

        to_download = [batch_id for batch_id, archived in ended if not archived]
        downloads: dict[str, Future] = {}
        position = 0
        for batch_id, archived in ended:
            if archived:
                _harvest_file(state, batch_id, None, output_schema, keep_message, archived=True)
                continue
            if position == 0:
                downloads[batch_id] = pool.submit(fetch, batch_id)
            position += 1
            if position < len(to_download):  # queued behind this one on the download thread
                downloads[to_download[position]] = pool.submit(fetch, to_download[position])
            try:
                path, _ = downloads.pop(batch_id).result()
            except anthropic.NotFoundError:
                logger.warning(f"results of {batch_id} are gone (archived); its requests become failures to resubmit")
                _harvest_file(state, batch_id, None, output_schema, keep_message, archived=True)
                continue
            except DownloadIncomplete as exc:
                logger.warning(f"{exc}; it will be downloaded again")
                continue
            except anthropic.APIStatusError as exc:
                if not is_passing(exc):
                    raise
                if batch_id + "/results" not in warned:
                    warned.add(batch_id + "/results")
                    logger.warning(f"batch {batch_id}: results download answered HTTP {exc.status_code}; the next "
                                   "run downloads it again")
                continue
            _harvest_file(state, batch_id, path, output_schema, keep_message)
            os.remove(path)


def _harvest_file(state: State, batch_id: str, path: str | None, output_schema, keep_message: bool,
                  archived: bool = False) -> None:
    with state.transaction():
        load_lines(state, batch_id, path, output_schema, keep_message)
        notes = finish_batch(state, batch_id, archived=archived)
    if notes:
        logger.warning(f"batch {batch_id} did not reconcile: {'; '.join(notes)}")


def _batch_row(state: State, batch_id: str) -> tuple:
    return state.run(
        f"select submission_id, n_submitted, canceled_by_user, coalesce(n_succeeded,0) + coalesce(n_errored,0) "
        f"+ coalesce(n_canceled,0) + coalesce(n_expired,0) + coalesce(n_processing,0) "
        f"from {state.table('batches')} where batch_id = ?",
        [batch_id],
    )[0]


def load_lines(state: State, batch_id: str, path: str | None, output_schema=None, keep_message: bool = False) -> None:
    """Add the outcomes in a results file (batch or synchronous) to state; idempotent. Call inside a transaction."""
    submission_id, _, canceled_by_user, _ = _batch_row(state, batch_id)
    outcomes, requests = state.table("outcomes"), state.table("requests")
    if path is None:
        return
    state.run("create or replace temp table cb_lines as "
              + _LINES_SQL.format(path=literal(path), columns=_RESULT_COLUMNS))
    state.run(
        f"""insert or ignore into {outcomes} ({_OUTCOME_COLUMNS})
        select ?, q.custom_id, q.model_id,
            case when l.result_type not in ('succeeded', 'errored', 'canceled', 'expired') then 'errored'
                 when l.result_type <> 'succeeded' then l.result_type
                 when l.stop_reason = 'max_tokens' then 'truncated'
                 when l.stop_reason = 'refusal' then 'refused'
                 else 'succeeded' end,
            coalesce(l.api_error_type, case l.stop_reason when 'max_tokens' then 'max_tokens'
                                                          when 'refusal' then 'refusal' end),
            coalesce(l.api_error_message, case l.stop_reason when 'max_tokens' then 'the answer was cut off at max_tokens'
                                                             when 'refusal' then l.text end),
            ? and l.result_type = 'canceled',
            l.text, l.stop_reason, l.answered_model, l.input_tokens, l.output_tokens, l.cache_creation_input_tokens,
            l.cache_creation_1h_input_tokens, l.cache_read_input_tokens, null, ?,
            coalesce(l.service_tier, 'batch'), null, null, {state.next_seq_sql()}
        from cb_lines l join (
            select custom_id, model_id from {requests} where submission_id = ? and dedup_of is null
            -- the marker line (it proves whose batch this is) is kept for the bill, outside every table users see
            union all
            select marker_id, model_id from {state.table('submissions')} where submission_id = ? and marker_id is not null
        ) q on q.custom_id = l.custom_id""",
        [batch_id, bool(canceled_by_user), utcnow(), submission_id, submission_id],
    )
    if keep_message:
        # The whole message is read again as JSON, only for models that asked to keep it.
        state.run(
            f"""update {outcomes} o set message = m.result.message
            from read_json({literal(path)}, format = 'newline_delimited',
                           columns = {{'custom_id': 'VARCHAR', 'result': 'STRUCT(message JSON)'}}) m
            where o.batch_id = ? and o.custom_id = m.custom_id and m.result.message is not null""",
            [batch_id],
        )
    asked = state.submission_schema(submission_id, output_schema)
    if asked:
        validate_outputs(state, batch_id, asked)
    _share_with_duplicates(state, batch_id, submission_id)


def finish_batch(state: State, batch_id: str, archived: bool = False) -> list[str]:
    """Record requests without a result as `missing`, reconcile, mark harvested. Call inside a transaction."""
    submission_id, n_submitted, _, n_counted = _batch_row(state, batch_id)
    outcomes, requests, batches = state.table("outcomes"), state.table("requests"), state.table("batches")
    now = utcnow()
    if not state.run("select count(*) from duckdb_tables() where table_name = 'cb_lines' and temporary")[0][0]:
        state.run(_EMPTY_LINES)
    reason = (
        "results no longer available from the API (archived 29 days after the batch was created)"
        if archived
        else "the batch ended but no result came back for this request"
    )
    state.run(
        f"""insert or ignore into {outcomes} (batch_id, custom_id, model_id, result_type, error_type,
            error_message, harvested_at, harvest_seq)
        select ?, q.custom_id, q.model_id, 'missing', ?, ?, ?, {state.next_seq_sql()}
        from {requests} q
        where q.submission_id = ? and q.dedup_of is null
          and not exists (select 1 from {outcomes} o where o.batch_id = ? and o.custom_id = q.custom_id)""",
        [batch_id, "results_archived" if archived else "missing_result", reason, now, submission_id, batch_id],
    )
    _share_with_duplicates(state, batch_id, submission_id)
    marker = state.run(f"select marker_id from {state.table('submissions')} where submission_id = ?",
                       [submission_id])[0][0]
    lines, matched, distinct, marked = state.run(
        f"""select count(*) filter (where l.custom_id is distinct from ?), count(q.custom_id),
               count(distinct l.custom_id) filter (where l.custom_id is distinct from ?),
               count(*) filter (where l.custom_id = ?)
        from cb_lines l left join {requests} q on q.custom_id = l.custom_id and q.submission_id = ?""",
        [marker, marker, marker, submission_id],
    )[0]
    notes = []
    if n_counted != n_submitted:
        notes.append(f"request_counts sum to {n_counted}, {n_submitted} submitted")
    if marker and not archived:
        if marked != 1:
            notes.append(f"the marker request came back {marked} times")
        else:
            state.move_marker_count(batch_id, state.run(
                "select result_type from cb_lines where custom_id = ?", [marker])[0][0])
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
    return notes


_SHARED_COLUMNS = (
    "result_type", "error_type", "error_message", "canceled_by_user", "output_text", "stop_reason",
    "answered_model", "input_tokens", "output_tokens", "cache_creation_input_tokens",
    "cache_creation_1h_input_tokens", "cache_read_input_tokens", "message", "harvested_at", "service_tier",
    "output_json",
)


def _share_with_duplicates(state: State, batch_id: str, submission_id: str) -> None:
    """Rows whose identical request was sent once get a copy of its outcome (costed at zero)."""
    outcomes, requests = state.table("outcomes"), state.table("requests")
    state.run(
        f"""insert or ignore into {outcomes} (batch_id, custom_id, model_id, shared_from, harvest_seq,
            {', '.join(_SHARED_COLUMNS)})
        select o.batch_id, q.custom_id, q.model_id, o.custom_id, {state.next_seq_sql()},
            {', '.join('o.' + c for c in _SHARED_COLUMNS)}
        from {requests} q join {outcomes} o on o.batch_id = ? and o.custom_id = q.dedup_of
        where q.submission_id = ? and q.dedup_of is not null""",
        [batch_id, submission_id],
    )
