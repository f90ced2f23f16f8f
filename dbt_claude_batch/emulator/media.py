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
import re
import struct
import zlib

from . import tokens

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


def sniff(data: bytes) -> str | None:
    """The media type the bytes' magic number says, for the types the API takes."""
    if data.startswith(b"%PDF-"):
        return "application/pdf"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def image_size(data: bytes, media_type: str) -> tuple[int, int] | None:
    """(width, height) from an image's header, or None when the header is unreadable."""
    try:
        if media_type == "image/png" and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        if media_type == "image/gif":
            return struct.unpack("<HH", data[6:10])
        if media_type == "image/webp":
            chunk = data[12:16]
            if chunk == b"VP8 ":
                w, h = struct.unpack("<HH", data[26:30])
                return w & 0x3FFF, h & 0x3FFF
            if chunk == b"VP8L":
                bits = int.from_bytes(data[21:25], "little")
                return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            if chunk == b"VP8X":
                return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
            return None
        if media_type == "image/jpeg":
            i = 2
            while i + 9 < len(data):
                if data[i] != 0xFF:
                    return None
                marker = data[i + 1]
                if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                    i += 2 if marker != 0xFF else 1
                    continue
                length = struct.unpack(">H", data[i + 2:i + 4])[0]
                if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                    h, w = struct.unpack(">HH", data[i + 5:i + 9])
                    return w, h
                i += 2 + length
    except struct.error:
        return None
    return None


_OBJECT = re.compile(rb"(\d+)\s+\d+\s+obj\b(.*?)\bendobj", re.S)
_PAGE = re.compile(rb"/Type\s*/Page(?![A-Za-z])")
_STREAM = re.compile(rb"stream\r?\n")
_ENCRYPT = re.compile(rb"/Encrypt\s*(?:\d+\s+\d+\s+R|<<)")
_SHOWN = re.compile(rb"\(((?:\\.|[^\\()])*)\)\s*(?:Tj|'|\")|\[((?:\\.|[^\]\\])*)\]\s*TJ", re.S)
_IN_ARRAY = re.compile(rb"\(((?:\\.|[^\\()])*)\)", re.S)
_ESCAPE = re.compile(rb"\\([0-7]{1,3}|.)", re.S)
_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f"}


def _unescape(raw: bytes) -> str:
    def one(m: re.Match) -> bytes:
        code = m.group(1)
        if code[:1].isdigit():
            return bytes([int(code, 8) & 0xFF])
        return _ESCAPES.get(code, code if code not in (b"\n", b"\r") else b"")
    return _ESCAPE.sub(one, raw).decode("latin-1")


def _streams(body: bytes) -> list[bytes]:
    """The (decompressed when Flate) stream data inside one object's body."""
    found = []
    m = _STREAM.search(body)
    if m is not None:
        end = body.rfind(b"endstream")
        data = body[m.end():end if end > m.end() else len(body)]
        if b"/FlateDecode" in body[:m.start()]:
            try:
                data = zlib.decompressobj().decompress(data)
            except zlib.error:
                data = b""
        found.append(data)
    return found


def pdf_facts(data: bytes) -> tuple[int, bool, str]:
    """(pages, encrypted, text shown) of a PDF; pages 0 when no page object is found."""
    pages: set[bytes] = set()
    in_streams = 0
    shown: list[str] = []
    for m in _OBJECT.finditer(data):
        number, body = m.group(1), m.group(2)
        head = body.split(b"stream", 1)[0]
        if _PAGE.search(head):
            pages.add(number)
        for stream in _streams(body):
            if b"/ObjStm" in head:
                in_streams += len(_PAGE.findall(stream))
                continue
            for s in _SHOWN.finditer(stream):
                if s.group(1) is not None:
                    shown.append(_unescape(s.group(1)))
                else:
                    shown.append("".join(_unescape(p) for p in _IN_ARRAY.findall(s.group(2))))
    return len(pages) + in_streams, _ENCRYPT.search(data) is not None, "\n".join(shown)


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
    if len(json.dumps(params, separators=(",", ":"))) > MAX_REQUEST_BYTES:
        raise ParamsError(f"request exceeds the maximum size of a Messages request with media: "
                          f"more than {MAX_REQUEST_BYTES} bytes")
    for item in items:
        if isinstance(item.block, MediaBlock):
            item.block.media_tokens, item.block.media_label, item.block.media_text = item.tokens, item.label, item.text
    return prepared
