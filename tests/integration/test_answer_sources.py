"""Dev and CI reuse prod's answers by proof: the exact request hash, read from prod's file or a Parquet export."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from dbt_harness import (DbtProject, create_calls, created_batches, emulator_answer, expected_answer, items,
                         row_requests)

FAST = {"wait_seconds": 60, "poll_interval_seconds": 0.05}
CLI = str(Path(sys.executable).parent / "dbt-claude-batch")
# Dev edits the template for row 5 only: every other row renders exactly what prod sent.
DEV_TEMPLATE = "{% if id == 5 %}Edited {{ id }}: {{ body }}{% else %}Item {{ id }}: {{ body }}{% endif %}"



def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, "answers", *args], capture_output=True, text=True, timeout=120)


def _bought(emulator, since: int) -> list[str]:
    """custom_ids of the rows' requests in the batches created after the first `since`."""
    new = {b["id"] for b in created_batches(emulator)[since:]}
    return sorted(r["custom_id"] for r in row_requests(emulator) if r["batch_id"] in new)


def _bill(emulator) -> float:
    return emulator.ledger(requests=False)["bill"]["total_usd"]


def _spend(project: DbtProject) -> tuple:
    """(requests billed, answers not bought, USD billed) of the project's state, as `all_spend` says."""
    return project.query("select sum(requests_billed), sum(answers_not_bought), sum(billed_usd) "
                         "from dbt_claude_batch.all_spend")[0]


def _reused(project: DbtProject) -> dict[str, tuple]:
    return {r[0]: r[1:] for r in project.query(
        "select custom_id, reused_source, reused_from from dbt_claude_batch.outcomes where reused_source is not null")}


def test_dev_and_ci_buy_only_what_changed_and_reuse_the_rest_of_prod_by_request_hash(project, emulator, tmp_path):
    prod = project
    rows = items(6)
    prod.load_table("items", rows)
    prod.configure(replace=False, **FAST)
    prod.run()
    (prod_batch,) = [b["id"] for b in created_batches(emulator)]
    prod_answers = {k: v["output_text"] for k, v in prod.results().items()}
    prod_bill = _bill(emulator)

    # dev: its own file; row 3's text edited in staging (same key, another request), row 5's template
    # branch edited, row 7 new. Prod's file is named relative to the dev project; a missing source is refused.
    dev = DbtProject(tmp_path / "dev", emulator)
    dev_rows = [dict(r, body="edited in dev") if r["id"] == 3 else r for r in rows] + items(1, start=7)
    dev.load_table("items", dev_rows)
    dev.write("prompts/item.j2", DEV_TEMPLATE)
    sources = [{"path": "../project/warehouse.duckdb"}, {"path": "../ci/nowhere.duckdb"}]
    dev.configure(replace=False, answer_sources=sources, **FAST)
    before = _file_digest(prod.db_path)

    refused = dev.run(expect_ok=False).stdout

    assert "Setting `answer_sources` item 1 names '../ci/nowhere.duckdb'" in refused
    assert "add `required: false`" in refused
    assert create_calls(emulator) == 1  # refused before any create

    dev.configure(replace=False, answer_sources=[sources[0], dict(sources[1], required=False)])
    # The plan says so before anything is bought: 4 rows answered from prod, 3 to buy, nothing created.
    dev.run(vars={"claude_batch_plan": True})
    planned = json.loads(dev.query("select plan from dbt_claude_batch.plans order by planned_at desc limit 1")[0][0])
    assert (planned["rows"]["new"], planned["rows"]["reusable"], planned["rows"]["reusable_other_state"]) == (3, 4, 4)
    assert planned["requests"]["to_send"] == 3, planned["requests"]
    assert create_calls(emulator) == 1
    out = dev.run().stdout

    prod_label = f"{os.path.realpath(prod.db_path)}:dbt_claude_batch"
    assert f"4 requests answered from {prod_label} by exact request hash: reused at $0, not bought" in out
    assert _bought(emulator, 1) == ["3", "5", "7"]  # never by key alone: row 3's key is prod's, its request is not
    results = dev.results()
    for k in (1, 2, 4, 6):
        assert results[k]["output_text"] == prod_answers[k] == expected_answer(k, f"body number {k} with some text")
        assert results[k]["cost_usd"] == 0.0
    assert results[3]["output_text"] == expected_answer(3, "edited in dev") != prod_answers[3]
    assert results[5]["output_text"] == emulator_answer("Edited 5: body number 5 with some text") != prod_answers[5]
    assert all(results[k]["cost_usd"] > 0 for k in (3, 5, 7))
    assert _reused(dev) == {str(k): (prod_label, prod_batch) for k in (1, 2, 4, 6)}
    assert dev.query("select n_reused, n_submitted from dbt_claude_batch.runs where finished_at is not null "
                     "order by started_at desc limit 1") == [(4, 3)]
    requests_billed, not_bought, billed = _spend(dev)  # reused answers cost $0: dev paid for its 3 rows only
    assert (requests_billed, not_bought) == (3, 4)
    assert abs(billed - (_bill(emulator) - prod_bill)) < 1e-9
    dev_bill = _bill(emulator)
    assert _file_digest(prod.db_path) == before  # read-only: prod's file is never written
    assert not Path(f"{prod.db_path}.wal").exists()

    # CI: a Parquet export of prod's answers, imported into a third project that never opens prod's file.
    exported = tmp_path / "answers.parquet"
    done = _cli("export", "--database", str(prod.db_path), "--model", "items_batch", "--to", str(exported))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("exported 6 answers of items_batch")
    ci = DbtProject(tmp_path / "ci", emulator)
    ci_rows = [dict(r, body="changed for CI") if r["id"] == 6 else r for r in rows]
    ci.load_table("items", ci_rows)
    ci.configure(replace=False, **FAST)
    for expected in ("imported 6 answers", "imported 0 answers"):  # a second import adds nothing
        done = _cli("import", "--database", str(ci.db_path), "--from", str(exported))
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(expected)
    assert "(6 already held)" in done.stdout

    ci.run()

    assert _bought(emulator, 2) == ["6"]
    requests_billed, not_bought, billed = _spend(ci)
    assert (requests_billed, not_bought) == (1, 5)
    assert abs(billed - (_bill(emulator) - dev_bill)) < 1e-9
    assert create_calls(emulator) == 3
    ci_results = ci.results()
    assert {k: v["output_text"] for k, v in ci_results.items() if k != 6} == {
        k: v for k, v in prod_answers.items() if k != 6}
    assert ci_results[6]["output_text"] == expected_answer(6, "changed for CI")
    reused = _reused(ci)
    assert sorted(reused) == ["1", "2", "3", "4", "5"]
    assert {src for src, _ in reused.values()} == {f"imported {exported} <- {prod_label}"}
    assert {batch for _, batch in reused.values()} == {prod_batch}
