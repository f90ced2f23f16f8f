"""Sample preview: N representative rows through the synchronous API, before paying for the full run.

The rows are chosen by the md5 of their custom_id, a deterministic choice spread evenly over the
data (not the first N). Nothing is submitted as a batch and the results and failures state is not
touched; the answers go to `<model>__sample` with their tokens, cost, and an estimate of the full
run at batch prices (the sample's mean cost per row at batch prices x the rows in the source).
A row whose prompt is empty is not sent: its row says `empty_prompt`, at no cost.
What the calls cost is billed all the same, so each is recorded for the bill as an outcome of a
pseudo-batch of kind `sample` (without requests rows: no key's attempt, so planning, results and
failures never see it), which `all_spend`, `status` and the run's summary count.
"""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor

from dbt_claude_batch.base.errors import ConfigError
from dbt_claude_batch.base.identifiers import literal, qualified, quote
from dbt_claude_batch.base.log import logger
from dbt_claude_batch.run.planning import STAGED, candidate_rows_sql
from dbt_claude_batch.run.dispatch import check_calls_budget
from dbt_claude_batch.base.pricing import BATCH_DISCOUNT, cost_sql, model_family_sql, prices_cte
from dbt_claude_batch.base.prompts import Prompt, empty_prompt_message, is_blank, request_params
from dbt_claude_batch.base.settings import Settings
from dbt_claude_batch.state.erasure import SAMPLE_SUFFIX
from dbt_claude_batch.state.state import State, utcnow
from dbt_claude_batch.run.sync import SYNC_RETRIES, call_messages


def run_sample(client, state: State, prompt: Prompt, settings: Settings, size: int, this,
               key_types: dict[str, str], source_sql: str) -> str:
    """Send `size` sample rows synchronously and write `<model>__sample`; return its name."""
    if settings.attachments:
        raise ConfigError("`claude_batch_sample` does not take models with `attachments` yet: run without the var; "
                          "nothing was submitted.")
    chosen = (
        f"select __cb_custom_id, __cb_key_json, __cb_model, row_number() over (order by md5(__cb_custom_id)) "
        f"as __cb_ordinal from {STAGED} order by md5(__cb_custom_id) limit {int(size)}"
    )
    rows = state.cursor.execute(
        f"select __cb_custom_id, __cb_key_json, __cb_model{''.join(f', {quote(c)}' for c in prompt.columns)} "
        f"from ({candidate_rows_sql(source_sql, settings.key, prompt.columns, chosen)})"
    ).fetchall()
    total = state.run(f"select count(*) from {STAGED}")[0][0]
    requests = []
    for row in rows:
        values = dict(zip(prompt.columns, row[3:]))
        requests.append((row[0], row[1], request_params(settings, prompt.render(values), row[2])))
    check_calls_budget(settings, state, [p for _, _, p in requests if not is_blank(p["messages"][-1]["content"])],
                       1.0, "sample requests at full price", "ask for a smaller sample (`claude_batch_sample`)")
    sync_client = client.with_options(max_retries=SYNC_RETRIES)
    with ThreadPoolExecutor(max_workers=settings.sync_concurrency) as pool:
        answers = list(pool.map(lambda r: _answer(sync_client, *r), requests))
    state.run(
        "create or replace temp table cb_sample (custom_id varchar, key_json varchar, prompt varchar, result json)"
    )
    state.cursor.executemany(
        "insert into cb_sample values (?, ?, ?, ?)",
        [(cid, key, params["messages"][-1]["content"], json.dumps(result)) for (cid, key, params), result in zip(requests, answers)],
    )
    record_for_the_bill(state, sum(not is_blank(params["messages"][-1]["content"]) for _, _, params in requests),
                        "sample preview (claude_batch_sample)")
    target = qualified(this.database, this.schema, this.identifier + SAMPLE_SUFFIX)
    state.run(
        f"""create or replace table {target} as
        with {prices_cte(settings.prices)},
        s as (
            select custom_id, key_json, prompt, result->>'$.type' as result_type,
                   result->>'$.error.error.type' as error_type, result->>'$.error.error.message' as error_message,
                   array_to_string(json_extract_string(result, '$.message.content[*].text'), '') as output_text,
                   result->>'$.message.stop_reason' as stop_reason, result->>'$.message.model' as answered_model,
                   (result->>'$.message.usage.input_tokens')::bigint as input_tokens,
                   (result->>'$.message.usage.output_tokens')::bigint as output_tokens,
                   (result->>'$.message.usage.cache_creation_input_tokens')::bigint as cache_creation_input_tokens,
                   (result->>'$.message.usage.cache_creation.ephemeral_1h_input_tokens')::bigint as cache_creation_1h_input_tokens,
                   (result->>'$.message.usage.cache_read_input_tokens')::bigint as cache_read_input_tokens,
                   'standard' as service_tier, null as shared_from
            from cb_sample),
        c as (select s.*, {cost_sql('s', 'p')} as cost_usd
              from s left join cb_prices p on p.model_family = {model_family_sql('s.answered_model')})
        select unnest(from_json(key_json, {literal(json.dumps(key_types))})), custom_id, prompt, result_type,
               error_type, error_message, output_text, stop_reason, answered_model, input_tokens, output_tokens,
               cache_creation_input_tokens, cache_read_input_tokens, cost_usd,
               cost_usd * {BATCH_DISCOUNT} as cost_usd_at_batch_prices,
               {int(total)} as source_rows,
               avg(cost_usd) over () * {BATCH_DISCOUNT} * {int(total)} as estimated_full_run_batch_usd
        from c"""
    )
    state.run("drop table cb_sample")
    estimate, spent, ok = state.run(
        f"select any_value(estimated_full_run_batch_usd), sum(cost_usd), count(*) filter (where result_type = 'succeeded') "
        f"from {target}"
    )[0]
    logger.info(
        f"sample of {len(rows)} rows ({ok} answered) cost ${spent or 0:.6f} synchronously; "
        f"the full run of {total} rows would cost about ${estimate or 0:.4f} at batch prices. Review {target}."
    )
    return target


def _answer(client, custom_id: str, key_json: str, params: dict) -> dict:
    """The sample row's result: the API's, or an empty_prompt error for a blank prompt, which is not sent."""
    if is_blank(params["messages"][-1]["content"]):
        return {"type": "errored", "error": {"type": "error", "error": {
            "type": "empty_prompt", "message": empty_prompt_message(key_json)}}}
    return call_messages(client, params)


def billed_outcomes_sql(state: State, rows_sql: str, service_tier_sql: str, or_ignore: bool = False) -> str:
    """Insert, as outcomes billed but no key's attempt, the rows of `rows_sql` (a `custom_id` and the API's
    `result` JSON each); three parameters: the batch id, the model id and the time harvested."""
    return f"""insert {'or ignore ' if or_ignore else ''}into {state.table('outcomes')} (batch_id, custom_id, model_id,
            result_type, error_type, error_message, stop_reason, answered_model, input_tokens, output_tokens,
            cache_creation_input_tokens, cache_creation_1h_input_tokens, cache_read_input_tokens, service_tier,
            harvested_at, harvest_seq)
        select ?, custom_id, ?, result->>'$.type', result->>'$.error.error.type', result->>'$.error.error.message',
            result->>'$.message.stop_reason', result->>'$.message.model',
            (result->>'$.message.usage.input_tokens')::bigint, (result->>'$.message.usage.output_tokens')::bigint,
            (result->>'$.message.usage.cache_creation_input_tokens')::bigint,
            (result->>'$.message.usage.cache_creation.ephemeral_1h_input_tokens')::bigint,
            (result->>'$.message.usage.cache_read_input_tokens')::bigint, {service_tier_sql}, ?, {state.next_seq_sql()}
        from ({rows_sql})"""


def record_for_the_bill(state: State, n: int, note: str, table: str = "cb_sample",
                        only: str = "result->>'$.error.error.type' is distinct from 'empty_prompt'") -> None:
    """`n` calls made (the rows of temp `table` that match `only`, each with a `custom_id` and its `result`)
    as outcomes of an ended, harvested pseudo-batch of kind `sample`: billed, and no key's attempt."""
    batch_id, submission_id, now = f"sample_{uuid.uuid4().hex[:24]}", str(uuid.uuid4()), utcnow()
    with state.transaction():
        state.run(
            f"insert into {state.table('submissions')} (submission_id, model_id, status, batch_id, n_requests, "
            "n_bytes, intent_at, settled_at, note) values (?, ?, 'submitted', ?, ?, 0, ?, ?, ?)",
            [submission_id, state.model_id, batch_id, n, now, now, note])
        state.run(billed_outcomes_sql(state, f"select * from {table} where {only}", "'standard'"),
                  [batch_id, state.model_id, now])
        ok = state.run(f"select count(*) from {state.table('outcomes')} where batch_id = ? "
                       "and result_type = 'succeeded'", [batch_id])[0][0]
        state.run(
            f"insert into {state.table('batches')} (batch_id, model_id, submission_id, processing_status, created_at, "
            "ended_at, n_processing, n_succeeded, n_errored, n_canceled, n_expired, n_submitted, kind, polled_at, "
            "harvested_at, result_lines, reconciled, answers_at) "
            "values (?, ?, ?, 'ended', ?, ?, 0, ?, ?, 0, 0, ?, 'sample', ?, ?, ?, true, ?)",
            [batch_id, state.model_id, submission_id, now, now, ok, n - ok, n, now, now, n, now])
