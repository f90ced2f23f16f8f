"""The end-to-end floor: a batch job written the way the API tutorials write it, without dbt.

Reads the rows from DuckDB, builds one request per row, creates one batch with the SDK, retrieves it
every second until it ends, iterates the decoded results, and bulk-inserts them into a DuckDB table.
`benchmarks/ratios.py` times it against one `dbt run` of the batch model doing the same work, and
against a dbt Python model that runs `tutorial_job` itself (dbt's own cost for the same job).

    python benchmarks/tutorial_script.py DB_PATH [--max-tokens 16]

ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY come from the environment, as for the SDK.
"""

from __future__ import annotations

import argparse
import sys
import time

import anthropic
import duckdb
import pyarrow as pa

PROMPT = ("Classify this support ticket.\nLabels: billing (invoice, refund), bug, account, other\n\n"
          "Ticket {id}: {body}")


def tutorial_job(con, model: str = "claude-haiku-4-5", max_tokens: int = 16) -> pa.Table:
    """The job itself: rows in, one batch, results out as an Arrow table (custom_id, output_text)."""
    rows = con.execute("select id, body from raw.items order by id").fetchall()
    requests = [{"custom_id": str(i), "params": {
        "model": model, "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": PROMPT.format(id=i, body=body)}]}} for i, body in rows]

    client = anthropic.Anthropic(max_retries=0)
    batch = client.messages.batches.create(requests=requests)
    while batch.processing_status != "ended":
        time.sleep(1)
        batch = client.messages.batches.retrieve(batch.id)

    ids, texts = [], []
    for line in client.messages.batches.results(batch.id):
        if line.result.type == "succeeded":
            ids.append(line.custom_id)
            texts.append("".join(b.text for b in line.result.message.content if b.type == "text"))
    if len(ids) != len(requests):
        raise SystemExit(f"{len(ids)} results of {len(requests)} requests")
    return pa.table({"custom_id": ids, "output_text": texts})


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("db")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--model", default="claude-haiku-4-5")
    args = ap.parse_args(argv)

    con = duckdb.connect(args.db)
    results = tutorial_job(con, args.model, args.max_tokens)  # noqa: F841 - read by DuckDB below
    con.execute("create or replace table tutorial_results as select * from results")
    con.close()
    print(f"{results.num_rows} results")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
