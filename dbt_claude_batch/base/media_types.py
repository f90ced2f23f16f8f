"""What an attachment is, from its bytes alone, and the API's limits on media (pure rules, no I/O).

The media type is read from the bytes (magic numbers, with the `filetype` package), never from a file
name: a scan saved as `.pdf` that is really a PNG is sent as the PNG it is. A document may also be plain
text: bytes that decode as UTF-8 and hold no NUL. Because text is what is left when no magic number
matches, a file whose name claims a binary type but whose bytes are text (`claimed_binary_type`) is
refused rather than sent: it is an error page or a placeholder saved under a document's name.
"""

from __future__ import annotations

import math

from typing import Any, Mapping

import filetype

from dbt_claude_batch.base.errors import ConfigError

DOCUMENT_TYPES = ("application/pdf", "text/plain")
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
KINDS = ("document", "image")
ATTACHMENT_FIELDS = ("column", "kind", "required", "title", "upload")
# How an attachment's bytes reach the API: base64 in the request, or uploaded once to the Files API.
UPLOADS = ("inline", "files_api")
# The Files API's limit per uploaded file.
MAX_UPLOAD_BYTES = 500 * 1024 * 1024

# The Messages API's limits (docs: vision, PDF support, batch limits).
MAX_IMAGE_BASE64_BYTES = 5 * 1024 * 1024
MAX_IMAGE_SIDE = 8000
MAX_IMAGE_SIDE_MANY = 2000  # when a request holds more than MANY_IMAGES images
MANY_IMAGES = 20
MAX_IMAGES_PER_REQUEST = 100
MAX_PDF_PAGES = 100
MAX_REQUEST_BYTES = 32 * 1024 * 1024
# The model sees an image scaled to this long edge at most; tokens ~ width * height / 750.
IMAGE_LONG_EDGE = 1568
IMAGE_PIXELS_PER_TOKEN = 750
# A PDF page costs 1,500-3,000 tokens (its text plus the page as an image): estimates take the upper bound,
# so a budget guard errs on the safe side.
PDF_PAGE_TOKENS = 3000


def detect(data: bytes) -> str | None:
    """The media type of `data` from its bytes, if it is one the API takes; else None."""
    kind = filetype.guess_mime(data[:8192]) if data else None
    if kind in DOCUMENT_TYPES or kind in IMAGE_TYPES:
        return kind
    if kind is None and is_text(data):
        return "text/plain"
    return None


# File name extensions that promise bytes with a magic number, and what they promise.
_BINARY_EXTENSIONS = {".pdf": "a PDF", ".png": "a PNG image", ".jpg": "a JPEG image", ".jpeg": "a JPEG image",
                      ".gif": "a GIF image", ".webp": "a WebP image"}


def claimed_binary_type(name: str) -> str | None:
    """What a file's name promises ("a PDF", ...) when its extension is a binary media type; else None."""
    dot = name.rfind(".")
    return _BINARY_EXTENSIONS.get(name[dot:].lower()) if dot > name.rfind("/") else None


def not_utf8(data: bytes) -> str | None:
    """Where bytes that look like text (no magic number, no NUL) fail to decode as UTF-8 (a Latin-1 file),
    as `byte 0xe9 at offset 3`; None for anything else."""
    if b"\x00" in data or filetype.guess_mime(data[:8192]) is not None:
        return None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"byte 0x{data[exc.start]:02x} at offset {exc.start}"
    return None


def is_text(data: bytes) -> bool:
    """UTF-8 text without NUL bytes (a plain-text document)."""
    if b"\x00" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def kind_of(media_type: str) -> str:
    return "document" if media_type in DOCUMENT_TYPES else "image"


def base64_size(n_bytes: int) -> int:
    return 4 * math.ceil(n_bytes / 3)


def image_tokens(width: int, height: int) -> int:
    """Estimated input tokens of an image: scaled (never up) to a long edge of 1568 px, then w*h/750."""
    long_edge = max(width, height, 1)
    scale = min(1.0, IMAGE_LONG_EDGE / long_edge)
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    return math.ceil(w * h / IMAGE_PIXELS_PER_TOKEN)


def max_image_side(n_images: int) -> int:
    """The largest side the API takes without downsizing, for a request holding `n_images` images."""
    return MAX_IMAGE_SIDE_MANY if n_images > MANY_IMAGES else MAX_IMAGE_SIDE


def parse_attachments(value: Any) -> tuple[dict[str, Any], ...]:
    """`attachments` as a tuple of {column, kind, required, title, upload}, each checked; [] or null: none."""
    if value is None:
        return ()
    if isinstance(value, Mapping) or not isinstance(value, (list, tuple)):
        raise ConfigError("Setting `attachments` must be a list of {column: NAME, kind: document|image}; got "
                          f"{value!r}: fix it in the model's claude_batch settings.")
    out, seen = [], set()
    for i, item in enumerate(value):
        where = f"Setting `attachments` item {i}"
        if not isinstance(item, Mapping):
            raise ConfigError(f"{where} must be a mapping like {{column: loan_pdf, kind: document}}; got {item!r}.")
        unknown = sorted(set(item) - set(ATTACHMENT_FIELDS))
        if unknown:
            raise ConfigError(f"{where} has unknown field(s) {', '.join(unknown)}: use only "
                              f"{', '.join(ATTACHMENT_FIELDS)}.")
        column, kind = item.get("column"), item.get("kind")
        if not isinstance(column, str) or not column:
            raise ConfigError(f"{where} needs `column`: the name of the source column holding the attachment.")
        if kind not in KINDS:
            raise ConfigError(f"{where} (column {column!r}) has kind {kind!r}: set kind to one of "
                              f"{', '.join(KINDS)}.")
        if column in seen:
            raise ConfigError(f"{where} names column {column!r} a second time: declare each column once.")
        seen.add(column)
        required = item.get("required", False)
        if not isinstance(required, bool):
            raise ConfigError(f"{where} (column {column!r}) has required {required!r}: set true or false.")
        title = item.get("title")
        if title is not None and (not isinstance(title, str) or kind != "document"):
            raise ConfigError(f"{where} (column {column!r}) has title {title!r}: a title is text, and only "
                              "documents take one; remove it or fix it.")
        upload = item.get("upload", "inline")
        if upload not in UPLOADS:
            raise ConfigError(f"{where} (column {column!r}) has upload {upload!r}: set upload to one of "
                              f"{', '.join(UPLOADS)}.")
        # `upload` is kept only when not the default, so models written before it keep their fingerprints.
        out.append({"column": column, "kind": kind, "required": required, "title": title,
                    **({"upload": upload} if upload != "inline" else {})})
    return tuple(out)
