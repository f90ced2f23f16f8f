"""Attachments of one row: read, checked against the API's limits, and turned into content blocks.

A column named in `attachments` holds, per row: raw bytes (a DuckDB BLOB), an ``https://`` URL (sent as
a `url` source: the API fetches it, so its identity is the URL), a Files API id (``file_...``, sent as a
`file` source), or a local path, read only under `attachments_root` after resolving links. NULL means
no attachment, unless the attachment is `required`. An attachment declared `upload: files_api` whose
bytes are read here (a BLOB or a local path) is sent as a `file` source naming a placeholder of its
content hash, swapped for the Files API id at submit (uploads.py). Everything is checked before any create; a row that
fails a check becomes a failure of its own (``attachment_error``, or ``attachment_missing`` for a
required NULL), never sent, and rendered again when the row or its file changes. A single PDF over
`max_pages_per_request` is not a failure: it is cut into page ranges (`document_parts`, parts.py),
each part a request of its own carrying the row's other attachments.

Bytes are read one row at a time, while the spool writes that row's line: never a whole batch.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from dbt_claude_batch.base import media_types as mt
from dbt_claude_batch.base.errors import ConfigError
from dbt_claude_batch.base.identifiers import quote
from dbt_claude_batch.base.pricing import text_tokens
from dbt_claude_batch.base.settings import Settings
from dbt_claude_batch.run import parts
from dbt_claude_batch.run.uploads import placeholder

MISSING = "attachment_missing"
INVALID = "attachment_error"
KINDS = (INVALID, MISSING)
STAMPS = "cb_file_stamps"
# Room for the JSON around the attachments and the prompt when judging a request's size.
_ENVELOPE_BYTES = 16 * 1024


class AttachmentProblem(Exception):
    """One row's attachment cannot be sent; `kind` is its failure kind, the message its error_message."""

    def __init__(self, kind: str, message: str):
        self.kind = kind
        super().__init__(message)


@dataclass
class CutDocument:
    """A PDF over the page limit, cut into parts (parts.py): where its block is, its bytes and pages,
    and how many pages one part may hold beside the row's other attachments."""

    index: int
    column: str
    data: bytes
    pages: int
    limit: int = 0


@dataclass
class DocumentPart:
    """One part of a cut document: its pages, the row's blocks with that part in place, their tokens."""

    first: int
    last: int
    pages: int
    blocks: list[dict[str, Any]]
    tokens: int


@dataclass
class RowMedia:
    """A row's attachment blocks, in declared order, and their estimated input tokens (without the
    pages of a cut document, which each part adds)."""

    blocks: list[dict[str, Any]] = field(default_factory=list)
    tokens: int = 0
    n_bytes: int = 0
    cut: CutDocument | None = None
    uploads: list[tuple[str, str, bytes]] = field(default_factory=list)  # (sha256, media type, bytes) for files_api


def resolve_root(settings: Settings, project_dir: str | None) -> str | None:
    """`attachments_root` as a real path (relative to the dbt project directory), or None when unset."""
    if settings.attachments_root is None:
        return None
    root = os.path.join(project_dir or os.getcwd(), os.path.expanduser(settings.attachments_root))
    root = os.path.realpath(root)
    if not os.path.isdir(root):
        raise ConfigError(f"Setting `attachments_root` is {settings.attachments_root!r}, which is not a folder "
                          f"({root}): fix the path (relative to the dbt project directory); nothing was submitted.")
    return root


def local_path(value: str, root: str | None) -> str:
    """The real path of a local attachment, only under `root`; raises ValueError saying why not."""
    if root is None:
        raise ValueError("it is a local path, and `attachments_root` is not set: set `attachments_root` to the "
                         "folder holding the files (paths are read only under it)")
    if not value or "\x00" in value:
        raise ValueError("it is not a usable path")
    real = os.path.realpath(os.path.join(root, value))
    if os.path.commonpath([real, root]) != root:
        raise ValueError(f"the path {value!r} leads outside attachments_root {root} (after resolving links and "
                         "`..`): move the file under the root or fix the path")
    return real


def file_stamp(value: str, root: str | None) -> str:
    """What the input hash sees of a local file: its size and modification time, or why it cannot be read
    (a file this process may not read is stamped so: fixed with chmod, it is read again)."""
    try:
        path = local_path(value, root)
        st = os.stat(path)
    except (ValueError, OSError) as exc:
        return "unreadable:" + type(exc).__name__
    return f"{st.st_size}:{st.st_mtime_ns}" + ("" if os.access(path, os.R_OK) else ":not-readable")


def is_local(value: Any) -> bool:
    return isinstance(value, str) and not value.startswith(("https://", "http://", "file_"))


def stamp_local_files(state, source_sql: str, columns: Sequence[str], root: str | None) -> str:
    """Stat every local path the `columns` name into a temp table (path -> stamp); return their digest.

    Staging adds each path's stamp to the row's input hash, so an edited file at the same path is
    rendered again (its request hash then decides whether it is bought again)."""
    import pyarrow as pa

    if not columns:
        return hashlib.sha256().hexdigest()
    unions = " union ".join(
        f"select cast({quote(c)} as varchar) as p from ({source_sql}) where {quote(c)} is not null" for c in columns)
    reader = state.cursor.sql(f"select distinct p from ({unions}) order by p").to_arrow_reader(10_000)
    paths: list[str] = []
    stamps: list[str] = []
    digest = hashlib.sha256()
    for batch in reader:
        for value in batch.column(0).to_pylist():
            if is_local(value):
                stamp = file_stamp(value, root)
                paths.append(value)
                stamps.append(stamp)
                digest.update(f"{value}\x00{stamp}\x00".encode())
    table = pa.table({"__cb_stamp_path": pa.array(paths, pa.string()), "__cb_stamp": pa.array(stamps, pa.string())})
    state.cursor.register("cb_file_stamps_arrow", table)
    try:
        state.run(f"create or replace temp table {STAMPS} as select * from cb_file_stamps_arrow")
    finally:
        state.cursor.unregister("cb_file_stamps_arrow")
    return digest.hexdigest()


def row_media(row: Mapping[str, Any], settings: Settings, root: str | None, key_json: str,
              text_bytes: int = 0) -> RowMedia:
    """The attachment blocks of one row, in declared order; raises AttachmentProblem for the first problem."""
    out = RowMedia()
    images: list[tuple[str, int, int]] = []
    pages = 0
    for item in settings.attachments:
        column = item["column"]
        value = row.get(column)
        if value is None:
            if item["required"]:
                raise AttachmentProblem(MISSING, (
                    f"Required attachment in column `{column}` is NULL for key {key_json}: give the row a file or "
                    "drop `required` for this column; the row is recorded as a failure with error_type attachment_missing "
                    "and sent when the row changes."))
            continue
        block, n_pages, size = _block(item, value, settings, root, key_json)
        if "_cut" in block:
            data, n_pages = block.pop("_cut")
            if out.cut is not None:
                raise _problem(key_json, column, f"is a PDF of {n_pages} pages, over max_pages_per_request "
                               f"{settings.max_pages_per_request}, and so is the one in column `{out.cut.column}`: "
                               "only one document per row is cut into parts; split one of the files")
            out.cut = CutDocument(len(out.blocks), column, data, n_pages)
            n_pages = None
        if n_pages is not None:
            pages += n_pages
        if size is not None:
            images.append((column, *size))
        out.tokens += block.pop("_tokens")
        out.n_bytes += block.pop("_bytes")
        if "_upload" in block:
            out.uploads.append(block.pop("_upload"))
        out.blocks.append(block)
    _request_limits(settings, key_json, images, pages, out.n_bytes + text_bytes)
    if out.cut is not None:
        # Every part carries the row's other attachments: their pages and images leave less room.
        out.cut.limit = min(settings.max_pages_per_request - pages, mt.MAX_PDF_PAGES - pages - len(images))
        if out.cut.limit < 1:
            raise _problem(key_json, out.cut.column, f"is a PDF of {out.cut.pages} pages to cut into parts, but the "
                           f"row's other attachments already take {pages} page(s) and {len(images)} image(s) of "
                           f"each request's {settings.max_pages_per_request}: send fewer attachments per row")
    return out


def document_parts(attached: RowMedia, key_json: str, text_bytes: int = 0) -> list[DocumentPart]:
    """The parts of a row's cut document, in page order: each holds the row's blocks with one page range
    of the document in its place (the other attachments go with every part). Built for one row at a
    time; raises AttachmentProblem when a part would pass the API's bytes per request."""
    cut = attached.cut
    out = []
    ranges = parts.page_ranges(cut.pages, cut.limit)
    for (first, last), data in zip(ranges, parts.pdf_parts(cut.data, ranges)):
        encoded = base64.b64encode(data).decode("ascii")
        if attached.n_bytes + len(encoded) + text_bytes + _ENVELOPE_BYTES > mt.MAX_REQUEST_BYTES:
            raise _problem(key_json, cut.column, f"is cut into parts of at most {cut.limit} pages, and pages "
                           f"{first}-{last} still bring a request to over the API's limit of {mt.MAX_REQUEST_BYTES} "
                           "(32 MB): lower max_pages_per_request or send smaller files")
        blocks = list(attached.blocks)
        template = blocks[cut.index]
        blocks[cut.index] = {**template, "source": {**template["source"], "data": encoded}}
        n = last - first + 1
        out.append(DocumentPart(first, last, n, blocks, attached.tokens + n * mt.PDF_PAGE_TOKENS))
    return out


def _problem(key_json: str, column: str, what: str) -> AttachmentProblem:
    return AttachmentProblem(INVALID, (
        f"Attachment in column `{column}` for key {key_json} {what}; the row is recorded as a failure with error_type "
        "attachment_error, not sent, and rendered again when the row or its file changes."))


def _block(item: Mapping[str, Any], value: Any, settings: Settings, root: str | None,
           key_json: str) -> tuple[dict[str, Any], int | None, tuple[int, int] | None]:
    column, kind = item["column"], item["kind"]
    if isinstance(value, str) and value.startswith(("https://", "file_")):
        source = {"type": "url", "url": value} if value.startswith("https://") else {"type": "file", "file_id": value}
        # Not read here, so not measured: estimated as one page, or one full-size image.
        tokens = mt.PDF_PAGE_TOKENS if kind == "document" else mt.image_tokens(mt.IMAGE_LONG_EDGE, mt.IMAGE_LONG_EDGE)
        return _wrap(item, settings, source, tokens, len(value)), None, None
    if isinstance(value, str) and value.startswith("http://"):
        raise _problem(key_json, column, f"is a plain http:// URL ({value[:80]}): only https:// URLs are sent; use "
                       "https, a local path under attachments_root, or the file's bytes")
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    elif isinstance(value, str):
        try:
            with open(local_path(value, root), "rb") as handle:
                data = handle.read()
        except ValueError as exc:
            raise _problem(key_json, column, f"cannot be read: {exc}") from None
        except OSError as exc:
            raise _problem(key_json, column, f"cannot be read ({value!r}: {exc.strerror or exc}): fix the path or "
                           "the file's permissions") from None
    else:
        raise _problem(key_json, column, f"holds a {type(value).__name__}: an attachment column holds bytes (BLOB), "
                       "a path, an https:// URL or a Files API id")
    if not data:
        # An empty file would go as an empty text document (or a wrong kind): nothing to read, so not sent.
        raise _problem(key_json, column, "is an empty file (0 bytes): fix or replace the file, or make the value "
                       "NULL for a row without one")
    media = mt.detect(data)
    if media is None:
        undecodable = mt.not_utf8(data)
        if undecodable is not None:
            raise _problem(key_json, column, f"is text, but not UTF-8 ({undecodable}): save it as UTF-8 (plain text "
                           "documents are sent as UTF-8)")
        raise _problem(key_json, column, "is not a supported type (from its bytes): send PDF or plain text "
                       "documents, or JPEG, PNG, GIF or WebP images")
    claimed = mt.claimed_binary_type(value) if isinstance(value, str) and media == "text/plain" else None
    if claimed:
        raise _problem(key_json, column, f"is named {os.path.basename(value)}, but its bytes are plain text, not "
                       f"{claimed}: replace the file with the real document (or name it .txt to send it as text)")
    if mt.kind_of(media) != kind:
        raise _problem(key_json, column, f"holds {media}, but the column is declared kind {kind}: fix the file or "
                       "the attachment's `kind`")
    if item.get("upload") == "files_api":
        return _file_block(item, settings, data, media, key_json, column)
    if media == "text/plain":
        text = data.decode("utf-8")
        return _wrap(item, settings, {"type": "text", "media_type": "text/plain", "data": text},
                     text_tokens(text), len(data)), None, None
    if media == "application/pdf":
        pages = _pdf_pages(data, key_json, column)
        if pages > settings.max_pages_per_request:
            # Cut into parts (document_parts); each part's pages are encoded when its request is built.
            block = _wrap(item, settings, {"type": "base64", "media_type": media, "data": ""}, 0, 0)
            return {**block, "_cut": (data, pages)}, None, None
        encoded = base64.b64encode(data).decode("ascii")
        source = {"type": "base64", "media_type": media, "data": encoded}
        return _wrap(item, settings, source, pages * mt.PDF_PAGE_TOKENS, len(encoded)), pages, None
    encoded = base64.b64encode(data).decode("ascii")
    source = {"type": "base64", "media_type": media, "data": encoded}
    width, height = _image_size(data, key_json, column)
    if len(encoded) > mt.MAX_IMAGE_BASE64_BYTES:
        raise _problem(key_json, column, f"is an image of {len(encoded)} bytes once base64-encoded, over the "
                       f"API's limit of {mt.MAX_IMAGE_BASE64_BYTES} (5 MB): make it smaller")
    return _wrap(item, settings, source, mt.image_tokens(width, height), len(encoded)), None, (width, height)


def _file_block(item: Mapping[str, Any], settings: Settings, data: bytes, media: str, key_json: str,
                column: str) -> tuple[dict[str, Any], int | None, tuple[int, int] | None]:
    """`upload: files_api`: checked as inline, then sent as a `file` source whose id is a placeholder of the
    content hash (the request hash covers the content, not the id the upload gets)."""
    if len(data) > mt.MAX_UPLOAD_BYTES:
        raise _problem(key_json, column, f"is a file of {len(data)} bytes, over the Files API's limit of "
                       f"{mt.MAX_UPLOAD_BYTES} (500 MB) per file: make it smaller or split it")
    pages = size = None
    tokens = text_tokens(data.decode("utf-8")) if media == "text/plain" else 0
    if media == "application/pdf":
        pages = _pdf_pages(data, key_json, column)
        if pages > settings.max_pages_per_request:
            # An uploaded file is one document: only inline bytes can be cut into page ranges.
            raise _problem(key_json, column, f"is a PDF of {pages} pages, over max_pages_per_request "
                           f"{settings.max_pages_per_request}, declared `upload: files_api`: declare it `upload: "
                           "inline` to have it cut into parts, or send shorter files")
        tokens = pages * mt.PDF_PAGE_TOKENS
    elif mt.kind_of(media) == "image":
        size = _image_size(data, key_json, column)
        encoded = 4 * ((len(data) + 2) // 3)
        if encoded > mt.MAX_IMAGE_BASE64_BYTES:
            raise _problem(key_json, column, f"is an image of {encoded} bytes once base64-encoded, over the "
                           f"API's limit of {mt.MAX_IMAGE_BASE64_BYTES} (5 MB): make it smaller")
        tokens = mt.image_tokens(*size)
    sha = hashlib.sha256(data).hexdigest()
    source = {"type": "file", "file_id": placeholder(sha)}
    # Only the reference travels in the request: its bytes count against the 32 MB, not the file's.
    block = _wrap(item, settings, source, tokens, len(placeholder(sha)))
    block["_upload"] = (sha, media, data)
    return block, pages, size


def _wrap(item: Mapping[str, Any], settings: Settings, source: dict[str, Any], tokens: int,
          n_bytes: int) -> dict[str, Any]:
    if item["kind"] == "image":
        block = {"type": "image", "source": source, "transformations": {"oversized_image": settings.oversized_image}}
    else:
        block = {"type": "document", "source": source}
        if item.get("title"):
            block["title"] = item["title"]
    return {**block, "_tokens": tokens, "_bytes": n_bytes}


def _pdf_pages(data: bytes, key_json: str, column: str) -> int:
    import pypdf

    try:
        try:
            reader = pypdf.PdfReader(io.BytesIO(data), strict=True)
            encrypted = reader.is_encrypted
            pages = None if encrypted else len(reader.pages)
        except Exception:  # noqa: BLE001 - a damaged cross-reference table (common in scans): readers recover it
            reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
            encrypted = reader.is_encrypted
            pages = None if encrypted else len(reader.pages)
    except Exception as exc:  # noqa: BLE001 - whatever pypdf raises, the file cannot be sent as it is
        raise _problem(key_json, column, f"is a corrupt PDF ({type(exc).__name__}: {str(exc)[:120]}): fix or "
                       "replace the file") from None
    if encrypted:
        raise _problem(key_json, column, "is an encrypted PDF: the API cannot read it; send a decrypted copy")
    if not pages:
        raise _problem(key_json, column, "is a PDF with no pages: the API refuses it; fix or replace the file")
    return pages


def _image_size(data: bytes, key_json: str, column: str) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            size, kind = image.size, image.format
            image.verify()
        if kind == "JPEG":
            # verify() reads a JPEG's headers only: one cut short passes it. Decoding at 1/8 scale reads
            # every byte of its image data, in a fraction of the memory a full decode takes.
            with Image.open(io.BytesIO(data)) as image:
                image.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
                image.load()
    except Image.DecompressionBombError as exc:
        # Pillow refuses to open it (a guard against images built to exhaust memory): not corrupt, too big.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f" of {int(found.group(1)):,} pixels" if found else ""
        raise _problem(key_json, column, f"is an image{pixels}, over the {Image.MAX_IMAGE_PIXELS * 2:,} Pillow "
                       "opens safely: make it smaller") from None
    except Exception as exc:  # noqa: BLE001 - whatever Pillow raises, the image cannot be sent as it is
        raise _problem(key_json, column, f"is a corrupt image ({type(exc).__name__}): fix or replace the file") from None
    return size


def _request_limits(settings: Settings, key_json: str, images: list[tuple[str, int, int]], pages: int,
                    n_bytes: int) -> None:
    """Limits on the request as a whole: image count and sides, PDF pages, bytes."""
    if len(images) > mt.MAX_IMAGES_PER_REQUEST:
        raise _problem(key_json, images[0][0], f"is one of {len(images)} images in one request, over the API's "
                       f"limit of {mt.MAX_IMAGES_PER_REQUEST}: send fewer image columns")
    side = mt.max_image_side(len(images))
    if settings.oversized_image == "error":
        for column, width, height in images:
            if max(width, height) > side:
                raise _problem(key_json, column, f"is an image of {width}x{height} px, over the API's {side}x{side} "
                               f"for a request with {len(images)} image(s), and oversized_image is error: "
                               "make it smaller, or set oversized_image: downsize")
    if pages > settings.max_pages_per_request:
        column = next(a["column"] for a in settings.attachments if a["kind"] == "document")
        raise _problem(key_json, column, f"brings the request's PDFs to {pages} pages, over "
                       f"max_pages_per_request {settings.max_pages_per_request}: send fewer or shorter documents")
    if n_bytes + _ENVELOPE_BYTES > mt.MAX_REQUEST_BYTES:
        column = settings.attachments[0]["column"]
        raise _problem(key_json, column, f"brings the request to about {n_bytes} bytes, over the API's limit of "
                       f"{mt.MAX_REQUEST_BYTES} (32 MB) per request: send smaller files, or declare the column "
                       "`upload: files_api` (only the file's id travels in the request)")
