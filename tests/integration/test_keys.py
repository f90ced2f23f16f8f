"""custom_id from awkward and composite keys; original key columns and types kept in the output."""

from __future__ import annotations

import datetime as dt
import re

from dbt_harness import created_batches, emulator_answer

FAST = {"wait_seconds": 60, "poll_interval_seconds": 0.05}

AWKWARD = [
    "plain-key_1", "a/b", "a_b", "a b", "a_b-", "user@example.com", "ключ-7", "emoji 🎉",
    "x" * 64, "x" * 80, "x" * 80 + "y", "", "{{ id }}",
]


def test_awkward_keys_get_valid_unique_readable_ids(project, emulator):
    rows = [{"id": k, "body": f"text for key {k!r}"} for k in AWKWARD]
    project.load_table("items", rows, types={"id": "VARCHAR", "body": "VARCHAR"})
    project.write_model(unique_key="id")
    project.configure(replace=False, **FAST)

    project.run()

    results = project.results()
    assert set(results) == set(AWKWARD)
    ids = [r["custom_id"] for r in results.values()]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", i) for i in ids)
    for key, row in results.items():
        text = f"Item {key}: text for key {key!r}"
        assert row["output_text"] == emulator_answer(text)
    assert results["plain-key_1"]["custom_id"] == "plain-key_1"
    assert results["a_b"]["custom_id"] == "a_b"
    assert results["x" * 64]["custom_id"] == "x" * 64
    assert results["a/b"]["custom_id"].startswith("a_b-") and results["a/b"]["custom_id"] != "a_b"
    assert results["user@example.com"]["custom_id"].startswith("user_example_com-")
    # Same key, same id on every run: a second run finds nothing to do.
    project.run()
    assert len(created_batches(emulator)) == 1


def test_composite_keys_keep_their_types(project, emulator):
    rows = [
        {"tenant": t, "day": dt.date(2026, 1, d), "n": n, "body": f"{t} {d} {n}"}
        for t in ("acme", "globex") for d in (1, 2) for n in (1, 2)
    ]
    project.load_table("items", rows, types={"tenant": "VARCHAR", "day": "DATE", "n": "BIGINT", "body": "VARCHAR"})
    project.write("prompts/item.j2", "{{ tenant }} on {{ day }} #{{ n }}: {{ body }}")
    project.write_model(unique_key=["tenant", "day", "n"])
    project.configure(replace=False, key=["tenant", "day", "n"], **FAST)

    project.run()

    types = dict(project.query("select column_name, data_type from information_schema.columns "
                               "where table_name = 'items_batch'"))
    assert (types["tenant"], types["day"], types["n"]) == ("VARCHAR", "DATE", "BIGINT")
    joined = project.query(
        "select i.tenant, i.day, i.n, i.body, r.output_text, r.custom_id "
        "from raw.items i join main.items_batch r using (tenant, day, n)"
    )
    assert len(joined) == 8
    for tenant, day, n, body, answer, custom_id in joined:
        text = f"{tenant} on {day} #{n}: {body}"
        assert answer == emulator_answer(text)
        assert custom_id.startswith(f"{tenant}-2026")  # readable, hashed because a date has '-'
    plain = project.query("select count(*) from main.items_batch__failures")
    assert plain == [(0,)]


def test_model_column_mixes_models_in_one_batch(project, emulator):
    rows = [{"id": i, "body": f"b{i}", "model": m} for i, m in
            enumerate(["claude-haiku-4-5", "claude-sonnet-4-6", None, "claude-opus-4-6"], start=1)]
    project.load_table("items", rows, types={"id": "BIGINT", "body": "VARCHAR", "model": "VARCHAR"})
    project.configure(replace=False, model_column="model", **FAST)
    project.run()
    got = {k: v["answered_model"] for k, v in project.results().items()}
    assert got == {1: "claude-haiku-4-5", 2: "claude-sonnet-4-6", 3: "claude-haiku-4-5", 4: "claude-opus-4-6"}
    assert len(created_batches(emulator)) == 1
    costs = {k: v["cost_usd"] for k, v in project.results().items()}
    assert costs[2] > costs[1] and costs[4] > costs[1]
