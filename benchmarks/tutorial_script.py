"""The end-to-end floor: a batch job written the way the API tutorials write it, without dbt.

Reads the rows from DuckDB, builds one request per row, creates one batch with the SDK, retrieves it
every second until it ends, iterates the decoded results, and bulk-inserts them into a DuckDB table.
`benchmarks/ratios.py` times it against one `dbt run` of the batch model doing the same work.

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


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("db")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--model", default="claude-haiku-4-5")
    args = ap.parse_args(argv)

    con = duckdb.connect(args.db)
    rows = con.execute("select id, body from raw.items order by id").fetchall()
    requests = [{"custom_id": str(i), "params": {
        "model": args.model, "max_tokens": args.max_tokens,
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
    results = pa.table({"custom_id": ids, "output_text": texts})  # noqa: F841 - read by DuckDB below
    con.execute("create or replace table tutorial_results as select * from results")
    con.close()
    print(f"{len(ids)} results of {len(requests)} requests")
    return 0 if len(ids) == len(requests) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
