"""A prompt comparison sent as one small batch (`claude_batch_compare_via: batch`), at batch prices,
and collected by a later comparison run of the model.

It is paid for at the create, so it is created the way the model's own batches are
(`submission.create_batch`): the comparison, its sampled keys and the submission (`purpose` compare)
are committed before the create, the batch carries a marker request naming the submission, and the
batch id is recorded the moment the create returns. A create whose outcome is unknown (a crash, a
lost answer) is settled by the next comparison run of the model with `submission.settle`: a listed
batch is adopted only when its results carry the marker, and the comparison is concluded never sent
after `in_doubt_grace_seconds`. While a comparison batch is pending no other is sent for the model.

The comparison's batch has kind `compare` and no `requests` rows: the model's own runs never settle,
poll or harvest it, and its answers never become held answers (they answer the edited request, which
the next real run buys). When it has ended, its results file is streamed to disk, its outcomes are
recorded for the bill (usage only, at the batch price the API reports), and its rows are written to
`<model>__compare` as a synchronous comparison's are, with `via` batch, in one transaction.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import anthropic

from dbt_claude_batch.base.errors import ConfigError
from dbt_claude_batch.base.identifiers import literal
from dbt_claude_batch.base.log import logger
from dbt_claude_batch.base.run_vars import VAR_COMPARE, VAR_COMPARE_VIA
from dbt_claude_batch.base.settings import Settings
from dbt_claude_batch.run import compare
from dbt_claude_batch.run.harvest import DownloadIncomplete, download_results
from dbt_claude_batch.run.sample import billed_outcomes_sql
from dbt_claude_batch.run.spool_files import marker_line
from dbt_claude_batch.run.submission import StoppedBeforeCreate, create_batch, settle
from dbt_claude_batch.state import comparisons
from dbt_claude_batch.state.erasure import erased_id_sql
from dbt_claude_batch.state.state import State, utcnow
from dbt_claude_batch.state.workdir import scratch

_LINES = "cb_compare_lines"


def collect_hint(identifier: str) -> str:
    """How to collect a comparison batch: the command, or the dbt vars."""
    return (f"run `dbt-claude-batch compare --model {identifier} --via batch` (or dbt with "
            f"`{VAR_COMPARE}` and `{VAR_COMPARE_VIA}: batch`) again to collect it")


def send(client, state: State, settings: Settings, calls: list[dict[str, Any]], n_held: int, target: str,
         key_types: dict[str, str], identifier: str, stop=None, est_cost_usd: float | None = None) -> str | None:
    """Create the comparison's batch (nothing when stopped); collect it at once if it has already ended.
    Return the batch id, or None when none is known yet. `est_cost_usd` is recorded with the intent, so the
    budget guard counts it while the batch is in flight."""
    to_send = [c for c in calls if c["sent"]]
    if not to_send:
        compare_id = uuid.uuid4().hex[:16]
        _write_rows(state, target, key_types, settings, compare_id, n_held, calls)  # every change failed locally
        compare.log_summary(state, target, compare_id)
        return None
    lines = [json.dumps({"custom_id": c["custom_id"], "params": c["params"]}, separators=(",", ":")).encode()
             for c in to_send]
    model = to_send[0]["params"]["model"]
    size = len(b",".join(lines)) + 300
    if len(to_send) + 1 > settings.max_requests_per_batch or size > settings.max_batch_bytes:
        raise ConfigError(
            f"The comparison's {len(to_send)} requests ({size} bytes) do not fit one batch under "
            "`max_requests_per_batch`/`max_batch_bytes`: compare fewer keys (--sample), or via sync; nothing was sent.")
    if stop is not None and stop.requested:
        logger.warning("stopped by Ctrl-C before the comparison's batch was created: nothing was sent")
        return None
    compare_id = uuid.uuid4().hex[:16]

    def intent(submission_id: str, marker: str) -> bytes:
        body = b"".join([b'{"requests":[', b",".join(lines), b",", marker_line(marker, model), b"]}"])
        comparisons.record_intent(state, compare_id, submission_id, marker, len(to_send), len(body), n_held, calls,
                                  est_cost_usd)
        return body

    try:
        batch_id = create_batch(client, state, intent, len(to_send), settings.in_doubt_grace_seconds,
                                settings.clock_skew_seconds, stop=stop)
    except StoppedBeforeCreate:
        logger.warning("stopped by Ctrl-C while a refused create waited to be retried: nothing was sent")
        return None
    if batch_id is None:
        logger.warning(f"comparison {compare_id}: the create's outcome is unknown; it is settled by proof (its "
                       f"marker) when you {collect_hint(identifier)}; nothing is sent twice")
        return None
    logger.info(f"comparison {compare_id}: {len(to_send)} requests sent as batch {batch_id} (batch prices)")
    collect_pending(client, state, settings, target, key_types, identifier, just_sent=True)
    return batch_id


def collect_pending(client, state: State, settings: Settings, target: str, key_types: dict[str, str],
                    identifier: str, just_sent: bool = False) -> bool:
    """Settle, poll and, once ended, collect the model's pending comparison batch. True when there was
    one (collected now or still waiting: nothing new is sent then), False when there is none."""
    unchanged = "" if just_sent else "; nothing new was sent"
    while True:
        found = comparisons.pending(state.cursor, state.schema, state.model_id)
        if found is None:
            return False
        compare_id, batch_id = found["compare_id"], found["batch_id"]
        if found["submission_status"] in ("creating", "in_doubt"):
            batch_id = settle(client, state, found["submission_id"], settings.in_doubt_grace_seconds,
                              settings.clock_skew_seconds)
            if batch_id is None:
                status = state.run(f"select status from {state.table('submissions')} where submission_id = ?",
                                   [found["submission_id"]])[0][0]
                if status == "abandoned":
                    logger.warning(f"comparison {compare_id}: its create made no batch (no batch carries its "
                                   "marker after the grace period): it was never sent, and is not collected")
                    continue
                logger.warning(f"comparison {compare_id}: its create is not settled yet; nothing new was sent; "
                               f"{collect_hint(identifier)}")
                return True
        batch = client.messages.batches.retrieve(batch_id)
        state.update_batch(batch)
        if batch.processing_status != "ended":
            counts = batch.request_counts
            logger.info(f"comparison {compare_id}: batch {batch_id} is {batch.processing_status} "
                        f"({counts.processing} of {found['n_requests'] + 1} requests processing, the marker included)"
                        f"{unchanged}; {collect_hint(identifier)}")
            return True
        _collect(client, state, settings, target, key_types, found, batch_id)
        return True


def _collect(client, state: State, settings: Settings, target: str, key_types: dict[str, str],
             found: dict[str, Any], batch_id: str) -> None:
    compare_id, marker = found["compare_id"], found["marker_id"]
    calls = comparisons.sampled(state, compare_id)
    with scratch() as tmp:
        path = os.path.join(tmp, "comparison.jsonl")
        try:
            size = download_results(client, batch_id, path)
        except anthropic.NotFoundError:
            size, gone = 0, True
        except DownloadIncomplete as exc:
            logger.warning(f"comparison {compare_id}: {exc}; it is downloaded again next time")
            return
        else:
            gone = False
        state.run(f"create or replace temp table {_LINES} (custom_id varchar, result json)")
        if size:
            state.run(f"insert into {_LINES} select custom_id, result from read_json({literal(path)}, "
                      "format = 'newline_delimited', columns = {'custom_id': 'VARCHAR', 'result': 'JSON'})")
    results = {cid: json.loads(r) for cid, r in state.run(
        f"select custom_id, result::varchar from {_LINES} where custom_id in "
        f"(select custom_id from {state.table('compare_requests')} where compare_id = ? and sent)", [compare_id])}
    why = ("the batch's results are no longer available from the API" if gone
           else "the batch's results have no line for this request")
    for call in calls:
        if call["sent"]:
            call["result"] = results.get(call["custom_id"]) or _error("missing", why)
        else:
            call["result"] = call["local_result"]
    with state.transaction():
        _record_for_the_bill(state, batch_id, compare_id, marker)
        _write_rows(state, target, key_types, settings, compare_id, found["held_keys"], calls)
        comparisons.mark_collected(state, compare_id, "results gone" if gone else None)
        state.run(f"update {state.table('batches')} set harvested_at = ?, result_lines = "
                  f"(select count(*) from {_LINES}), reconciled = true where batch_id = ?", [utcnow(), batch_id])
    state.run(f"drop table if exists {_LINES}")
    logger.info(f"comparison {compare_id}: collected batch {batch_id}")
    compare.log_summary(state, target, compare_id)


def _record_for_the_bill(state: State, batch_id: str, compare_id: str, marker: str) -> None:
    """Every line of the batch (the marker's included) as an outcome: usage for the bill, no key's attempt (a
    comparison has no `requests` rows). A line whose key was erased (`forget`) while the batch was in flight
    was still paid for: it is billed as `forget` leaves an outcome, its custom_id a hash and no text."""
    kept = (f"custom_id = ? or custom_id in (select custom_id from {state.table('compare_requests')} "
            "where compare_id = ? and sent)")
    erased_usage = ("json_object('type', result->>'$.type', 'message', json_object("
                    "'model', result->>'$.message.model', 'usage', result->'$.message.usage'))")
    state.run(
        billed_outcomes_sql(
            state, f"""select case when kept then custom_id else {erased_id_sql('custom_id')} end
                           as custom_id, case when kept then result else {erased_usage} end as result
                       from (select custom_id, result, {kept} as kept from {_LINES})""",
            "coalesce(result->>'$.message.usage.service_tier', 'batch')", or_ignore=True),
        [batch_id, state.model_id, utcnow(), marker, compare_id])


def _write_rows(state: State, target: str, key_types: dict[str, str], settings: Settings, compare_id: str,
               n_held: int, calls: list[dict[str, Any]]) -> None:
    """The comparison's rows into `<model>__compare`, as a synchronous comparison's, with `via` batch."""
    compare.load_calls(state, calls, settings)
    compare.write_comparison(state, target, key_types, compare_id, utcnow(), n_held, len(calls), settings, "batch")
    compare.drop_calls(state)


def _error(kind: str, message: str) -> dict:
    return {"type": "errored", "error": {"type": "error", "error": {"type": kind, "message": message}}}
