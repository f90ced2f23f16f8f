"""Documents and images from warehouse rows, inline: local paths under the root and BLOBs, through real dbt runs."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from media_builders import pdf_bytes, png_bytes

from dbt_harness import create_calls, created_batches, is_marker, row_requests

FAST = {"wait_seconds": 60, "poll_interval_seconds": 0.05}
CLI = str(Path(sys.executable).parent / "dbt-claude-batch")
TYPES = {"id": "BIGINT", "body": "VARCHAR", "doc": "VARCHAR", "scan": "BLOB"}
def sha12(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def named(answer: str) -> str:
    """What the emulator's answer says of the attachments it read (after ` | `), in order."""
    return answer.split(" | ", 1)[1] if " | " in answer else ""


ATTACH = [{"column": "doc", "kind": "document", "title": "Loan file"}, {"column": "scan", "kind": "image"}]


def test_files_under_the_root_and_blobs_are_sent_checked_and_identified_by_content(project, emulator):
    files = project.root / "files"
    files.mkdir()
    a_pdf, b_pdf, png = pdf_bytes(2, "alpha"), pdf_bytes(3, "beta"), png_bytes(40, 30, (1, 2, 3))
    (files / "a.pdf").write_bytes(a_pdf)
    (files / "b.pdf").write_bytes(b_pdf)
    (files / "corrupt.pdf").write_bytes(pdf_bytes(3, "gamma")[:150])
    (files / "locked.pdf").write_bytes(pdf_bytes(2, "delta", encrypted=True))
    (project.root / "outside.pdf").write_bytes(pdf_bytes(1, "secret"))
    project.write("prompts/item.j2", "Review this {{ body }} file.")
    project.configure(replace=False, attachments=ATTACH, attachments_root="files", max_failure_ratio=1, **FAST)
    rows = [
        {"id": 1, "body": "loan", "doc": "a.pdf", "scan": png},
        {"id": 2, "body": "loan", "doc": "b.pdf", "scan": None},
        {"id": 3, "body": "loan", "doc": "corrupt.pdf", "scan": None},
        {"id": 4, "body": "loan", "doc": "locked.pdf", "scan": None},
        {"id": 5, "body": "loan", "doc": "../outside.pdf", "scan": None},
        {"id": 6, "body": "no files", "doc": None, "scan": None},
    ]
    project.load_table("items", rows, types=TYPES)
    out = project.run().stdout
    assert "3 row(s) have attachments that cannot be sent" in out

    results = project.results()
    assert sorted(results) == [1, 2, 6]
    # Each answer names its own files, in declared order: the document, then the image; row 6 is text only.
    assert named(results[1]["output_text"]) == f"pdf:2p:{sha12(a_pdf)} image:40x30:{sha12(png)}"
    assert named(results[2]["output_text"]) == f"pdf:3p:{sha12(b_pdf)}"
    assert named(results[6]["output_text"]) == ""
    failures = project.failures()
    assert {k: f["error_type"] for k, f in failures.items()} == {3: "attachment_error", 4: "attachment_error",
                                                                 5: "attachment_error"}
    assert failures[3]["error_message"].startswith('Attachment in column `doc` for key {"id":3} is a corrupt PDF')
    assert failures[4]["error_message"].startswith('Attachment in column `doc` for key {"id":4} is an encrypted PDF')
    assert failures[5]["error_message"].startswith(
        'Attachment in column `doc` for key {"id":5} cannot be read: the path \'../outside.pdf\' leads outside '
        'attachments_root')
    assert all("fix or replace the file" in f["next_action"] for f in failures.values())
    assert sorted(r["custom_id"] for r in row_requests(emulator)) == ["1", "2", "6"]  # the failures never sent

    # Nothing changed: nothing is read again or sent, and the failures are not recorded again.
    project.run()
    assert create_calls(emulator) == 1 and project.failures()[3]["attempt"] == 1

    # An edited file at the same path: that row alone is sent again. A touched but unchanged file is not.
    edited = pdf_bytes(4, "alpha edited")
    with open(files / "a.pdf", "wb") as handle:
        handle.write(edited)
    os.utime(files / "b.pdf", ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    project.run()
    assert sorted(r["custom_id"] for r in row_requests(emulator)) == ["1", "1", "2", "6"]
    results = project.results()
    assert results[1]["attempt"] == 2 and results[2]["attempt"] == 1
    assert named(results[1]["output_text"]) == f"pdf:4p:{sha12(edited)} image:40x30:{sha12(png)}"

    # The same file under another key is answered from state at $0; a required NULL is a failure of its own.
    project.configure(replace=False, attachments=[{**ATTACH[0], "required": True}, ATTACH[1]])
    project.load_table("items", [*rows[:2], {"id": 7, "body": "loan", "doc": "b.pdf", "scan": None}, rows[5]],
                       types=TYPES)
    project.run()
    results = project.results()
    assert results[7]["cost_usd"] == 0.0 and results[7]["shared_from"] == "2"
    assert named(results[7]["output_text"]) == f"pdf:3p:{sha12(b_pdf)}"
    missing = project.failures()[6]
    assert missing["error_type"] == "attachment_missing"
    assert missing["error_message"].startswith('Required attachment in column `doc` is NULL for key {"id":6}')
    assert len(row_requests(emulator)) == 4  # nothing bought


def test_one_content_under_two_paths_in_one_run_is_sent_once(project, emulator):
    """Two rows whose files differ only in name make one request (the same rendered params): one line is
    bought, and the other row gets its answer at $0, as rows with identical inputs do."""
    files = project.root / "files"
    files.mkdir()
    loan, scan = pdf_bytes(2, "one loan file"), png_bytes(20, 10, (9, 8, 7))
    for name in ("loan.pdf", "loan-copy.pdf"):
        (files / name).write_bytes(loan)
    (files / "other.pdf").write_bytes(pdf_bytes(1, "another file"))
    project.write("prompts/item.j2", "Review this {{ body }} file.")
    project.configure(replace=False, attachments=ATTACH, attachments_root="files", **FAST)
    project.load_table("items", [
        {"id": 1, "body": "loan", "doc": "loan.pdf", "scan": scan},
        {"id": 2, "body": "loan", "doc": "loan-copy.pdf", "scan": scan},   # the same request as row 1
        {"id": 3, "body": "deed", "doc": "loan-copy.pdf", "scan": scan},   # another question of the same file
        {"id": 4, "body": "loan", "doc": "other.pdf", "scan": scan},
    ], types=TYPES)
    project.run()
    assert sorted(r["custom_id"] for r in row_requests(emulator)) == ["1", "3", "4"]
    results = project.results()
    assert results[2]["shared_from"] == "1" and results[2]["cost_usd"] == 0.0
    assert results[2]["output_text"] == results[1]["output_text"]
    assert named(results[2]["output_text"]) == f"pdf:2p:{sha12(loan)} image:20x10:{sha12(scan)}"
    assert results[3]["shared_from"] is None and results[3]["output_text"] != results[1]["output_text"]
    assert project.query("select sum(n_deduplicated) from main.items_batch__batches") == [(1,)]
    # Key 1 erased: row 2, which shared its request, keeps its answer but no longer names key 1 anywhere;
    # and key 1's file touched (a copy or sync resets times) is not a change: it is not bought again.
    done = subprocess.run([CLI, "forget", "--model", "main.items_batch", "--key", "id=1", "--project-dir",
                           str(project.root)], env=project.env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert project.results()[2]["shared_from"] not in ("1", None)
    for table, column in (("answers", "shared_from"), ("outcomes", "shared_from"), ("requests", "dedup_of")):
        assert project.query(f"select count(*) from dbt_claude_batch.{table} where {column} = '1'") == [(0,)], table
    os.utime(files / "loan.pdf", ns=(2_000_000_000_000_000_000, 2_000_000_000_000_000_000))
    project.run()
    assert sorted(r["custom_id"] for r in row_requests(emulator)) == ["1", "3", "4"]
    assert sorted(project.results()) == [2, 3, 4]


def test_the_budget_guard_counts_pdf_pages_and_images(project, emulator):
    # 40 pages at 3,000 tokens (the upper bound): 120k input tokens, about $0.06 at
    # batch prices for claude-haiku-4-5; the text alone would be ~$0.0002.
    project.write("prompts/item.j2", "Review this {{ body }} file.")
    # The document goes through the Files API: a refused budget uploads nothing either.
    project.configure(replace=False, attachments=[{**ATTACH[0], "upload": "files_api"}, ATTACH[1]], max_cost_usd=0.01,
                      **FAST)
    project.load_table("items", [{"id": 1, "body": "loan", "doc": None, "scan": png_bytes(1568, 1568)},
                                 {"id": 2, "body": "loan", "doc": None, "scan": None}], types=TYPES)
    project.run()  # under the limit: an image and a text-only row
    project.load_table("items", [{"id": 3, "body": "big", "doc": pdf_bytes(40), "scan": None}],
                       types={**TYPES, "doc": "BLOB"})
    out = project.run(expect_ok=False).stdout
    assert "Estimated cost $0.06" in out and "is over the limit max_cost_usd = $0.0100: nothing was submitted" in out
    assert sorted(r["custom_id"] for r in row_requests(emulator)) == ["1", "2"]
    assert emulator.ledger(requests=False)["files"] == []


def test_the_synchronous_route_sends_the_same_blocks(project, emulator):
    project.write("prompts/item.j2", "Review this {{ body }} file.")
    # The document through the Files API, the image inline: the synchronous call names the uploaded file.
    project.configure(replace=False, attachments=[{**ATTACH[0], "upload": "files_api"}, ATTACH[1]], mode="sync", **FAST)
    pdf = pdf_bytes(5, "sync")
    project.load_table("items", [{"id": 1, "body": "loan", "doc": pdf, "scan": png_bytes(20, 10)}],
                       types={**TYPES, "doc": "BLOB"})
    project.run()
    assert named(project.results()[1]["output_text"]) == f"pdf:5p:{sha12(pdf)} image:20x10:{sha12(png_bytes(20, 10))}"
    assert create_calls(emulator) == 0
    (uploaded,) = emulator.ledger(requests=False)["files"]  # answered at once, so deleted at the end of the run
    assert uploaded["sha256"] == hashlib.sha256(pdf).hexdigest() and uploaded["deleted_at"] is not None


def _file_sources(emulator, batch_id: str) -> dict[str, list[dict]]:
    """custom_id -> the document sources of that request, as the emulator received the create body."""
    with open(os.path.join(emulator.state_dir, "batches", batch_id, "requests.json"), "rb") as handle:
        body = json.load(handle)
    return {r["custom_id"]: [b["source"] for b in r["params"]["messages"][-1]["content"] if b["type"] == "document"]
            for r in body["requests"] if not is_marker(r["custom_id"])}


def test_files_api_uploads_each_content_once_and_deletes_it_when_no_request_needs_it(project, emulator):
    files = project.root / "files"
    files.mkdir()
    big, other = pdf_bytes(30, "shared loan file"), pdf_bytes(2, "other")
    for name in ("big.pdf", "big-copy.pdf", "big-again.pdf"):  # one content under three paths
        (files / name).write_bytes(big)
    (files / "other.pdf").write_bytes(other)
    project.write("prompts/item.j2", "Review this {{ body }} file.")
    project.configure(replace=False, attachments=[{"column": "doc", "kind": "document", "upload": "files_api"}],
                      attachments_root="files", wait_seconds=0)
    rows = [{"id": 1, "body": "loan", "doc": "big.pdf"}, {"id": 2, "body": "deed", "doc": "big-copy.pdf"},
            {"id": 3, "body": "loan", "doc": "other.pdf"}]
    types = {"id": "BIGINT", "body": "VARCHAR", "doc": "VARCHAR"}
    project.load_table("items", rows, types=types)
    project.run()  # uploads, submits, and returns with the batch in flight
    uploaded = emulator.ledger(requests=False)["files"]
    by_sha = {f["sha256"]: f for f in uploaded}
    assert len(uploaded) == 2 and set(by_sha) == {hashlib.sha256(big).hexdigest(), hashlib.sha256(other).hexdigest()}
    assert all(f["deleted_at"] is None and f["filename"] == f"dbt_claude_batch-sha256-{f['sha256']}" for f in uploaded)
    (batch,) = created_batches(emulator)
    big_id, other_id = by_sha[hashlib.sha256(big).hexdigest()]["id"], by_sha[hashlib.sha256(other).hexdigest()]["id"]
    assert _file_sources(emulator, batch["id"]) == {"1": [{"type": "file", "file_id": big_id}],
                                                    "2": [{"type": "file", "file_id": big_id}],
                                                    "3": [{"type": "file", "file_id": other_id}]}

    # Nothing changed but the wait: the batch is harvested, nothing is uploaded or bought, the files are deleted.
    project.configure(replace=False, **FAST)
    project.run()
    results = project.results()
    assert {k: named(v["output_text"]) for k, v in results.items()} == {
        1: f"pdf:30p:{sha12(big)}", 2: f"pdf:30p:{sha12(big)}", 3: f"pdf:2p:{sha12(other)}"}
    uploaded = emulator.ledger(requests=False)["files"]
    assert len(uploaded) == 2 and all(f["deleted_at"] is not None for f in uploaded)
    assert project.query("select status, count(*) from dbt_claude_batch.uploaded_files group by all") == [("deleted", 2)]

    # The same content under another path and key, with a request already answered: reused, not uploaded again.
    project.load_table("items", [*rows, {"id": 4, "body": "loan", "doc": "big-again.pdf"}], types=types)
    project.run()
    results = project.results()
    assert results[4]["shared_from"] == "1" and results[4]["cost_usd"] == 0.0
    assert len(emulator.ledger(requests=False)["files"]) == 2 and create_calls(emulator) == 1
