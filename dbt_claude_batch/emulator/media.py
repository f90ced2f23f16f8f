"""Image and document blocks: the API's validation and limits, their token cost, and their answer labels.

`annotate(params, files)` checks every `image` and `document` block of every message and returns a
copy of params in which each such block is a `MediaBlock` (a dict carrying `media_tokens`,
`media_label` and `media_text`), or raises ParamsError with the real API's message. Limits: an
image's base64 at most 5 MB; media type matching the bytes (magic numbers); a PDF valid, not
encrypted, at most 100 pages; images plus document pages at most 100 per request; a request of media
at most 32 MB of JSON; image sides at most 8000 px (2000 px when a request has more than 20 images),
downsized by default or refused with `transformations.oversized_image: "error"`.
Token rule: an image costs ceil(w*h/750) at its size scaled so its long edge is at most 1568 px
(after any downsize); a PDF 1,500 per page plus the tokens of its text (the strings shown by its
content streams, Flate-compressed ones included); a text document the tokens of its text; a url
source a fixed 1,600 (image) or 1,500 (document); a title and a context add their tokens.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math

from . import tokens
from .formats import image_size, pdf_facts, sniff

MAX_IMAGE_BASE64 = 5 * 1024 * 1024
MAX_MEDIA = 100
MAX_PDF_PAGES = 100
MAX_REQUEST_BYTES = 32 * 1024 * 1024
MAX_SIDE, MANY_IMAGES, MANY_SIDE = 8000, 20, 2000
TOKEN_EDGE, PIXELS_PER_TOKEN = 1568, 750
PDF_PAGE_TOKENS, URL_IMAGE_TOKENS, URL_DOCUMENT_TOKENS = 1500, 1600, 1500
LABEL_WORDS = 5
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
IMAGE_TYPES_TEXT = "'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"
BLOCK_KEYS = {"image": {"type", "source", "cache_control", "transformations"},
              "document": {"type", "source", "cache_control", "citations", "context", "title"}}
SOURCE_TAGS = {"image": ("base64", "file", "url"), "document": ("base64", "content", "file", "text", "url")}
PDF_INVALID = "The PDF specified was not valid."
PDF_ENCRYPTED = "The PDF specified is encrypted (password protected); only unencrypted PDFs are supported."


class ParamsError(Exception):
    """A media block the API refuses (validation turns it into its own ParamsError)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MediaBlock(dict):
    """An image or document block as sent, plus what the emulator read from it."""
    media_tokens = 0
    media_label = ""
    media_text = ""


def image_tokens(width: int, height: int) -> int:
    """ceil(w*h/750) once the long edge is scaled down to at most 1568 px."""
    scale = min(1.0, TOKEN_EDGE / max(width, height, 1))
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    return max(1, math.ceil(w * h / PIXELS_PER_TOKEN))


def fit(width: int, height: int, side: int) -> tuple[int, int]:
    """The largest size of the same aspect with both sides at most `side` (rounded down)."""
    if max(width, height) <= side:
        return width, height
    if width >= height:
        return side, max(1, height * side // width)
    return max(1, width * side // height), side


def _sha12(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def _first_words(text: str) -> str:
    return "_".join(text[:2000].split()[:LABEL_WORDS])


class _Item:
    """One media block being read: where it is, what it is, what it costs."""

    def __init__(self, path: str, block: dict) -> None:
        self.path, self.block = path, block
        self.tokens, self.label, self.text = 0, "", ""
        self.pages = 0
        self.size: tuple[int, int] | None = None  # images with known bytes
        self.parent: _Item | None = None  # the document holding an image of a content source


def _require(source: dict, name: str, path: str) -> object:
    if name not in source:
        raise ParamsError(f"{path}.{name}: Field required")
    return source[name]


def _decode(data: object, path: str) -> bytes:
    if not isinstance(data, str):
        raise ParamsError(f"{path}.data: Input should be a valid string")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ParamsError(f"{path}: invalid base64 data")


def _file(source: dict, path: str, files) -> tuple[str, bytes]:
    file_id = _require(source, "file_id", path)
    found = files.resolve(file_id) if files is not None and isinstance(file_id, str) else None
    if found is None:
        raise ParamsError(f"{path}.file_id: File not found: {file_id}")
    return found


def _url(source: dict, path: str) -> str:
    url = _require(source, "url", path)
    if not isinstance(url, str) or not url.startswith("https://"):
        raise ParamsError(f"{path}.url: Only https URLs are supported: {url}")
    return url


def _read_image(item: _Item, source: dict, files) -> None:
    kind = source.get("type")
    base = item.path + ".image.source"
    if kind == "url":
        url = _url(source, base + ".url")
        item.tokens, item.label = URL_IMAGE_TOKENS, f"image:url:{_sha12(url.encode('utf-8'))}"
        return
    if kind == "file":
        media_type, data = _file(source, base + ".file", files)
        if media_type not in IMAGE_TYPES:
            raise ParamsError(f"{base}.file: the file's type {media_type} is not an image ({IMAGE_TYPES_TEXT})")
        where = base + ".file"
    else:
        where = base + ".base64"
        media_type = _require(source, "media_type", where)
        if media_type not in IMAGE_TYPES:
            raise ParamsError(f"{where}.media_type: Input should be {IMAGE_TYPES_TEXT}")
        raw = _require(source, "data", where)
        if isinstance(raw, str) and len(raw) > MAX_IMAGE_BASE64:
            raise ParamsError(f"{where}: image exceeds 5 MB maximum: {len(raw)} bytes > {MAX_IMAGE_BASE64} bytes")
        data = _decode(raw, where)
    size = image_size(data, media_type) if sniff(data) == media_type else None
    if size is None or 0 in size:
        raise ParamsError(f"{where}.data: Image does not match the provided media type {media_type}")
    item.size, item.label = size, f"image:{{}}:{_sha12(data)}"


def _read_pdf(item: _Item, data: bytes, where: str) -> None:
    if not data.startswith(b"%PDF-"):
        raise ParamsError(f"{where}.data: {PDF_INVALID}")
    pages, encrypted, text = pdf_facts(data)
    if encrypted:
        raise ParamsError(f"{where}.data: {PDF_ENCRYPTED}")
    if pages == 0:
        raise ParamsError(f"{where}.data: {PDF_INVALID}")
    if pages > MAX_PDF_PAGES:
        raise ParamsError(f"{where}.data: A maximum of {MAX_PDF_PAGES} PDF pages may be provided.")
    item.pages, item.text = pages, text
    item.tokens = PDF_PAGE_TOKENS * pages + tokens.tokens(text)
    item.label = f"pdf:{pages}p:{_sha12(data)}"


def _read_text(item: _Item, text: str) -> None:
    item.text, item.tokens, item.label = text, tokens.tokens(text), f"text:{_first_words(text)}"


def _read_document(item: _Item, source: dict, files, images: list[_Item]) -> None:
    kind = source.get("type")
    base = item.path + ".document.source"
    if kind == "url":
        url = _url(source, base + ".url")
        item.tokens, item.label = URL_DOCUMENT_TOKENS, f"document:url:{_sha12(url.encode('utf-8'))}"
    elif kind == "file":
        media_type, data = _file(source, base + ".file", files)
        if media_type == "application/pdf":
            _read_pdf(item, data, item.path + ".pdf.source.file")
        elif media_type == "text/plain":
            _read_text(item, data.decode("utf-8", errors="replace"))
        else:
            raise ParamsError(f"{base}.file: the file's type {media_type} is not a document "
                              "('application/pdf' or 'text/plain')")
    elif kind == "text":
        where = base + ".text"
        if _require(source, "media_type", where) != "text/plain":
            raise ParamsError(f"{where}.media_type: Input should be 'text/plain'")
        data = _require(source, "data", where)
        if not isinstance(data, str):
            raise ParamsError(f"{where}.data: Input should be a valid string")
        _read_text(item, data)
    elif kind == "content":
        where = base + ".content"
        content = _require(source, "content", where)
        texts = []
        for k, inner in enumerate(tokens.as_blocks(content)):
            if inner.get("type") == "image":
                nested = _Item(f"{where}.content.{k}", inner)
                nested.parent = item
                _read_image(nested, inner.get("source") if isinstance(inner.get("source"), dict) else {}, files)
                images.append(nested)
            elif isinstance(inner.get("text"), str):
                texts.append(inner["text"])
        _read_text(item, "\n".join(texts))
    else:
        where = base + ".base64"
        if _require(source, "media_type", where) != "application/pdf":
            raise ParamsError(f"{where}.media_type: Input should be 'application/pdf'")
        raw = _require(source, "data", where)
        pdf_where = item.path + ".pdf.source.base64"
        _read_pdf(item, _decode(raw, pdf_where), pdf_where)
    for extra in ("title", "context"):
        value = item.block.get(extra)
        if value is not None and not isinstance(value, str):
            raise ParamsError(f"{item.path}.document.{extra}: Input should be a valid string")
        item.tokens += tokens.tokens(value or "")


def _check_block(path: str, block: dict) -> dict:
    kind = block["type"]
    for key in block:
        if key not in BLOCK_KEYS[kind]:
            raise ParamsError(f"{path}.{kind}.{key}: Extra inputs are not permitted")
    source = block.get("source")
    if not isinstance(source, dict):
        raise ParamsError(f"{path}.{kind}.source: Field required")
    tags = SOURCE_TAGS[kind]
    if source.get("type") not in tags:
        expected = ", ".join(f"'{t}'" for t in tags)
        raise ParamsError(f"{path}.{kind}.source: Input tag '{source.get('type')}' found using 'type' "
                          f"does not match any of the expected tags: {expected}")
    transformations = block.get("transformations")
    if transformations is not None:
        if not isinstance(transformations, dict):
            raise ParamsError(f"{path}.image.transformations: Input should be a valid dictionary")
        if transformations.get("oversized_image", "downsize") not in ("downsize", "error"):
            raise ParamsError(f"{path}.image.transformations.oversized_image: Input should be 'downsize' or 'error'")
    return source


def annotate(params: dict, files=None) -> dict:
    """params with every image/document block read and checked (see the module doc), or ParamsError."""
    items: list[_Item] = []
    images: list[_Item] = []
    messages = []
    for i, message in enumerate(params.get("messages") or []):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list) or not any(
                isinstance(b, dict) and b.get("type") in BLOCK_KEYS for b in content):
            messages.append(message)
            continue
        blocks = []
        for j, block in enumerate(content):
            if isinstance(block, dict) and block.get("type") in BLOCK_KEYS:
                item = _Item(f"messages.{i}.content.{j}", block)
                source = _check_block(item.path, block)
                if block["type"] == "image":
                    _read_image(item, source, files)
                    images.append(item)
                else:
                    _read_document(item, source, files, images)
                items.append(item)
                block = MediaBlock(block)
                item.block = block
            blocks.append(block)
        messages.append({**message, "content": blocks})
    if not items:
        return params
    pages = sum(item.pages for item in items)
    if pages + len(images) > MAX_MEDIA:
        raise ParamsError(f"Too much media: {pages} document pages + {len(images)} images > {MAX_MEDIA}")
    side = MANY_SIDE if len(images) > MANY_IMAGES else MAX_SIDE
    for image in images:
        if image.size is None:
            continue
        (w, h), mode = image.size, (image.block.get("transformations") or {}).get("oversized_image", "downsize")
        if max(w, h) > side:
            if mode == "error":
                many = " for many-image requests" if side == MANY_SIDE else ""
                fw, fh = fit(w, h, side)
                raise ParamsError(f"{image.path}.image.source.{image.block['source'].get('type')}.data: "
                                  f"At least one of the image dimensions exceed max allowed size{many}: "
                                  f"{side} pixels (the image is {w}x{h}; the largest that fits is {fw}x{fh})")
            w, h = fit(w, h, side)
        image.tokens, image.label = image_tokens(w, h), image.label.format(f"{w}x{h}")
    for image in images:
        if image.parent is not None:
            image.parent.tokens += image.tokens
    prepared = {**params, "messages": messages}
    inline = sum(len(item.block["source"].get("data") or "") for item in items
                 if isinstance(item.block["source"].get("data"), str))
    # Encoding the whole request costs as much as reading its media: only when it could be too big.
    if inline > MAX_REQUEST_BYTES // 2 and len(json.dumps(params, separators=(",", ":"))) > MAX_REQUEST_BYTES:
        raise ParamsError(f"request exceeds the maximum size of a Messages request with media: "
                          f"more than {MAX_REQUEST_BYTES} bytes")
    for item in items:
        item.block.media_tokens, item.block.media_label, item.block.media_text = item.tokens, item.label, item.text
    return prepared
