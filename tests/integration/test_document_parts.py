"""A PDF over the page limit, cut into parts and reassembled, through real dbt runs (4 invocations):
each part is its own request, a failed part is sent again alone, an edited PDF buys every part again."""

from __future__ import annotations

import hashlib
import json
import re

from media_builders import pdf_bytes

from dbt_harness import created_batches, row_requests

from dbt_claude_batch.base.pricing import cost_sql, model_family_sql, prices_cte

FAST = {"wait_seconds": 60, "poll_interval_seconds": 0.05}
TYPES = {"id": "BIGINT", "body": "VARCHAR", "doc": "BLOB"}
# The emulator answers the first label whose phrase is in the prompt or the document's text: the part
# holding page 85 answers p85. After ` | ` it names the PDF it read: its page count and sha.
TEMPLATE = "Which page is first? {{ body }}\nLabels: p1 (page 1/250), p85 (page 85/250), p168 (page 168/250), none"
PART = re.compile(r"(p1|p85|p168) \| pdf:(\d+)p:([0-9a-f]{12})")


def bought(project, batch_id: str, custom_ids: list[str]) -> float:
    """What these outcomes of one batch cost, priced from state as the bill prices them."""
    return project.query(
        f"with {prices_cte()} select sum({cost_sql('o', 'p')}) from dbt_claude_batch.outcomes o "
        f"left join cb_prices p on p.model_family = {model_family_sql('o.answered_model')} "
        f"where o.batch_id = ? and list_contains(?, o.custom_id)", [batch_id, custom_ids])[0][0]


def parts_of(answer: str) -> list[tuple[str, str, str]]:
    """(label, pages, sha12) of each part's answer, in the order the results row joined them."""
    pieces = answer.split("\n\n")
    assert all(PART.fullmatch(p) for p in pieces), answer
    return [PART.fullmatch(p).groups() for p in pieces]


def test_a_pdf_over_the_limit_is_cut_sent_in_parts_retried_part_by_part_and_reassembled(project, emulator):
    project.write("prompts/item.j2", TEMPLATE)
    project.configure(replace=False, attachments=[{"column": "doc", "kind": "document"}], max_pages_per_request=100,
                      max_failure_ratio=1, **FAST)
    loan, memo = pdf_bytes(250, "loan"), pdf_bytes(3, "memo")
    project.load_table("items", [{"id": 1, "body": "loan file", "doc": loan}, {"id": 2, "body": "memo", "doc": memo}],
                       types=TYPES)
    # The middle part fails once, with an error worth retrying.
    emulator.add_scenario({"name": "result_outcome", "custom_ids": ["1-p2"], "outcome": "api_error", "times": 1})

    project.run()
    sent = row_requests(emulator)
    assert sorted(r["custom_id"] for r in sent) == ["1-p1", "1-p2", "1-p3", "2"]
    results = project.results()
    assert sorted(results) == [2]  # key 1 is not complete while one of its parts failed
    assert results[2]["output_text"].startswith("none | pdf:3p:")
    failure = project.failures()[1]
    assert failure["error_type"] == "api_error"
    assert failure["error_message"].startswith("part 2 of 3 (pages 85-167): "), failure["error_message"]
    pages = project.query("select custom_id, part, parts, first_page, last_page from dbt_claude_batch.requests "
                          "where key_custom_id = '1' order by part")
    assert pages == [("1-p1", 1, 3, 1, 84), ("1-p2", 2, 3, 85, 167), ("1-p3", 3, 3, 168, 250)]

    # The next run sends the failed part alone; the others' answers are kept, not bought again. Its plan
    # says so first: one key to retry, one request.
    project.run(vars={"claude_batch_plan": True})
    plan = json.loads(project.query("select plan from dbt_claude_batch.plans order by planned_at desc limit 1")[0][0])
    assert (plan["rows"]["retry"], plan["rows"]["reusable"], plan["requests"]["to_send"]) == (1, 0, 1)
    project.run()
    assert sorted(r["custom_id"] for r in row_requests(emulator)[len(sent):]) == ["1-p2"]
    row = project.results()[1]
    assert row["attempt"] == 2 and row["parts"] == 3
    # The row cost what was bought for it in this run: the second part, in the second batch (its other
    # parts' answers were held, $0), and that batch is the one that completed it.
    retry = created_batches(emulator)[1]["id"]
    assert row["batch_id"] == retry and row["shared_from"] is None
    assert abs(row["cost_usd"] - bought(project, retry, ["1-p2"])) < 1e-12 and row["cost_usd"] > 0
    assert json.loads(row["part_pages"]) == [
        {"part": n, "custom_id": f"1-p{n}", "first_page": a, "last_page": b, "stop_reason": "end_turn"}
        for n, (a, b) in enumerate([(1, 84), (85, 167), (168, 250)], start=1)]
    assert project.results()[2]["part_pages"] is None
    first = parts_of(row["output_text"])
    # In page order, each part's answer its own: its first page's label, its page count.
    assert [(label, n) for label, n, _ in first] == [("p1", "84"), ("p85", "83"), ("p168", "83")]
    assert len({sha for _, _, sha in first}) == 3
    assert project.failures() == {}

    # An edited PDF: every part is bought again; the unchanged memo is not.
    edited = pdf_bytes(250, "loan v2")
    assert hashlib.sha256(edited).digest() != hashlib.sha256(loan).digest()
    project.load_table("items", [{"id": 1, "body": "loan file", "doc": edited},
                                 {"id": 2, "body": "memo", "doc": memo}], types=TYPES)
    before = len(row_requests(emulator))
    project.run()
    assert sorted(r["custom_id"] for r in row_requests(emulator)[before:]) == ["1-p1", "1-p2", "1-p3"]
    row = project.results()[1]
    assert abs(row["cost_usd"] - bought(project, row["batch_id"], ["1-p1", "1-p2", "1-p3"])) < 1e-12
    again = parts_of(row["output_text"])
    assert [(label, n) for label, n, _ in again] == [("p1", "84"), ("p85", "83"), ("p168", "83")]
    assert not {sha for _, _, sha in again} & {sha for _, _, sha in first}
