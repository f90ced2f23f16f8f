"""At scale (`make test-scale`; not part of `make test`, which stays under 15 minutes): a 1,000,000-row
model whose workspace queue holds 200,000 requests goes through in green runs, nothing bought twice.
"""

from __future__ import annotations

import duckdb
import pytest

from dbt_harness import DbtProject, create_calls

pytestmark = pytest.mark.scale

ROWS = 1_000_000
QUEUE = 200_000
PER_BATCH = 100_000  # 99,999 rows and the marker


def test_a_million_rows_through_a_200k_queue_in_green_runs(tmp_path, emulator):
    emulator.configure(processing_delay=3600)
    # The API's own limit: a create past it is refused with 429 (and the run would say so).
    emulator.add_scenario({"name": "queue_limit", "max_requests": QUEUE, "retry_after": 60})
    project = DbtProject(tmp_path / "project", emulator)
    con = duckdb.connect(str(project.db_path))
    con.execute("create schema raw")
    con.execute(f"create table raw.items as select i::bigint as id, 'body number ' || i || ' with some text' as body "
                f"from range(1, {ROWS + 1}) t(i)")
    con.close()
    project.configure(replace=False, max_requests_per_batch=PER_BATCH, max_requests_in_flight=QUEUE,
                      wait_seconds=0, max_tokens=16)

    out = project.run().stdout  # green: what fits goes, the rest waits
    assert create_calls(emulator) == 2
    assert f"{ROWS - 2 * (PER_BATCH - 1)} requests wait for room in the queue (max_requests_in_flight {QUEUE})" in out

    runs = 1
    client = emulator.client(max_retries=0, timeout=600)
    while True:
        emulator.advance_clock(3601)
        # A fresh batch shows in_progress on its first access; spend that here, so each run harvests
        # the two batches in the queue and sends the next two.
        for batch in emulator.ledger(requests=False)["batches"]:
            if batch["processing_status"] != "ended":
                client.messages.batches.retrieve(batch["id"])
        out = project.run().stdout
        runs += 1
        assert "processing queue is full" not in out  # we never asked for more than fits
        in_flight = project.query("select count(*) from main.items_batch__batches where harvested_at is null")[0][0]
        if not in_flight:
            break
        assert runs < 10, out[-3000:]

    batches = -(-ROWS // (PER_BATCH - 1))
    assert create_calls(emulator) == batches
    ledger = emulator.ledger(requests=False)
    assert sum(b["request_count"] for b in ledger["batches"]) == ROWS + batches  # each row sent once, + markers
    # Every row has its own answer (the emulator answers a digest of the exact prompt).
    assert project.query(
        "select count(*), count(*) filter (where output_text = 'digest:' || sha256('Item ' || id || ': ' || body)[1:16]) "
        "from main.items_batch join raw.items using (id)") == [(ROWS, ROWS)]
    assert project.query("select count(*) from main.items_batch__failures") == [(0,)]
