"""Sending what the spool pass rendered: answers reused, names and budget checked, routed, sent.

The budget guard counts the new work and what is already committed in flight (each submission's
estimate is recorded with its intent): `max_cost_usd` for this model, `max_cost_usd_all_models`
across every batch model of the state. The processing queue of a workspace is limited by the API
(past it, creates are refused with 429): `max_requests_in_flight` keeps this state's batches in
flight under a limit of your choosing, and a create the API refuses because the queue is full stops
submission for this run. Either way the rest waits, pending, for the next run, which stays green.
"""

from __future__ import annotations

import contextlib
from typing import Any

from dbt_claude_batch.run import planning, retention
from dbt_claude_batch.api.client import LazyClient
from dbt_claude_batch.base.errors import BudgetExceededError, ConfigError, SourceDataError, TemplateError
from dbt_claude_batch.run.interruption import StopFlag
from dbt_claude_batch.base.log import logger
from dbt_claude_batch.base.pricing import BATCH_DISCOUNT, estimate_input_tokens, list_price, unpriced, usd
from dbt_claude_batch.base.prompts import Prompt
from dbt_claude_batch.base.settings import Settings
from dbt_claude_batch.state.answer_sources import open_sources
from dbt_claude_batch.state.state import State
from dbt_claude_batch.state.workdir import scratch

# `auto` goes synchronous when the batch window (up to 24 h) plus this margin would miss the deadline.
AUTO_MARGIN_HOURS = 1.0


def submit_pending(api: LazyClient, state: State, prompt: Prompt, cfg: Settings, n_staged: int,
                   source_sql: str, stop: StopFlag | None = None, allow_rebuy: bool = False) -> tuple[int, int]:
    """Render, reuse held answers, check names and budget, route and send the pending rows.

    Returns the request lines sent, and those left waiting for room in the processing queue or
    because `stop` was set (checked before each create; a create sent finishes and is recorded).
    """
    from dbt_claude_batch.run.local_outcomes import (record_attachment_failures, record_empty_prompts,
                                                     record_template_errors, reuse_from_sources,
                                                     reuse_held_answers, wants_answers)
    from dbt_claude_batch.run.spool import build_spool

    with scratch() as tmp:
        spool = build_spool(state, prompt, cfg, tmp, source_sql)
        planning.record_aliases(state)
        n_errors = record_template_errors(state)
        n_empty = record_empty_prompts(state)
        n_attachments = record_attachment_failures(state)
        if n_attachments:
            first = state.run(f"select error from {planning.RENDERED} where reason like 'attachment%' "
                              "order by ordinal limit 1")[0][0]
            logger.warning(f"{n_attachments} row(s) have attachments that cannot be sent; they are recorded as "
                           f"failures with error_type attachment_error or attachment_missing (see the failures table). "
                           f"First: {first}")
        n_reused = reuse_held_answers(state)
        if n_reused:
            logger.info(f"{n_reused} requests already answered in state: reused, not bought again")
        if wants_answers(state):  # a source file is opened only when a line could be answered from it
            with open_sources(state.cursor, state.schema, cfg.answer_sources, prompt.project_dir) as sources:
                for label, n in reuse_from_sources(state, sources).items():
                    logger.info(f"{n} requests answered from {label} by exact request hash: reused at $0, not bought")
                    n_reused += n
        if n_reused:
            spool.refresh_counts()
        if n_empty:
            _empty_prompts(state, n_empty, n_errors, every=not spool.chunks and not n_reused)
        if n_errors:
            logger.warning(f"the prompt template raised for {n_errors} row(s); they are recorded as failures of "
                           "kind template_error (see the failures table)")
            if not spool.chunks and not n_reused:
                first = state.run(f"select error from {planning.RENDERED} where reason = 'template_error' limit 1")
                raise TemplateError(f"{first[0][0]}\nIt raised for every one of the {n_errors} rows to submit; "
                                    "nothing was submitted.")
        if not spool.chunks:
            return 0, 0
        reasons = planning.reason_counts(state)
        batch_lines = sum(c.n for c in spool.chunks if c.lane == "batch")
        route, why = choose_route(cfg, batch_lines)
        discount = BATCH_DISCOUNT if route == "batch" else 1.0
        prices = spool.list_price_usd()
        estimate = prices.get("sync", 0.0) + prices.get("batch", 0.0) * discount
        logger.info(
            f"{n_staged} source rows, {sum(reasons.values())} to submit "
            f"({', '.join(f'{v} {k}' for k, v in reasons.items())}) as {spool.n_lines} requests"
            + (f", {spool.n_deduplicated} sharing an identical request" if spool.n_deduplicated else "")
            + f"; route: {route} ({why}); {_estimate_note(cfg, spool, estimate)}"
        )
        from dbt_claude_batch.run.rebuy import check_rebuy

        check_rebuy(state, cfg, allow_rebuy, discount)  # before the budget: it says why, not only how much
        if spool.unpriced_models:  # a misspelt model is what is wrong then, not its missing price
            check_models(api, state, cfg)
        check_budget(cfg, state, estimate, spool.n_lines, spool.unpriced_models)
        if not spool.unpriced_models:  # after the budget: a refused budget asks the API nothing
            check_models(api, state, cfg)
        if spool.uploads is not None and not (stop is not None and stop.requested):  # after every guard
            from dbt_claude_batch.run.uploads import upload_needed

            spool.file_ids = upload_needed(api.get(), state, spool.uploads)

        room = None if cfg.max_requests_in_flight is None else cfg.max_requests_in_flight - state.requests_in_flight()
        state.reject_unsent(UNSENT_AFTER_CRASH)  # a run killed between a prepare and its create
        try:
            sent = _send(api, state, spool, cfg, route, discount, room, stop)
        except BaseException:
            # The error in flight is the one to see: an intent left prepared is inert (its requests count
            # nowhere) and the next run rejects it.
            with contextlib.suppress(Exception):
                state.reject_unsent(UNSENT_AFTER_STOP)
            raise
        state.reject_unsent(UNSENT_AFTER_STOP)
        return sent


PREPARED_AHEAD = "recorded the next batch's intent while the create before it was in flight"
UNSENT_AFTER_CRASH = "not sent: the run that prepared it ended before its create"
UNSENT_AFTER_STOP = "not sent: the run stopped before its create (a stop, a full queue or an error)"


def _send(api: LazyClient, state: State, spool, cfg: Settings, route: str, discount: float, room: int | None,
          stop: StopFlag | None) -> tuple[int, int]:
    """Send the chunks in order; while each batch's create is in flight, the next batch's intent is
    recorded (`submission.prepare`), so the state's writes overlap the uploads."""
    from dbt_claude_batch.run import submission
    from dbt_claude_batch.run.sync import run_sync

    def goes_to_batch(chunk, room_left: int | None) -> bool:  # room for its requests and its marker
        return chunk.lane != "sync" and route != "sync" and (room_left is None or chunk.n + 1 <= room_left)

    sent = waiting = stopped = 0
    prepared = None
    chunks = spool.chunks
    for i, chunk in enumerate(chunks):
        if stop is not None and stop.requested:
            stopped = sum(c.n for c in chunks[i:])
            break
        if chunk.lane == "sync" or route == "sync":
            retention.record_prompts(state, cfg, chunk.path, chunk.index)
            answered, not_sent = run_sync(api.get(), state, spool, chunk, cfg, stop)
            sent, stopped = sent + answered, stopped + not_sent
            continue
        if not goes_to_batch(chunk, room):
            waiting += chunk.n
            continue
        room_after = None if room is None else room - chunk.n - 1
        following = chunks[i + 1] if i + 1 < len(chunks) else None
        ahead: list = []

        def prepare_next(nxt=following, room_left=room_after, out=ahead) -> None:
            if nxt is not None and goes_to_batch(nxt, room_left) and not (stop is not None and stop.requested):
                out.append(submission.prepare(state, spool, nxt, spool.chunk_cost(nxt) * discount))
                logger.debug(f"{PREPARED_AHEAD} ({nxt.n} requests, submission {out[0].submission_id})")

        mine, prepared = prepared, None  # prepared for this chunk, if any (submit_chunk checks it is)
        try:
            submission.submit_chunk(api.get(), state, spool, chunk, cfg.in_doubt_grace_seconds,
                                    cfg.clock_skew_seconds, spool.chunk_cost(chunk) * discount, mine, prepare_next,
                                    stop)
            retention.record_prompts(state, cfg, chunk.path, chunk.index)
        except submission.StoppedBeforeCreate:
            stopped = sum(c.n for c in chunks[i:])
            break
        except submission.QueueFull as exc:
            waiting += sum(c.n for c in chunks[i:] if c.lane == "batch")
            logger.warning(f"the API refused a batch: the workspace's processing queue is full ({exc}); "
                           f"{waiting} requests wait, pending, for the next run")
            return sent, waiting
        prepared = ahead[0] if ahead else None
        sent += chunk.n
        if room is not None:
            room -= chunk.n + 1
    if waiting:
        logger.warning(f"{waiting} requests wait for room in the queue (max_requests_in_flight "
                       f"{cfg.max_requests_in_flight}); the next run submits them")
    return sent, waiting + stopped


def _empty_prompts(state: State, n_empty: int, n_errors: int, every: bool) -> None:
    """Say which rows rendered an empty prompt (recorded, not sent); fail the run when no row is left to send."""
    key, message = state.run(
        f"select p.__cb_key_json, r.error from {planning.PENDING} p join {planning.RENDERED} r "
        "on r.ordinal = p.__cb_ordinal where r.reason = 'empty_prompt' order by r.ordinal limit 1")[0]
    logger.warning(f"{n_empty} row(s) rendered an empty prompt and were not sent; they are recorded as failures "
                   f"with error_type empty_prompt (see the failures table). First: {message}")
    if every:
        others = f" and the template raised for the other {n_errors}" if n_errors else ""
        raise SourceDataError(
            f"The prompt rendered empty for {n_empty if n_errors else 'every one'} of the {n_empty + n_errors} "
            f"rows to submit (first: key {key}){others}: give those rows text or filter them out in the staging "
            "model; nothing was submitted, and they are recorded as failures with error_type empty_prompt.")


def check_models(api: LazyClient, state: State, cfg: Settings) -> None:
    from dbt_claude_batch.api.model_names import check_model_names

    names = [r[0] for r in state.run(
        f"select distinct p.__cb_model from {planning.PENDING} p join {planning.RENDERED} r "
        "on r.ordinal = p.__cb_ordinal where r.include")]
    setting = f"column `{cfg.model_column}`" if cfg.model_column else "setting `model`"
    check_model_names(api.get(), names, cfg.extra_models, setting)


def _estimate_note(cfg: Settings, spool, estimate: float) -> str:
    """The estimate for the log line; never $0 for work whose model has no price."""
    if not spool.unpriced_models:
        return f"estimated cost at most ${estimate:.4f}"
    note = f"no price known for {unpriced(spool.unpriced_models, cfg.prices)}"
    if estimate:
        return f"estimated cost at most ${estimate:.4f} for the priced models, and {note}"
    return note


def choose_route(cfg: Settings, n_requests: int) -> tuple[str, str]:
    """Where the pending requests go, and why (logged)."""
    if cfg.mode != "auto":
        return cfg.mode, f"mode: {cfg.mode}"
    if n_requests <= cfg.auto_sync_max_requests:
        return "sync", f"{n_requests} requests <= auto_sync_max_requests {cfg.auto_sync_max_requests}"
    if cfg.deadline_hours is not None and cfg.deadline_hours < 24 + AUTO_MARGIN_HOURS:
        return "sync", (f"deadline {cfg.deadline_hours}h is shorter than the batch window "
                        f"(24h + {AUTO_MARGIN_HOURS:g}h margin)")
    return "batch", f"{n_requests} requests > auto_sync_max_requests {cfg.auto_sync_max_requests}"


def check_calls_budget(cfg: Settings, state: State, calls: list[dict], discount: float, what: str,
                       fewer: str) -> float:
    """The budget guard for the requests a sample preview or a prompt comparison sends (`calls`: their
    params), at list price times `discount`, estimated as a run's are; returns the estimate."""
    estimate, missing = 0.0, set()
    for params in calls:
        price = list_price(params["model"], cfg.prices)
        if price is None:
            missing.add(params["model"])
        else:
            estimate += (estimate_input_tokens(params) * price[0] + params["max_tokens"] * price[1]) / 1e6 * discount
    check_budget(cfg, state, estimate, len(calls), missing, what, fewer)
    return estimate


def budget_limits(cfg: Settings, state: State, estimate: float) -> dict[str, dict[str, Any]]:
    """Per budget setting that is set: its limit, the spend committed in flight it counts (this model's,
    or every model's), and whether `estimate` on top of it passes the limit. The guard and the plan
    both decide by it."""
    found = {}
    for setting, limit, every_model in (("max_cost_usd", cfg.max_cost_usd, False),
                                        ("max_cost_usd_all_models", cfg.max_cost_usd_all_models, True)):
        if limit is not None:
            committed = state.committed_usd(every_model)
            found[setting] = {"limit": limit, "committed_usd": committed, "stops": estimate + committed > limit,
                              "every_model": every_model}
    return found


def check_budget(cfg: Settings, state: State, estimate: float, n_requests: int, unpriced_models: set[str],
                 what: str = "pending requests", fewer: str = "submit fewer rows (filter the staging model)") -> None:
    """Refuse before anything is sent when new work plus spend committed in flight passes a limit."""
    if cfg.max_cost_usd is None and cfg.max_cost_usd_all_models is None:
        return
    if unpriced_models:
        raise ConfigError(f"No price known for model(s) {unpriced(unpriced_models, cfg.prices)}; the budget guard "
                          "cannot estimate the cost without it, so nothing was submitted.")
    for setting, found in budget_limits(cfg, state, estimate).items():
        limit, committed = found["limit"], found["committed_usd"]
        if found["stops"]:
            scope = "every batch model of this state" if found["every_model"] else "this model"
            raise BudgetExceededError(
                f"Estimated cost {usd(estimate)} of {n_requests} {what}, plus {usd(committed)} committed "
                f"in flight for {scope}, is over the limit {setting} = {usd(limit)}: nothing was submitted. Raise "
                f"`{setting}` in the model's claude_batch settings, wait for the batches in flight to end, or "
                f"{fewer}.\n"
                "The estimate counts input as UTF-8 bytes / 4 tokens and output as max_tokens (the worst case)."
            )
