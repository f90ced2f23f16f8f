"""Outcomes decided without calling the API: answers already held, and rows whose prompt failed or is empty.

*Reuse.* A request whose exact request hash (sha256 of the rendered params) already has a succeeded
answer in this model's state is answered from state instead of being bought again: after a reverted
edit, a key change, or a row that asks exactly what another row was already answered. A part of a cut
document or of a split prompt is reused by its own request hash (`part_hash`), so when one part failed
the next run sends that part alone. Keys named in `claude_batch_rerun_keys` are never reused. The reused answer is recorded as a new
attempt of its key in a pseudo-batch of kind ``reuse``: cost 0, `shared_from` naming the custom_id and
`reused_from` the batch whose answer it is. Answers held elsewhere (other states named by
`answer_sources`, and imported answers: state/answer_sources.py) are reused the same way, by exact
request hash only, with `reused_source` naming where each came from.

*Template errors.* A row whose template raised is recorded as a failure with error_type ``template_error`` in a
pseudo-batch of kind ``local``, so it shows in the failures table with its message, costs nothing, and
is rendered again when the row or the template changes.

*Empty prompts.* A row whose prompt renders blank (see prompts.py) is recorded the same way as a failure
of kind ``empty_prompt``: it is never sent (the API refuses empty text) and costs nothing.

*Attachments.* A row whose attachment failed a check (see media.py) is recorded the same way, as a
failure with error_type ``attachment_error`` (``attachment_missing`` for a required NULL), never sent.

All run after the spool pass and before the budget check and any create.
"""

from __future__ import annotations

import uuid

from dbt_claude_batch.run import answers
from dbt_claude_batch.base.identifiers import literal
from dbt_claude_batch.run.components import components_sql
from dbt_claude_batch.run.planning import PENDING, RENDERED, rendered_writable
from dbt_claude_batch.state.answer_sources import ANSWER_COLUMNS as _COPIED, AnswerSource
from dbt_claude_batch.state.state import State, utcnow

_REUSE = "cb_reuse"
_SOURCED = "cb_reuse_sourced"
_WANTED = f"select distinct request_hash from {RENDERED} where include and parts = 1 and reason <> 'rerun'"


def reuse_held_answers(state: State) -> int:
    """Answer rendered lines whose request is already answered in state; return how many keys were."""
    if not state.run(f"select exists (select 1 from {state.table('requests')} where model_id = ?)",
                     [state.model_id])[0][0]:
        # A model's first attempt holds no answer; at 10M rows the distinct request hashes of its lines
        # spilled gigabytes to disk only to find none.
        return 0
    state.run(f"create or replace temp table {_REUSE} as {held_answer_matches_sql(state)}")
    n = state.run(f"select count(*) from {_REUSE}")[0][0]
    if n:
        with state.transaction():  # all of it, or none: an attempt without its outcome would wait forever
            _reuse(state, n)
    state.run(f"drop table if exists {_REUSE}")
    return n


def held_answer_matches_sql(state: State) -> str:
    """Rendered lines whose exact request already has a succeeded answer in this model's state:
    (ordinal, custom_id, from_batch, from_custom_id). The run reuses them; a plan counts them."""
    return f"""with cb_wanted as ({_WANTED}),
        cb_held as ({_held_by(state, "request_hash", "coalesce(r.parts, 1) = 1 and ")}),
        cb_wanted_parts as (
            select distinct part_hash from {RENDERED} where include and part_hash is not null and reason <> 'rerun'),
        cb_held_parts as ({_held_by(state, "part_hash", "")})
        select v.ordinal, v.custom_id, h.src.b as from_batch, h.src.c as from_custom_id
        from {RENDERED} v join cb_held h using (request_hash)
        where v.include and v.parts = 1 and v.reason <> 'rerun'
        union all
        select v.ordinal, v.custom_id, h.src.b, h.src.c
        from {RENDERED} v join cb_held_parts h using (part_hash)
        where v.include and v.part_hash is not null and v.reason <> 'rerun'"""


def _held_by(state: State, column: str, only: str) -> str:
    """The newest succeeded answer (batch, custom_id) of each wanted `column` (request_hash or part_hash)."""
    wanted = "cb_wanted" if column == "request_hash" else "cb_wanted_parts"
    return f"""select r.{column},
                   arg_max(struct_pack(b := o.batch_id, c := o.custom_id), coalesce(o.harvest_seq, 0)) as src
            from {state.table("requests")} r
            join {state.table("submissions")} s using (submission_id)
            join {state.table("outcomes")} o on o.batch_id = s.batch_id and o.custom_id = r.custom_id
            where r.model_id = {literal(state.model_id)} and o.result_type = 'succeeded'
              and {only}r.{column} in (select {column} from {wanted})
            group by r.{column}"""


def _reuse(state: State, n: int) -> None:
    outcomes = state.table("outcomes")
    batch_id = _record_pseudo_batch(state, "reuse", _REUSE, n, "answers held in state, reused by request hash")
    state.run(
        f"""insert or ignore into {outcomes} (batch_id, custom_id, model_id, shared_from, reused_from,
            harvested_at, harvest_seq, {', '.join(_COPIED)})
        select ?, u.custom_id, {literal(state.model_id)}, u.from_custom_id, u.from_batch, ?,
            {state.next_seq_sql()}, {', '.join('o.' + c for c in _COPIED)}
        from {_REUSE} u join {outcomes} o on o.batch_id = u.from_batch and o.custom_id = u.from_custom_id""",
        [batch_id, utcnow()],
    )
    answers.refresh(state, [batch_id])
    rendered_writable(state)
    state.run(
        f"update {RENDERED} set include = false, reason = 'reused' "
        f"where (ordinal, custom_id) in (select (ordinal, custom_id) from {_REUSE})"
    )


def wants_answers(state: State) -> bool:
    """Whether any rendered line could still be answered by reuse (so answer sources are worth opening)."""
    return bool(state.run(f"select 1 from ({_WANTED}) limit 1"))


def source_matches_sql(source: AnswerSource) -> str:
    """Rendered lines whose exact request has a succeeded answer in `source`: (ordinal, custom_id). A plan
    counts them; the run answers them in `reuse_from_sources`."""
    return f"""select v.ordinal, v.custom_id
        from {RENDERED} v join ({source.held_answers_sql(_WANTED)}) h using (request_hash)
        where v.include and v.parts = 1 and v.reason <> 'rerun'"""


def reuse_from_sources(state: State, sources: list[AnswerSource]) -> dict[str, int]:
    """Answer rendered lines from other sources' answers to the exact same request; return how many
    keys each source answered (by label), in the sources' order."""
    counts: dict[str, int] = {}
    for source in sources:
        state.run(
            f"""create or replace temp table {_SOURCED} as
            select v.ordinal, v.custom_id, h.* exclude (request_hash)
            from {RENDERED} v join ({source.held_answers_sql(_WANTED)}) h using (request_hash)
            where v.include and v.parts = 1 and v.reason <> 'rerun'"""
        )
        n = state.run(f"select count(*) from {_SOURCED}")[0][0]
        if n:
            with state.transaction():
                _reuse_sourced(state, source.label, n)
            counts[source.label] = n
        state.run(f"drop table if exists {_SOURCED}")
    return counts


def _reuse_sourced(state: State, label: str, n: int) -> None:
    batch_id = _record_pseudo_batch(state, "reuse", _SOURCED, n, f"answers from {label}, reused by request hash")
    state.run(
        f"""insert or ignore into {state.table('outcomes')} (batch_id, custom_id, model_id, shared_from, reused_from,
            reused_source, harvested_at, harvest_seq, {', '.join(_COPIED)})
        select ?, u.custom_id, {literal(state.model_id)}, coalesce(u.from_custom_id, u.custom_id),
            coalesce(u.from_batch, 'imported'), u.source, ?, {state.next_seq_sql()}, {', '.join('u.' + c for c in _COPIED)}
        from {_SOURCED} u""",
        [batch_id, utcnow()],
    )
    answers.refresh(state, [batch_id])
    rendered_writable(state)
    state.run(
        f"update {RENDERED} set include = false, reason = 'reused' "
        f"where (ordinal, custom_id) in (select (ordinal, custom_id) from {_SOURCED})"
    )


def record_template_errors(state: State) -> int:
    """Record rows whose template raised as failures with error_type template_error; return how many."""
    return _record_local_failures(state, "template_error", "prompt template raised for these rows")


def record_empty_prompts(state: State) -> int:
    """Record rows whose prompt rendered blank as failures with error_type empty_prompt; return how many."""
    return _record_local_failures(state, "empty_prompt", "prompt rendered empty for these rows; not sent")


def record_attachment_failures(state: State) -> int:
    """Record rows whose attachments failed a check (media.py) as failures of that kind; return how many."""
    return (_record_local_failures(state, "attachment_error", "attachments failed a check for these rows; not sent")
            + _record_local_failures(state, "attachment_missing", "required attachments are NULL for these rows"))


def _record_local_failures(state: State, kind: str, note: str) -> int:
    """Rows the spool pass judged `kind` (a reason), recorded as errored outcomes with that error_type."""
    rows = f"(select ordinal, custom_id from {RENDERED} where reason = {literal(kind)})"
    n = state.run(f"select count(*) from {rows}")[0][0]
    if n:
        with state.transaction():
            batch_id = _record_pseudo_batch(state, "local", rows, n, note)
            state.run(
                f"""insert or ignore into {state.table('outcomes')} (batch_id, custom_id, model_id, result_type,
                    error_type, error_message, harvested_at, harvest_seq)
                select ?, r.custom_id, {literal(state.model_id)}, 'errored', {literal(kind)}, r.error, ?,
                    {state.next_seq_sql()}
                from {RENDERED} r where r.reason = {literal(kind)}""",
                [batch_id, utcnow()],
            )
            answers.refresh(state, [batch_id])
    return n


def _record_pseudo_batch(state: State, kind: str, rows: str, n: int, note: str) -> str:
    """A submission + batch, already ended and harvested, holding the state rows of `rows`' lines."""
    batch_id = f"{kind}_{uuid.uuid4().hex[:24]}"
    submission_id = str(uuid.uuid4())
    now = utcnow()
    state.run(
        f"insert into {state.table('submissions')} (submission_id, model_id, status, batch_id, n_requests, n_bytes, "
        "intent_at, settled_at, note) values (?, ?, 'submitted', ?, ?, 0, ?, ?, ?)",
        [submission_id, state.model_id, batch_id, n, now, now, note],
    )
    state.run(
        f"""insert into {state.table('requests')} (submission_id, model_id, custom_id, key_json, input_hash,
            request_hash, attempt, model, key_custom_id, part, parts, max_tokens, dedup_of, part_hash, first_page,
            last_page, components, sent_hash)
        select ?, ?, r.custom_id, p.__cb_key_json, p.__cb_input_hash, r.request_hash, p.__cb_attempt,
            p.__cb_model, p.__cb_custom_id, r.part, r.parts, r.max_tokens, null, r.part_hash, r.first_page,
            r.last_page, {components_sql('p')}, r.sent_hash
        from {PENDING} p join {RENDERED} r on r.ordinal = p.__cb_ordinal
        where (r.ordinal, r.custom_id) in (select (ordinal, custom_id) from {rows})""",
        [submission_id, state.model_id],
    )
    state.run(
        f"insert into {state.table('batches')} (batch_id, model_id, submission_id, processing_status, created_at, "
        "ended_at, n_processing, n_succeeded, n_errored, n_canceled, n_expired, n_submitted, kind, polled_at, "
        "harvested_at, result_lines, reconciled) values (?, ?, ?, 'ended', ?, ?, 0, ?, ?, 0, 0, ?, ?, ?, ?, ?, true)",
        [batch_id, state.model_id, submission_id, now, now, n if kind == "reuse" else 0,
         n if kind != "reuse" else 0, n, kind, now, now, n],
    )
    return batch_id
