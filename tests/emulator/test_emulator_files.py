"""Contract tests of the Files API (SDK 2.14 `client.files` and `client.beta.files`) and file sources."""

from __future__ import annotations

import hashlib

import anthropic
import pytest

from emulator_contract import lines_by_id, raw_results, retrieve_ended
from media_builders import pdf_bytes, png_bytes

MODEL = "claude-haiku-4-5"
PROMPT = "Read it."


def sha12(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def file_params(*sources: tuple[str, str]) -> dict:
    blocks = [{"type": kind, "source": {"type": "file", "file_id": file_id}} for kind, file_id in sources]
    return {"model": MODEL, "max_tokens": 200,
            "messages": [{"role": "user", "content": [{"type": "text", "text": PROMPT}, *blocks]}]}


def test_a_file_is_uploaded_referenced_deleted_then_refused(api, emulator):
    pdf, png = pdf_bytes(4, "contract"), png_bytes(300, 200)
    up = api.files.upload(file=("contract.pdf", pdf, "application/pdf"))
    assert (up.type, up.filename, up.mime_type, up.size_bytes, up.downloadable) == (
        "file", "contract.pdf", "application/pdf", len(pdf), False)
    assert up.id.startswith("file_")
    # the beta resource (with its header) sees the same files; the MIME type comes from the bytes
    img = api.beta.files.upload(file=("scan.bin", png), betas=["files-api-2025-04-14"])
    assert img.mime_type == "image/png"
    assert api.files.retrieve_metadata(up.id).filename == "contract.pdf"

    reqs = [{"custom_id": "both", "params": file_params(("document", up.id), ("image", img.id))}]
    batch = api.messages.batches.create(requests=reqs)
    retrieve_ended(api, batch.id)
    result = lines_by_id(raw_results(api, batch.id))["both"]
    assert result["type"] == "succeeded"
    assert result["message"]["content"][0]["text"].endswith(f" | pdf:4p:{sha12(pdf)} image:300x200:{sha12(png)}")
    sync = api.messages.create(**file_params(("document", up.id)))
    assert sync.content[0].text.endswith(f" | pdf:4p:{sha12(pdf)}")

    deleted = api.files.delete(up.id)
    assert (deleted.id, deleted.type) == (up.id, "file_deleted")
    with pytest.raises(anthropic.NotFoundError):
        api.files.retrieve_metadata(up.id)
    with pytest.raises(anthropic.BadRequestError) as err:
        api.messages.create(**file_params(("document", up.id)))
    assert err.value.body["error"] == {"type": "invalid_request_error", "message":
                                       f"messages.0.content.1.document.source.file.file_id: File not found: {up.id}"}
    batch = api.messages.batches.create(requests=reqs)
    retrieve_ended(api, batch.id)
    assert lines_by_id(raw_results(api, batch.id))["both"]["error"]["error"]["type"] == "invalid_request_error"

    files = emulator.ledger()["files"]
    assert [(f["id"], f["sha256"], f["deleted_at"] is not None) for f in files] == [
        (up.id, hashlib.sha256(pdf).hexdigest(), True), (img.id, hashlib.sha256(png).hexdigest(), False)]


def test_a_file_of_the_wrong_kind_is_refused(api):
    text = api.files.upload(file=("notes.txt", b"Plain notes about the loan", "text/plain"))
    assert text.mime_type == "text/plain"
    msg = api.messages.create(**file_params(("document", text.id)))
    assert msg.content[0].text.endswith(" | text:Plain_notes_about_the_loan")
    with pytest.raises(anthropic.BadRequestError) as err:
        api.messages.create(**file_params(("image", text.id)))
    assert err.value.body["error"]["message"] == (
        "messages.0.content.1.image.source.file: the file's type text/plain is not an image "
        "('image/jpeg', 'image/png', 'image/gif' or 'image/webp')")


def test_files_are_listed_newest_first_with_pagination_and_survive_a_restart(api, emulator):
    ids = [api.files.upload(file=(f"f{i}.pdf", pdf_bytes(1, f"file {i}"))).id for i in range(5)]
    page = api.files.list(limit=2)
    assert [f.id for f in page.data] == ids[::-1][:2]
    assert page.has_more is True and page.first_id == ids[4] and page.last_id == ids[3]
    assert [f.id for f in api.files.list(limit=2)] == ids[::-1]  # SDK auto-pagination over next_page
    assert [f.id for f in api.beta.files.list(limit=2)] == ids[::-1]
    assert [f.id for f in api.files.list(ids=[ids[1], ids[3], "file_gone"])] == [ids[3], ids[1]]
    api.files.delete(ids[0])
    emulator.restart()
    client = emulator.client(max_retries=0)
    assert [f.id for f in client.files.list()] == ids[:0:-1]
    assert client.files.retrieve_metadata(ids[2]).size_bytes == len(pdf_bytes(1, "file 2"))
    with pytest.raises(anthropic.BadRequestError):
        client.files.download(ids[2])
    calls = emulator.ledger()["calls"]
    assert calls["POST /v1/files"] == {"200": 5}
    assert calls["DELETE /v1/files/{file_id}"] == {"200": 1}


def test_http_error_scenarios_reach_the_files_routes(api, emulator):
    emulator.add_scenario({"name": "http_error", "status": 529, "route": "upload_file", "times": 1})
    with pytest.raises(anthropic.APIStatusError) as err:
        api.files.upload(file=("a.pdf", pdf_bytes(1)))
    assert err.value.status_code == 529
    assert api.files.upload(file=("a.pdf", pdf_bytes(1))).mime_type == "application/pdf"
    assert [f["filename"] for f in emulator.ledger()["files"]] == ["a.pdf"]
