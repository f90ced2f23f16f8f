"""Attachments (pure): settings, media type from the bytes, path safety, per-row checks and blocks, estimates."""

from __future__ import annotations

import base64
import os

import pytest
from media_builders import jpeg_bytes, pdf_bytes, png_bytes

from dbt_claude_batch.base import media_types as mt
from dbt_claude_batch.base.errors import ConfigError, TemplateError
from dbt_claude_batch.base.prompts import Prompt
from dbt_claude_batch.base.settings import Settings
from dbt_claude_batch.run import media

KEY = '{"id":7}'


def settings(attachments=({"column": "doc", "kind": "document"},), **kw):
    base = {"key": "id", "prompt_column": "p", "model": "claude-haiku-4-5", "attachments": list(attachments) if isinstance(attachments, tuple) else attachments}
    return Settings.build(None, {**base, **kw})


def first_line(exc) -> str:
    return str(exc.value).splitlines()[0]


# --- settings ---------------------------------------------------------------------------------------------

def test_attachments_are_normalised_in_declared_order():
    s = settings([{"column": "scan", "kind": "image"}, {"column": "doc", "kind": "document", "required": True,
                                                        "title": "Loan file"}])
    assert s.attachments == ({"column": "scan", "kind": "image", "required": False, "title": None},
                             {"column": "doc", "kind": "document", "required": True, "title": "Loan file"})
    assert (s.oversized_image, s.max_pages_per_request, s.attachments_root) == ("downsize", 100, None)


@pytest.mark.parametrize("attachments, message", [
    ([{"column": "doc", "kind": "video"}],
     "Setting `attachments` item 0 (column 'doc') has kind 'video': set kind to one of document, image."),
    ([{"kind": "image"}],
     "Setting `attachments` item 0 needs `column`: the name of the source column holding the attachment."),
    ([{"column": "doc", "kind": "image", "title": "x"}],
     "Setting `attachments` item 0 (column 'doc') has title 'x': a title is text, and only documents take one; "
     "remove it or fix it."),
    ([{"column": "doc", "kind": "image", "colour": 1}],
     "Setting `attachments` item 0 has unknown field(s) colour: use only column, kind, required, title, upload."),
    ([{"column": "doc", "kind": "document", "upload": "s3"}],
     "Setting `attachments` item 0 (column 'doc') has upload 's3': set upload to one of inline, files_api."),
    ({"column": "doc"}, "Setting `attachments` must be a list of {column: NAME, kind: document|image}; "
                        "got {'column': 'doc'}: fix it in the model's claude_batch settings."),
])
def test_wrong_attachments_are_refused_naming_the_setting_and_the_fix(attachments, message):
    with pytest.raises(ConfigError) as info:
        settings(attachments)
    assert first_line(info) == message


def test_attachment_settings_values_are_checked():
    with pytest.raises(ConfigError, match=r"^Setting `oversized_image` must be one of downsize, error; got 'shrink'"):
        settings(oversized_image="shrink")
    with pytest.raises(ConfigError, match=r"^Setting `max_pages_per_request` must be an integer from 1 to 100"):
        settings(max_pages_per_request=101)
    with pytest.raises(ConfigError, match=r"^Settings `attachments` and `split_column` cannot be used together"):
        settings(split_column="p")


def test_attachment_columns_must_be_in_the_source_and_are_inputs_of_the_request():
    prompt = Prompt(settings([{"column": "doc", "kind": "document"}, {"column": "scan", "kind": "image"}]), None)
    assert prompt.input_columns == ["p", "doc", "scan"]
    with pytest.raises(TemplateError) as info:
        prompt.check_columns(["id", "p", "doc"])
    assert first_line(info).startswith("Setting `attachments` names column(s) scan that the source does not have")


def test_attachments_change_the_fingerprint_only_when_declared():
    plain = Settings.build(None, {"key": "id", "prompt_column": "p", "model": "m"})
    assert "attachments" not in plain.fingerprint_payload()
    assert settings().fingerprint_payload()["attachments"][0]["column"] == "doc"


# --- media type from the bytes ----------------------------------------------------------------------------

def test_media_type_comes_from_the_bytes():
    assert mt.detect(pdf_bytes(2)) == "application/pdf"
    assert mt.detect(png_bytes(4, 4)) == "image/png"
    assert mt.detect(jpeg_bytes(8, 8)) == "image/jpeg"
    assert mt.detect(b"GIF89a" + b"\x00" * 20) == "image/gif"
    assert mt.detect("Invoice n° 42\ntotal 10 €".encode()) == "text/plain"
    assert mt.detect(b"\x00\x01\x02binary") is None
    assert mt.detect(b"PK\x03\x04" + b"\x00" * 40) is None  # a zip (docx) is not a type the API takes


def test_image_tokens_are_estimated_at_the_size_the_model_sees():
    assert mt.image_tokens(1568, 1568) == 3279
    assert mt.image_tokens(200, 100) == 27
    assert mt.image_tokens(8000, 4000) == mt.image_tokens(1568, 784)  # downsized first


# --- path safety ------------------------------------------------------------------------------------------

@pytest.fixture
def root(tmp_path):
    base = tmp_path / "files"
    base.mkdir()
    (base / "a.pdf").write_bytes(pdf_bytes(3, "a"))
    (tmp_path / "secret.pdf").write_bytes(pdf_bytes(1, "secret"))
    os.symlink(tmp_path / "secret.pdf", base / "link.pdf")
    return os.path.realpath(base)


def test_local_paths_are_read_only_under_the_root(root, tmp_path):
    assert media.local_path("a.pdf", root) == os.path.join(root, "a.pdf")
    assert media.local_path(os.path.join(root, "a.pdf"), root) == os.path.join(root, "a.pdf")
    for escaping in ("../secret.pdf", "sub/../../secret.pdf", str(tmp_path / "secret.pdf"), "link.pdf"):
        with pytest.raises(ValueError, match="leads outside attachments_root"):
            media.local_path(escaping, root)
    with pytest.raises(ValueError, match="`attachments_root` is not set"):
        media.local_path("a.pdf", None)


def test_a_file_stamp_changes_when_the_file_does(root):
    before = media.file_stamp("a.pdf", root)
    with open(os.path.join(root, "a.pdf"), "ab") as handle:
        handle.write(b"\n% edited\n")
    assert media.file_stamp("a.pdf", root) != before
    assert media.file_stamp("../secret.pdf", root) == "unreadable:ValueError"
    assert media.file_stamp("gone.pdf", root) == "unreadable:FileNotFoundError"


def test_a_file_stamp_changes_when_the_file_becomes_readable(root, monkeypatch):
    """A file refused for its permissions, then fixed with chmod (size and mtime unchanged), is read again."""
    readable = media.file_stamp("a.pdf", root)
    monkeypatch.setattr(media.os, "access", lambda path, mode: False)  # as a non-root user sees mode 000
    assert media.file_stamp("a.pdf", root) != readable


# --- one row's attachments --------------------------------------------------------------------------------

def test_blob_pdf_and_png_become_blocks_in_declared_order():
    s = settings([{"column": "doc", "kind": "document", "title": "Loan"}, {"column": "scan", "kind": "image"}])
    pdf, png = pdf_bytes(2, "x"), png_bytes(300, 150)
    out = media.row_media({"doc": pdf, "scan": png}, s, None, KEY)
    assert out.blocks == [
        {"type": "document", "title": "Loan",
         "source": {"type": "base64", "media_type": "application/pdf", "data": base64.b64encode(pdf).decode()}},
        {"type": "image", "transformations": {"oversized_image": "downsize"},
         "source": {"type": "base64", "media_type": "image/png", "data": base64.b64encode(png).decode()}},
    ]
    assert out.tokens == 2 * mt.PDF_PAGE_TOKENS + mt.image_tokens(300, 150)


def test_local_text_document_url_and_file_id(root):
    with open(os.path.join(root, "note.txt"), "w") as handle:
        handle.write("hello contract")
    s = settings([{"column": "a", "kind": "document"}, {"column": "b", "kind": "document"},
                  {"column": "c", "kind": "image"}])
    out = media.row_media({"a": "note.txt", "b": "https://example.com/x.pdf", "c": "file_011abc"}, s, root, KEY)
    assert [b["source"] for b in out.blocks] == [
        {"type": "text", "media_type": "text/plain", "data": "hello contract"},
        {"type": "url", "url": "https://example.com/x.pdf"},
        {"type": "file", "file_id": "file_011abc"},
    ]


def test_files_api_attachments_name_their_content_and_count_only_the_reference():
    import hashlib

    s = settings([{"column": "doc", "kind": "document", "upload": "files_api"},
                  {"column": "scan", "kind": "image", "upload": "files_api"}, {"column": "url", "kind": "document",
                                                                               "upload": "files_api"}])
    pdf, png = pdf_bytes(4, "shared"), png_bytes(300, 150)
    out = media.row_media({"doc": pdf, "scan": png, "url": "https://example.com/x.pdf"}, s, None, KEY)
    sha_pdf, sha_png = hashlib.sha256(pdf).hexdigest(), hashlib.sha256(png).hexdigest()
    assert [b["source"] for b in out.blocks] == [
        {"type": "file", "file_id": f"dbt_claude_batch-sha256-{sha_pdf}"},
        {"type": "file", "file_id": f"dbt_claude_batch-sha256-{sha_png}"},
        {"type": "url", "url": "https://example.com/x.pdf"}]  # a URL is sent as it is
    assert out.uploads == [(sha_pdf, "application/pdf", pdf), (sha_png, "image/png", png)]
    assert out.tokens == 4 * mt.PDF_PAGE_TOKENS + mt.image_tokens(300, 150) + mt.PDF_PAGE_TOKENS
    assert out.n_bytes < 300  # the references, not the files
    # The checks still read the bytes: a corrupt PDF is refused before anything is uploaded.
    with pytest.raises(media.AttachmentProblem, match="is a corrupt PDF"):
        media.row_media({"doc": pdf[:150], "scan": None, "url": None}, s, None, KEY)


def test_an_uploaded_pdf_over_the_page_limit_is_refused_not_cut():
    # Only inline bytes are cut into page ranges: an uploaded file is one document of all its pages.
    s = settings([{"column": "doc", "kind": "document", "upload": "files_api"}], max_pages_per_request=5)
    with pytest.raises(media.AttachmentProblem, match=r"is a PDF of 6 pages, over max_pages_per_request 5, declared "
                       r"`upload: files_api`: declare it `upload: inline`"):
        media.row_media({"doc": pdf_bytes(6, "long")}, s, None, KEY)


def test_null_is_no_attachment_unless_required():
    assert media.row_media({"doc": None}, settings(), None, KEY).blocks == []
    with pytest.raises(media.AttachmentProblem) as info:
        media.row_media({"doc": None}, settings([{"column": "doc", "kind": "document", "required": True}]), None, KEY)
    assert info.value.kind == "attachment_missing"
    assert first_line(info).startswith('Required attachment in column `doc` is NULL for key {"id":7}: ')


def _no_page_pdf() -> bytes:
    import io

    import pypdf

    out = io.BytesIO()
    pypdf.PdfWriter().write(out)
    return out.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares its size and holds no pixels: enough for Pillow to read the size."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("value, kw, says", [
    (b"", {}, "is an empty file (0 bytes): fix or replace the file"),
    (_no_page_pdf(), {}, "is a PDF with no pages: the API refuses it; fix or replace the file"),
    (pdf_bytes(3)[:200], {}, "is a corrupt PDF"),
    # a JPEG cut short in its image data: Pillow's verify() passes it, decoding it does not
    (jpeg_bytes(512, 512)[:591], {"attachments": [{"column": "doc", "kind": "image"}]}, "is a corrupt image"),
    (pdf_bytes(2, encrypted=True), {}, "is an encrypted PDF: the API cannot read it"),
    (png_bytes(10, 10), {}, "holds image/png, but the column is declared kind document"),
    (b"\x00\x01\x02\x03", {}, "is not a supported type (from its bytes)"),
    ("Caf\u00e9 au lait".encode("latin-1"), {}, "is text, but not UTF-8 (byte 0xe9 at offset 3): save it as UTF-8"),
    ("http://example.com/a.pdf", {}, "is a plain http:// URL"),
    ("../../etc/passwd", {"root": True}, "cannot be read: the path '../../etc/passwd' leads outside attachments_root"),
    ("a.pdf", {}, "cannot be read: it is a local path, and `attachments_root` is not set"),
    ("missing.pdf", {"root": True}, "cannot be read ('missing.pdf': No such file or directory)"),
    (12, {}, "holds a int: an attachment column holds bytes (BLOB), a path, an https:// URL or a Files API id"),
])
def test_each_problem_is_an_attachment_error_naming_key_column_and_limit(value, kw, says, root):
    use_root = root if kw.pop("root", False) else None
    with pytest.raises(media.AttachmentProblem) as info:
        media.row_media({"doc": value}, settings(**kw), use_root, KEY)
    assert info.value.kind == "attachment_error"
    assert first_line(info).startswith(f'Attachment in column `doc` for key {{"id":7}} {says}')
    assert first_line(info).endswith("the row is recorded as a failure with error_type attachment_error, not sent, and "
                                     "rendered again when the row or its file changes.")


def test_a_pdf_with_a_damaged_cross_reference_table_that_pypdf_reads_is_sent():
    # Common in real scans (an extra line after the header moves every offset): readers recover its pages.
    good = pdf_bytes(3, "claim")
    damaged = good.replace(b"\n", b"\n% a comment a scanner wrote\n", 1)
    attached = media.row_media({"doc": damaged}, settings(), None, KEY)
    assert [b["type"] for b in attached.blocks] == ["document"] and attached.tokens == 3 * mt.PDF_PAGE_TOKENS


def test_a_path_named_as_a_binary_type_whose_bytes_are_text_is_not_sent(root):
    # A downloader that saved an error page as invoice.pdf: sent, it would be billed as a text document.
    with open(os.path.join(root, "invoice.pdf"), "w") as handle:
        handle.write("<html><body>404 Not Found</body></html>")
    with open(os.path.join(root, "scan.PNG"), "w") as handle:
        handle.write("Access denied")
    s = settings([{"column": "doc", "kind": "document"}, {"column": "scan", "kind": "image"}])
    with pytest.raises(media.AttachmentProblem) as info:
        media.row_media({"doc": "invoice.pdf", "scan": None}, s, root, KEY)
    assert info.value.kind == "attachment_error"
    assert first_line(info).startswith(
        'Attachment in column `doc` for key {"id":7} is named invoice.pdf, but its bytes are plain text, not a '
        "PDF: replace the file with the real document (or name it .txt to send it as text)")
    with pytest.raises(media.AttachmentProblem) as info:
        media.row_media({"doc": None, "scan": "scan.PNG"}, s, root, KEY)
    assert "is named scan.PNG, but its bytes are plain text, not a PNG image" in first_line(info)
    # Text under a text name, or under no extension, is a text document as before.
    for name in ("note.txt", "note"):
        with open(os.path.join(root, name), "w") as handle:
            handle.write("hello")
        out = media.row_media({"doc": name, "scan": None}, s, root, KEY)
        assert out.blocks[0]["source"]["media_type"] == "text/plain"


def test_an_empty_image_and_one_of_too_many_pixels_say_so():
    image = [{"column": "scan", "kind": "image"}]
    with pytest.raises(media.AttachmentProblem) as info:
        media.row_media({"scan": b""}, settings(image), None, KEY)
    assert first_line(info).startswith('Attachment in column `scan` for key {"id":7} is an empty file (0 bytes)')
    with pytest.raises(media.AttachmentProblem) as info:
        media.row_media({"scan": _png_header(15000, 13000)}, settings(image), None, KEY)
    assert first_line(info).startswith('Attachment in column `scan` for key {"id":7} is an image of 195,000,000 '
                                       "pixels, over the 178,956,970 Pillow opens safely: make it smaller")


def test_oversized_images_are_refused_only_when_asked():
    big = png_bytes(8001, 10)
    image = [{"column": "scan", "kind": "image"}]
    assert media.row_media({"scan": big}, settings(image), None, KEY).tokens == mt.image_tokens(8001, 10)
    with pytest.raises(media.AttachmentProblem) as info:
        media.row_media({"scan": big}, settings(image, oversized_image="error"), None, KEY)
    assert "is an image of 8001x10 px, over the API's 8000x8000 for a request with 1 image(s)" in first_line(info)
    many = [{"column": f"i{n}", "kind": "image"} for n in range(21)]
    row = {f"i{n}": png_bytes(2001 if n == 3 else 10, 10) for n in range(21)}
    with pytest.raises(media.AttachmentProblem, match=r"column `i3` .* over the API's 2000x2000 for a request with 21"):
        media.row_media(row, settings(many, oversized_image="error"), None, KEY)


def test_image_over_five_megabytes_base64_is_refused():
    noisy = png_bytes(10, 10) + os.urandom(4 * 1024 * 1024)  # a PNG with trailing bytes: still a PNG
    with pytest.raises(media.AttachmentProblem, match=r"over the API's limit of 5242880 \(5 MB\)"):
        media.row_media({"scan": noisy}, settings([{"column": "scan", "kind": "image"}]), None, KEY)


def test_pages_add_up_over_the_request():
    s = settings([{"column": "a", "kind": "document"}, {"column": "b", "kind": "document"}], max_pages_per_request=5)
    with pytest.raises(media.AttachmentProblem, match=r"brings the request's PDFs to 6 pages, over max_pages_per_request 5"):
        media.row_media({"a": pdf_bytes(3), "b": pdf_bytes(3)}, s, None, KEY)


def test_attachments_root_must_be_a_folder(tmp_path):
    assert media.resolve_root(settings(attachments_root="."), str(tmp_path)) == os.path.realpath(tmp_path)
    with pytest.raises(ConfigError, match=r"^Setting `attachments_root` is 'nope', which is not a folder"):
        media.resolve_root(settings(attachments_root="nope"), str(tmp_path))


def test_a_request_over_the_size_limit_names_the_files_api_way(monkeypatch):
    monkeypatch.setattr(media.mt, "MAX_REQUEST_BYTES", 1500)  # the API's 32 MB, made small
    with pytest.raises(media.AttachmentProblem) as info:
        media.row_media({"doc": pdf_bytes(3, "a long claim file")}, settings(), None, KEY)
    assert "over the API's limit of 1500 (32 MB) per request: send smaller files, or declare the column " \
           "`upload: files_api` (only the file's id travels in the request)" in first_line(info)
