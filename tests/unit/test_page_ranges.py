"""A PDF over the page limit cut into parts (pure, DuckDB in memory): the page ranges, the part ids,
the parts' blocks and estimates, and the spool's lines and verdicts for a cut row."""

from __future__ import annotations

import base64
import io
import json
import math
import re

import duckdb
import pypdf
import pytest
from media_builders import pdf_bytes, png_bytes

from dbt_claude_batch.base import media_types as mt
from dbt_claude_batch.base.pricing import list_price
from dbt_claude_batch.base.prompts import Prompt
from dbt_claude_batch.base.settings import Settings
from dbt_claude_batch.run import answers, media, parts, planning
from dbt_claude_batch.run.spool import build_spool
from dbt_claude_batch.state.queries import latest_outcomes_sql
from dbt_claude_batch.state.state import State

KEY = '{"id":7}'
DOC = {"column": "doc", "kind": "document"}
IMAGE = {"column": "scan", "kind": "image"}


def settings(attachments=(DOC,), **kw):
    return Settings.build(None, {"key": "id", "prompt_column": "p", "model": "claude-haiku-4-5",
                                 "attachments": list(attachments), **kw})


def shown_pages(block) -> list[str]:
    """The page labels (`page N/M`) a document block's PDF shows, in order."""
    reader = pypdf.PdfReader(io.BytesIO(base64.b64decode(block["source"]["data"])))
    return [re.search(r"page \d+/\d+", page.extract_text()).group(0) for page in reader.pages]


@pytest.mark.parametrize("pages, limit, expected", [
    (250, 100, [(1, 84), (85, 167), (168, 250)]),
    (100, 100, [(1, 100)]),
    (101, 100, [(1, 51), (52, 101)]),
    (7, 3, [(1, 3), (4, 5), (6, 7)]),
    (1, 1, [(1, 1)]),
])
def test_page_ranges_are_even_and_in_order(pages, limit, expected):
    assert parts.page_ranges(pages, limit) == expected


def test_page_ranges_cover_every_page_once_within_the_limit():
    for pages in range(1, 320):
        for limit in (1, 2, 3, 7, 50, 99, 100):
            ranges = parts.page_ranges(pages, limit)
            assert len(ranges) == math.ceil(pages / limit)
            assert [p for first, last in ranges for p in range(first, last + 1)] == list(range(1, pages + 1))
            sizes = [last - first + 1 for first, last in ranges]
            assert max(sizes) <= limit and max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError):
        parts.page_ranges(0, 100)


def test_part_ids_follow_the_api_rules_and_never_meet():
    assert parts.part_custom_id("loan-17", 2) == "loan-17-p2"
    long_a, long_b = "a" * 62, "a" * 61 + "b"
    ids = {parts.part_custom_id(k, n) for k in (long_a, long_b, "x" * 64) for n in (1, 2, 10, 100)}
    assert len(ids) == 12
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", i) for i in ids)


@pytest.mark.parametrize("estimate, too_long, cut_before, expected", [
    (80_000, None, None, 1),      # fits: sent whole
    (180_000, None, None, 1),     # at 90% of the window: still whole
    (190_000, None, None, 2),     # past it: parts of half the window each
    (450_000, None, None, 5),
    (10_000, 230_000, None, 3),   # the API said it needed 230k tokens: the estimate was wrong
    (10_000, None, 3, 3),         # cut in three last time: cut the same way, so only failed parts go again
    (450_000, None, 2, 5),        # a longer prompt than last time still gets the parts it needs
    (10_000, None, 1, 1),
])
def test_a_prompt_is_split_only_when_too_long_and_a_retry_is_cut_as_before(estimate, too_long, cut_before, expected):
    assert parts.split_count(estimate, too_long, cut_before, 200_000) == expected


def test_only_a_pdf_over_the_limit_is_cut_and_the_other_attachments_go_with_every_part():
    big, png = pdf_bytes(12, "big"), png_bytes(30, 20)
    attached = media.row_media({"doc": big, "scan": png}, settings([DOC, IMAGE], max_pages_per_request=5), None, KEY)
    assert attached.cut is not None and (attached.cut.pages, attached.cut.limit) == (12, 5)
    assert attached.tokens == mt.image_tokens(30, 20)  # the cut document's pages are counted per part
    cut = media.document_parts(attached, KEY)
    assert [(p.first, p.last, p.pages) for p in cut] == [(1, 4, 4), (5, 8, 4), (9, 12, 4)]
    for part in cut:
        assert [b["type"] for b in part.blocks] == ["document", "image"]
        assert part.blocks[1] is attached.blocks[1]
        assert shown_pages(part.blocks[0]) == [f"page {n}/12" for n in range(part.first, part.last + 1)]
        assert part.tokens == attached.tokens + part.pages * mt.PDF_PAGE_TOKENS
    small = media.row_media({"doc": pdf_bytes(5), "scan": None}, settings([DOC, IMAGE], max_pages_per_request=5),
                            None, KEY)
    assert small.cut is None and small.tokens == 5 * mt.PDF_PAGE_TOKENS


def test_two_pdfs_over_the_limit_or_no_room_beside_the_others_are_attachment_errors():
    two = settings([DOC, {"column": "other", "kind": "document"}], max_pages_per_request=5)
    with pytest.raises(media.AttachmentProblem) as info:
        media.row_media({"doc": pdf_bytes(6), "other": pdf_bytes(7)}, two, None, KEY)
    assert str(info.value).startswith('Attachment in column `other` for key {"id":7} is a PDF of 7 pages, over '
                                      "max_pages_per_request 5, and so is the one in column `doc`")
    with pytest.raises(media.AttachmentProblem) as info:
        media.row_media({"doc": pdf_bytes(6), "other": pdf_bytes(5)}, two, None, KEY)
    assert "already take 5 page(s) and 0 image(s) of each request's 5" in str(info.value)
    # Room left beside a short document: parts of 2 pages.
    attached = media.row_media({"doc": pdf_bytes(6), "other": pdf_bytes(3)}, two, None, KEY)
    assert [(p.first, p.last) for p in media.document_parts(attached, KEY)] == [(1, 2), (3, 4), (5, 6)]


def test_a_cut_row_is_one_line_per_part_with_its_pages_note_and_estimate(tmp_path):
    (tmp_path / "t.j2").write_text("Summarise {{ body }}", encoding="utf-8")
    s = Settings.build(None, {"key": "id", "prompt_template": "t.j2", "model": "claude-haiku-4-5",
                              "attachments": [DOC], "max_pages_per_request": 100})
    prompt = Prompt(s, str(tmp_path), {"id": "BIGINT", "body": "VARCHAR", "doc": "BLOB"})
    con = duckdb.connect()
    state = State(con, "dbt_claude_batch", "db.main.items_batch")
    state.ensure()
    con.execute("create table items (id bigint, body varchar, doc blob)")
    con.executemany("insert into items values (?, ?, ?)", [(1, "the loan", pdf_bytes(250, "loan")),
                                                           (2, "a memo", pdf_bytes(3, "memo"))])
    planning.stage(state, "select * from items", s.key, prompt.input_columns, None, s.model, prompt.fingerprint(),
                   (), ["doc"])
    planning.plan(state, 3, False, s.effective_max_tokens_cap, s.max_tokens, can_split=False)
    spool = build_spool(state, prompt, s, str(tmp_path), "select * from items")

    lines = [json.loads(line) for line in open(spool.lane_path("batch"), "rb")]
    assert [line["custom_id"] for line in lines] == ["1-p1", "1-p2", "1-p3", "2"]
    for line, (first, last) in zip(lines, [(1, 84), (85, 167), (168, 250)]):
        document, text = line["params"]["messages"][-1]["content"]
        assert text == {"type": "text", "text": f"Pages {first}-{last} of 250.\n\nSummarise the loan"}
        assert shown_pages(document) == [f"page {n}/250" for n in range(first, last + 1)]
    verdicts = con.execute(f"select custom_id, part, parts, request_hash, part_hash, first_page, last_page, cost "
                           f"from {planning.RENDERED} order by ordinal, part").fetchall()
    assert [v[:3] + v[5:7] for v in verdicts] == [("1-p1", 1, 3, 1, 84), ("1-p2", 2, 3, 85, 167),
                                                 ("1-p3", 3, 3, 168, 250), ("2", 1, 1, None, None)]
    assert len({v[3] for v in verdicts[:3]}) == 1 and len({v[4] for v in verdicts[:3]}) == 3 and verdicts[3][4] is None
    # The budget sees every part's pages (and its own max_tokens): each part costs its pages more than the memo's 3.
    price_in = list_price(s.model)[0] / 1e6
    for v in verdicts[:3]:
        assert abs(v[7] - verdicts[3][7] - (v[6] - v[5] + 1 - 3) * mt.PDF_PAGE_TOKENS * price_in) < 20 * price_in


def test_an_attempt_that_recorded_fewer_parts_than_it_was_cut_into_is_missing_never_complete():
    con = duckdb.connect()
    state = State(con, "dbt_claude_batch", "db.main.items_batch")
    state.ensure()
    s = '"dbt_claude_batch"'

    def record(part: int, submission: str, result: str | None) -> None:
        con.execute(f"insert into {s}.submissions (submission_id, model_id, status, batch_id, n_requests, n_bytes, intent_at) "
                    "values (?, ?, 'submitted', ?, 1, 0, now()) on conflict do nothing",
                    [submission, state.model_id, "b_" + submission])
        con.execute(f"insert into {s}.requests (submission_id, model_id, custom_id, key_json, input_hash, request_hash, "
                    "attempt, model, key_custom_id, part, parts, part_hash, first_page, last_page) "
                    "values (?, ?, ?, '{\"id\":1}', 'i', 'r', 1, 'm', '1', ?, 3, ?, ?, ?)",
                    [submission, state.model_id, f"1-p{part}", part, f"h{part}", part * 10 - 9, part * 10])
        if result:
            con.execute(f"insert into {s}.outcomes (batch_id, custom_id, model_id, result_type, harvest_seq, harvested_at) "
                        "values (?, ?, ?, ?, ?, now())", ["b_" + submission, f"1-p{part}", state.model_id, result, part])

    def outcome():
        return con.execute(f"select result_type, n_parts from ({latest_outcomes_sql(state)})").fetchall()

    record(1, "s1", "succeeded")
    record(3, "s1", "succeeded")
    assert outcome() == [("missing", 2)]  # part 2's submission went nowhere: the key is not answered
    record(2, "s2", None)
    assert outcome() == [(None, 3)]  # in flight
    con.execute(f"insert into {s}.outcomes (batch_id, custom_id, model_id, result_type, harvest_seq, harvested_at) "
                "values ('b_s2', '1-p2', ?, 'succeeded', 9, now())", [state.model_id])
    assert outcome() == [("succeeded", 3)]


def test_attempts_that_only_reused_held_parts_are_no_tries_of_the_part_never_sent():
    """A run reuses a key's answered parts, then stops before its create (the budget guard, a full
    queue, Ctrl-C): that attempt holds only reused parts and is `missing`, but nothing of it was
    sent, so it must not count against max_attempts (found by an audit: runs refused by the budget
    guard made a key give up on a part sent once)."""
    con = duckdb.connect()
    state = State(con, "dbt_claude_batch", "db.main.items_batch")
    state.ensure()
    s = '"dbt_claude_batch"'

    def attempt(n: int, batch: str, results: dict[int, str]) -> None:
        sub = f"s{n}{batch}"
        con.execute(f"insert into {s}.submissions (submission_id, model_id, status, batch_id, n_requests, n_bytes, "
                    "intent_at) values (?, ?, 'submitted', ?, 1, 0, now())", [sub, state.model_id, batch])
        for part, result in results.items():
            con.execute(f"insert into {s}.requests (submission_id, model_id, custom_id, key_json, input_hash, "
                        "request_hash, attempt, model, key_custom_id, part, parts, part_hash) "
                        "values (?, ?, ?, '{\"id\":1}', 'i', 'r', ?, 'm', '1', ?, 3, ?)",
                        [sub, state.model_id, f"1-p{part}", n, part, f"h{part}"])
            con.execute(f"insert into {s}.outcomes (batch_id, custom_id, model_id, result_type, error_type, "
                        "harvest_seq, harvested_at) values (?, ?, ?, ?, ?, ?, now())",
                        [batch, f"1-p{part}", state.model_id, result, "api_error" if result == "errored" else None,
                         n * 10 + part])

    def latest():
        return con.execute(f"select attempt, result_type, error_type, tries from ({latest_outcomes_sql(state)})").fetchall()

    attempt(1, "msgbatch_1", {1: "succeeded", 2: "errored", 3: "succeeded"})
    assert latest() == [(1, "errored", "api_error", 1)]
    attempt(2, "reuse_a", {1: "succeeded", 3: "succeeded"})  # part 2 never sent
    attempt(3, "reuse_b", {1: "succeeded", 3: "succeeded"})
    assert latest() == [(3, "missing", "not_sent", 1)]  # still one try: part 2 was sent once
    attempt(4, "reuse_c", {1: "succeeded", 3: "succeeded"})  # a part sent, beside the reused ones: a try
    attempt(4, "msgbatch_2", {2: "errored"})
    assert latest() == [(4, "errored", "api_error", 2)]


def test_a_key_with_one_part_of_two_recorded_gets_no_answer_until_both_are_answered():
    """The part of a key whose other part never reached state (a run stopped between two creates) is
    not the key's answer: the answers table (what results read) waits for every part."""
    con = duckdb.connect()
    state = State(con, "dbt_claude_batch", "db.main.items_batch")
    state.ensure()
    s = '"dbt_claude_batch"'

    def harvested(part: int, attempt: int) -> None:
        sub, batch = f"s{part}{attempt}", f"b{part}{attempt}"
        con.execute(f"insert into {s}.submissions (submission_id, model_id, status, batch_id, n_requests, n_bytes, "
                    "intent_at) values (?, ?, 'submitted', ?, 1, 0, now())", [sub, state.model_id, batch])
        con.execute(f"insert into {s}.batches (batch_id, model_id, submission_id, processing_status, ended_at, "
                    "harvested_at, n_submitted) values (?, ?, ?, 'ended', now(), now(), 1)", [batch, state.model_id, sub])
        con.execute(f"insert into {s}.requests (submission_id, model_id, custom_id, key_json, input_hash, request_hash, "
                    "attempt, model, key_custom_id, part, parts) values (?, ?, ?, '{\"id\":1}', 'i', 'r', ?, 'm', '1', ?, 2)",
                    [sub, state.model_id, f"1-p{part}", attempt, part])
        con.execute(f"insert into {s}.outcomes (batch_id, custom_id, model_id, result_type, output_text, harvest_seq, "
                    "harvested_at) values (?, ?, ?, 'succeeded', ?, ?, now())",
                    [batch, f"1-p{part}", state.model_id, f"answer {part}", part + attempt])
        answers.refresh(state, [batch])

    def held():
        return con.execute(f"select attempt, output_text, output_parts from {s}.answers").fetchall()

    harvested(1, 1)
    assert held() == []
    harvested(2, 1)
    assert held() == [(1, None, ["answer 1", "answer 2"])]  # not cut into pages: no part_pages
