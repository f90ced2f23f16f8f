"""Compare a prompt change on a sample (`claude_batch_compare`): the edited request for keys that hold an
answer under the old one, side by side with that answer, before paying for every row.

Keys are chosen among those of the current source that hold a succeeded answer, spread over the held
answers' kinds (`agreement.stratified_sample_sql`). Each sampled key's request is rendered from the
current template and settings; a key whose request hash equals its held answer's is not sent (nothing
changed for it). The others go synchronously, at full price, or with `claude_batch_compare_via: batch`
as one small batch at batch prices, collected by a later run (run/compare_batch.py). Nothing of the
model's results, answers, requests or failures is written: the new answers go to `<model>__compare`
(state/compare_table.py), field by field against the held ones, and the synchronous calls are recorded
for the bill as a pseudo-batch of kind `sample`, as the sample preview's are.
"""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor

from dbt_claude_batch.base.errors import ConfigError, NothingToCompareError, RowTemplateError
from dbt_claude_batch.base.identifiers import literal, qualified
from dbt_claude_batch.base.log import logger
from dbt_claude_batch.base.pricing import BATCH_DISCOUNT, cost_sql, model_family_sql, prices_cte
from dbt_claude_batch.base.prompts import Prompt, hash_request, is_blank, request_params
from dbt_claude_batch.base.run_vars import VAR_COMPARE
from dbt_claude_batch.base.settings import Settings
from dbt_claude_batch.run.agreement import field_agreement, stratified_sample_sql, stratum_sql, text_agreement
from dbt_claude_batch.run.dispatch import check_calls_budget
from dbt_claude_batch.run.planning import STAGED, candidate_rows_sql
from dbt_claude_batch.run.sample import record_for_the_bill
from dbt_claude_batch.run.sync import SYNC_RETRIES, call_messages
from dbt_claude_batch.state import compare_table
from dbt_claude_batch.state.state import State, utcnow

CALLS = "cb_compare_calls"
_FIELDS = "cb_compare_fields"


def run_compare(client, state: State, prompt: Prompt, settings: Settings, size: int, this,
                key_types: dict[str, str], source_sql: str, via: str = "sync", stop=None) -> str:
    """Compare `size` sampled keys' new answers with their held ones into `<model>__compare`; return its name.

    `via` batch sends them as one small batch instead (run/compare_batch.py): a comparison batch of the
    model still in flight is collected (or said to be waiting) first, and nothing new is sent then.
    """
    for name in ("attachments", "split_column"):
        if getattr(settings, name):
            raise ConfigError(f"`{VAR_COMPARE}` does not take models with `{name}` yet: run without the var; "
                              "nothing was sent.")
    target = qualified(this.database, this.schema, f"{this.identifier}{compare_table.SUFFIX}")
    if via == "batch":
        from dbt_claude_batch.run import compare_batch
        from dbt_claude_batch.state import comparisons

        waiting = comparisons.pending(state.cursor, state.schema, state.model_id)
        if compare_batch.collect_pending(client, state, settings, target, key_types, this.identifier):
            if waiting is not None:
                _warn_if_stale(state, prompt, settings, source_sql, waiting["compare_id"])
            return target
    n_held, calls = _sample(state, prompt, settings, size, source_sql)
    estimate = check_calls_budget(
        settings, state, [c["params"] for c in calls if c["sent"]], BATCH_DISCOUNT if via == "batch" else 1.0,
        "comparison requests" + (" at batch prices" if via == "batch" else " at full price"),
        f"compare fewer keys (`{VAR_COMPARE}`)")
    if via == "batch":
        compare_batch.send(client, state, settings, calls, n_held, target, key_types, this.identifier, stop,
                           est_cost_usd=estimate)
        return target
    sync_client = client.with_options(max_retries=SYNC_RETRIES)
    with ThreadPoolExecutor(max_workers=settings.sync_concurrency) as pool:
        results = list(pool.map(lambda c: call_messages(sync_client, c["params"]) if c["sent"] else c["local_result"],
                                calls))
    for call, result in zip(calls, results):
        call["result"] = result
    compare_id, now = uuid.uuid4().hex[:16], utcnow()
    load_calls(state, calls, settings)
    record_for_the_bill(state, sum(c["sent"] for c in calls), f"prompt comparison {compare_id} ({VAR_COMPARE})",
                        CALLS, only="sent")
    write_comparison(state, target, key_types, compare_id, now, n_held, len(calls), settings, "sync")
    drop_calls(state)
    log_summary(state, target, compare_id)
    return target


def _sample(state: State, prompt: Prompt, settings: Settings, size: int, source_sql: str) -> tuple[int, list[dict]]:
    """(keys holding an answer, the sampled keys' calls): each with its held answer and, when its request
    changed, the request to send (`params`, `sent`) or the local failure that replaces it (`local_result`)."""
    model_id = state.model_id
    text = "a.output_json::varchar" if settings.output_schema else "a.output_text"
    held = (f"select a.custom_id, a.key_json, a.request_hash, {text} as old_output, st.__cb_model, "
            f"{stratum_sql(text, 'a.stop_reason')} as stratum "
            f"from {state.table('answers')} a join {STAGED} st on st.__cb_custom_id = a.custom_id "
            f"where a.model_id = {literal(model_id)} and a.output_parts is null")
    n_held = state.run(f"select count(*) from ({held})")[0][0]
    if not n_held:
        raise NothingToCompareError(
            f"{model_id} holds no answers for the keys of its source, so there is nothing to compare a prompt "
            f"change with: run the model once without `{VAR_COMPARE}` to buy answers, then edit and compare.")
    chosen = (f"select custom_id as __cb_custom_id, row_number() over () as __cb_ordinal, key_json, request_hash, "
              f"old_output, __cb_model, stratum from ({stratified_sample_sql(held, size)})")
    cursor = state.cursor.execute(f"select * from ({candidate_rows_sql(source_sql, settings.key, prompt.columns, chosen)})")
    names = [d[0] for d in cursor.description]
    rows = [dict(zip(names, r)) for r in cursor.fetchall()]
    calls = []
    for row in rows:
        changed, local, params = _request(prompt, settings, row)
        calls.append({
            "custom_id": row["__cb_custom_id"], "key_json": row["key_json"], "stratum": row["stratum"],
            "request_changed": changed, "sent": bool(changed and params), "old_request_hash": row["request_hash"],
            "new_request_hash": hash_request(params) if params else None,
            "old_output": row["old_output"], "prompt": params["messages"][-1]["content"] if params else None,
            "local_result": local, "params": params if changed else None, "result": local})
    if not any(c["request_changed"] for c in calls):
        raise NothingToCompareError(
            f"nothing to compare: the current prompt and settings of {model_id} make the very request held for "
            f"each of the {len(calls)} sampled keys; edit the template or settings first, or run without "
            f"`{VAR_COMPARE}`.")
    return n_held, calls


def _warn_if_stale(state: State, prompt: Prompt, settings: Settings, source_sql: str, compare_id: str) -> None:
    """A comparison batch compares the edit it was sent for: say so when the template or settings have
    changed since (a sampled key's request, rendered now, is not the one it sent, or its row is gone)."""
    sent = (f"select r.custom_id as __cb_custom_id, row_number() over () as __cb_ordinal, r.new_request_hash, "
            f"r.key_json, st.__cb_model from {state.table('compare_requests')} r join {STAGED} st "
            f"on st.__cb_custom_id = r.custom_id where r.compare_id = {literal(compare_id)} and r.sent")
    n_sent = state.run(f"select count(*) from {state.table('compare_requests')} where compare_id = ? and sent",
                       [compare_id])[0][0]
    cursor = state.cursor.execute(candidate_rows_sql(source_sql, settings.key, prompt.columns, sent))
    names = [d[0] for d in cursor.description]
    same = 0
    for values in cursor.fetchall():
        row = dict(zip(names, values))
        params = _request(prompt, settings, {**row, "request_hash": None})[2]
        same += params is not None and hash_request(params) == row["new_request_hash"]
    if same < n_sent:
        which = f"all {n_sent}" if not same else f"{n_sent - same} of the {n_sent}"
        logger.warning(
            f"comparison {compare_id} was sent for an earlier edit of the prompt or settings: the requests of "
            f"{which} of its sampled keys differ from what the model renders now, so its answers compare that "
            "edit, not the current one; compare again to compare the current one")


def log_summary(state: State, target: str, compare_id: str) -> None:
    """The comparison's summary in the run's log, as the `compare` command prints it."""
    logger.info(compare_table.summary_text(compare_table.summary(state.cursor, target, compare_id)))
    logger.info(f"review {target} where compare_id = '{compare_id}'; the results table and the held answers "
                "are unchanged")


def _request(prompt: Prompt, settings: Settings, row: dict) -> tuple[bool, dict | None, dict | None]:
    """(request changed, a local result for a row not sent, the request params to send)."""
    try:
        text = prompt.render({c: row[c] for c in prompt.columns})
    except RowTemplateError as exc:
        return True, _local_error("template_error", exc.for_key(row["key_json"])), None
    if is_blank(text):
        return True, _local_error("empty_prompt", "the edited prompt is empty for this row; it was not sent"), None
    params = request_params(settings, text, row["__cb_model"])
    changed = hash_request(params) != row["request_hash"]
    return changed, None, params


def _local_error(kind: str, message: str) -> dict:
    return {"type": "errored", "error": {"type": "error", "error": {"type": kind, "message": message}}}


def load_calls(state: State, calls: list[dict], settings: Settings) -> None:
    """The calls (temp `CALLS`, each call's `result` the API's or a local one) and the field-by-field
    agreement (temp `_FIELDS`)."""
    state.run(f"""create or replace temp table {CALLS} (custom_id varchar, key_json varchar, stratum varchar,
        request_changed boolean, sent boolean, old_request_hash varchar, new_request_hash varchar,
        old_output varchar, prompt varchar, result json)""")
    state.run(f"create or replace temp table {_FIELDS} (custom_id varchar, field_no integer, field varchar, "
              "old_value varchar, new_value varchar, exact_match boolean, normalised_match boolean)")
    rows, fields = [], []
    for c in calls:
        result = c.get("result")
        rows.append((c["custom_id"], c["key_json"], c["stratum"], c["request_changed"], c["sent"],
                     c["old_request_hash"], c["new_request_hash"], c["old_output"], c["prompt"],
                     json.dumps(result) if result is not None else None))
        if not c["request_changed"]:
            continue
        new_text = _answer_text(result)
        agreement = (field_agreement(c["old_output"], new_text, settings.output_schema) if settings.output_schema
                     else text_agreement(c["old_output"], new_text))
        fields += [(c["custom_id"], i, a.field, a.old_value, a.new_value, a.exact, a.normalised)
                   for i, a in enumerate(agreement, start=1)]
    state.cursor.executemany(f"insert into {CALLS} values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    if fields:
        state.cursor.executemany(f"insert into {_FIELDS} values (?, ?, ?, ?, ?, ?, ?)", fields)


def drop_calls(state: State) -> None:
    state.run(f"drop table if exists {CALLS}")
    state.run(f"drop table if exists {_FIELDS}")


def _answer_text(result: dict | None) -> str | None:
    if not result or result.get("type") != "succeeded":
        return None
    return "".join(b.get("text", "") for b in result["message"].get("content") or [] if b.get("type") == "text")


def write_comparison(state: State, target: str, key_types: dict[str, str], compare_id: str, now, n_held: int,
                     n_sampled: int, settings: Settings, via: str) -> None:
    """Append this comparison's rows (from temp `CALLS` and `_FIELDS`): one per (key, field), and one per
    key not changed or not answered. `via` sync calls are priced at full price, batch ones at batch prices.

    The estimate of the full re-run: the keys held x the share of sampled keys whose request changed x
    the mean cost of the sample's answered calls, at batch prices unless the model's `mode` is sync.
    """
    state.run(compare_table.create_sql(target, key_types))
    factor, basis = ((1.0, "sample's mean cost per key at full price (mode: sync)") if settings.mode == "sync"
                     else (BATCH_DISCOUNT, "sample's mean cost per key at batch prices"))
    if via == "batch":  # the sample's costs are at batch prices already
        factor /= BATCH_DISCOUNT
    tier = "coalesce(result->>'$.message.usage.service_tier', 'batch')" if via == "batch" else "'standard'"
    state.run(
        f"""insert into {target} by name
        with {prices_cte(settings.prices)},
        c as (select *, result->>'$.type' as result_type, result->>'$.error.error.type' as error_type,
                     result->>'$.error.error.message' as error_message,
                     array_to_string(json_extract_string(result, '$.message.content[*].text'), '') as new_output,
                     result->>'$.message.model' as answered_model,
                     (result->>'$.message.usage.input_tokens')::bigint as input_tokens,
                     (result->>'$.message.usage.output_tokens')::bigint as output_tokens,
                     (result->>'$.message.usage.cache_creation_input_tokens')::bigint as cache_creation_input_tokens,
                     (result->>'$.message.usage.cache_creation.ephemeral_1h_input_tokens')::bigint
                         as cache_creation_1h_input_tokens,
                     (result->>'$.message.usage.cache_read_input_tokens')::bigint as cache_read_input_tokens,
                     {tier} as service_tier, null as shared_from
              from {CALLS}),
        priced as (select c.*, case when c.sent then {cost_sql('c', 'p')} end as key_cost
                   from c left join cb_prices p on p.model_family = {model_family_sql('c.answered_model')}),
        totals as (select sum(key_cost) as spent, count(*) filter (where request_changed) as changed,
                          avg(key_cost) filter (where result_type = 'succeeded') as mean_cost from priced)
        select unnest(from_json(k.key_json, {literal(json.dumps(key_types))})),
               {literal(compare_id)} as compare_id, {literal(str(now))}::timestamp as compared_at, {literal(via)} as via,
               k.custom_id, k.key_json, k.stratum, k.request_changed, k.old_request_hash, k.new_request_hash,
               case when k.request_changed then coalesce(k.result_type, 'not_sent') else 'unchanged' end
                   as result_type,
               k.error_type, k.error_message, f.field_no, f.field, f.old_value, f.new_value, f.exact_match,
               f.normalised_match, k.old_output, k.new_output, k.input_tokens, k.output_tokens,
               case when coalesce(f.field_no, 1) = 1 then k.key_cost end as cost_usd,
               {int(n_held)} as held_keys, {int(n_sampled)} as sampled_keys, t.changed as changed_keys,
               coalesce(t.spent, 0) as sample_cost_usd,
               coalesce(t.mean_cost, 0) * {factor} * {int(n_held)} * t.changed / {max(int(n_sampled), 1)}
                   as estimated_full_rerun_usd,
               {literal(basis)} as estimate_basis
        from priced k cross join totals t left join {_FIELDS} f using (custom_id)
        order by k.custom_id, f.field_no"""
    )
