"""Retention benchmark: state size over 1,000 simulated hourly runs of a 100k-row model, 1% change per run.

Not a test. No dbt and no API: each simulated run writes what a real run writes for its changed rows,
through the product's own state functions (`State.record_intent`, `State.mark_submitted`,
`answers.refresh`, `runs` rows), with outcomes inserted as harvest inserts them (a 300-character
answer, usage, a marker line per batch), on a simulated hourly clock; then the end-of-run retention
step (`compaction.due` / `compaction.compact`) with `keep_history_days`. Every 100 runs it checkpoints
and prints the DuckDB file's size and the rows held, with and without compaction. With compaction the
size levels off once the window is full (DuckDB reuses the blocks freed by compaction); without it,
it grows by every run's rows forever. All spend stays: the script checks that `all_spend` equals the
sum of every outcome ever written and exits 1 if not.

    .venv/bin/python benchmarks/retention.py                       # 1,000 runs, 100k rows, 30 days
    .venv/bin/python benchmarks/retention.py --runs 300 --keep-days 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import duckdb  # noqa: E402

from dbt_claude_batch.run import answers  # noqa: E402
from dbt_claude_batch.state import compaction, spend  # noqa: E402
from dbt_claude_batch.state.state import State  # noqa: E402

MODEL = "main.tickets_labelled"
ANSWER = "x" * 300


def _counts():
    return SimpleNamespace(processing=0, succeeded=0, errored=0, canceled=0, expired=0)


def simulated_run(state: State, run: int, keys: list[int], now: dt.datetime) -> None:
    """One run's writes for `keys` (new or changed rows): intent, batch, outcomes, answers, run row."""
    submission = str(uuid.uuid4())
    batch_id = f"msgbatch_{run:06d}"
    marker = f"dbt_claude_batch-proof-{uuid.uuid4().hex}"
    key_list = ", ".join(str(k) for k in keys)
    requests = f"""select k::varchar as custom_id, '{{"id":' || k || '}}' as key_json,
        md5(k || '-{run}') as input_hash, sha256(k || '-{run}') as request_hash,
        coalesce((select max(attempt) from {state.table('requests')} r where r.model_id = '{MODEL}'
                  and r.key_custom_id = k::varchar), 0) + 1 as attempt,
        'claude-haiku-4-5' as request_model, k::varchar as key_custom_id, 1 as part, 1 as parts,
        null::integer as max_tokens, null::varchar as dedup_of
        from unnest([{key_list}]) t(k)"""
    state.record_intent(submission, len(keys), len(keys) * 600, requests, marker, 0.01)
    counts = _counts()
    counts.succeeded = len(keys) + 1
    batch = SimpleNamespace(id=batch_id, processing_status="ended", created_at=now, expires_at=now,
                            ended_at=now, cancel_initiated_at=None, archived_at=None, request_counts=counts)
    state.mark_submitted(submission, batch)
    with state.transaction():
        state.run(
            f"""insert into {state.table('outcomes')} (batch_id, custom_id, model_id, result_type, output_text,
                stop_reason, answered_model, input_tokens, output_tokens, harvested_at, service_tier, harvest_seq)
            select ?, custom_id, ?, 'succeeded', ?, 'end_turn', 'claude-haiku-4-5-20251001', 400, 80, ?, 'batch',
                   {state.next_seq_sql()}
            from (select custom_id from {state.table('requests')} where submission_id = ? union all select ?)""",
            [batch_id, MODEL, ANSWER, now, submission, marker])
        state.run(f"update {state.table('batches')} set harvested_at = ?, result_lines = ? where batch_id = ?",
                  [now, len(keys) + 1, batch_id])
        answers.refresh(state, [batch_id])
    state.run(f"insert into {state.table('runs')} (run_id, model_id, started_at, finished_at, n_harvested, outcome) "
              "values (?, ?, ?, ?, ?, 'ok')", [str(uuid.uuid4()), MODEL, now, now, len(keys)])


def simulate(path: str, rows: int, runs: int, change: float, keep_days: float | None) -> list[tuple]:
    con = duckdb.connect(path)
    state = State(con.cursor(), "dbt_claude_batch", MODEL)
    state.ensure()
    state.record_model(["id"], {"id": "BIGINT"})
    start = dt.datetime(2026, 1, 1)
    per_run = max(1, int(rows * change))
    figures = []
    compactions = []
    for run in range(runs + 1):
        now = start + dt.timedelta(hours=run)
        keys = list(range(rows)) if run == 0 else [
            (run * per_run + i) % rows for i in range(per_run)]  # a rolling 1%: every key changes in turn
        simulated_run(state, run, keys, now)
        if compaction.due(state, keep_days, now):
            t0 = time.perf_counter()
            compaction.compact(state, keep_days, now)
            compactions.append(time.perf_counter() - t0)
        if run % 100 == 0:
            con.execute("checkpoint")
            held = {t: con.execute(f"select count(*) from {state.table(t)}").fetchone()[0]
                    for t in ("requests", "outcomes", "answers", "runs")}
            figures.append((run, os.path.getsize(path), held))
    billed = con.execute(f"select sum(billed_usd) from ({spend.spend_view_sql('dbt_claude_batch')})").fetchone()[0]
    con.close()
    if compactions:
        print(f"keep_history_days={keep_days:g}: {len(compactions)} compactions, {sum(compactions):.1f} s in all, "
              f"the longest {max(compactions):.2f} s", flush=True)
    return figures, billed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--change", type=float, default=0.01)
    parser.add_argument("--keep-days", type=float, default=30)
    parser.add_argument("--no-baseline", action="store_true", help="skip the run without compaction")
    args = parser.parse_args()
    results = {}
    for label, keep in [("keep_history_days=%g" % args.keep_days, args.keep_days)] + (
            [] if args.no_baseline else [("no compaction", None)]):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            figures, billed = simulate(os.path.join(tmp, "state.duckdb"), args.rows, args.runs, args.change, keep)
            results[label] = (figures, billed, time.perf_counter() - t0)
    print(f"{args.runs} hourly runs of a {args.rows:,}-row model, {args.change:.0%} changed per run")
    print(f"{'run':>5}  " + "  ".join(f"{label:>34}" for label in results))
    for i, (run, _, _) in enumerate(next(iter(results.values()))[0]):
        cells = []
        for figures, _, _ in results.values():
            _, size, held = figures[i]
            cells.append(f"{size / 2**20:8.1f} MiB {held['requests']:>10,} requests")
        print(f"{run:>5}  " + "  ".join(f"{c:>34}" for c in cells))
    bills = {label: billed for label, (_, billed, _) in results.items()}
    for label, (_, billed, seconds) in results.items():
        print(f"{label}: all_spend {billed:.4f} USD, {seconds:.0f} s")
    if len(set(round(b, 9) for b in bills.values())) > 1:
        print("all_spend differs with compaction: the bill was not kept", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
