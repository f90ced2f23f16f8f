"""Reading media bytes without a dependency: magic numbers, image sizes, a PDF's pages and text.

`sniff` names the media type of PDF, PNG, JPEG, GIF and WebP bytes; `image_size` reads the size
from the PNG IHDR, GIF screen descriptor, JPEG SOF marker or WebP VP8/VP8L/VP8X header;
`pdf_facts` counts the distinct `/Type /Page` objects (those inside Flate-compressed object streams
included), sees an `/Encrypt` entry, and collects the strings the content streams show with
Tj, TJ, ' and " (Flate-compressed streams decompressed; other filters are not read).
"""

from __future__ import annotations

import re
import struct
import zlib


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


_HEADER = re.compile(rb"(\d+)\s+\d+\s+obj\b")
_PAGE = re.compile(rb"/Type\s*/Page(?![A-Za-z])")
_STREAM = re.compile(rb"\bstream\r?\n")
_ENCRYPT = re.compile(rb"/Encrypt\s*(?:\d+\s+\d+\s+R|<<)")
_STRING = rb"\(([^\\()]*(?:\\.[^\\()]*)*)\)"  # a literal string without unescaped parentheses
_SHOWN = re.compile(_STRING + rb"\s*(?:Tj|'|\")|\[([^\]\\]*(?:\\.[^\]\\]*)*)\]\s*TJ", re.S)
_IN_ARRAY = re.compile(_STRING, re.S)
_ESCAPE = re.compile(rb"\\([0-7]{1,3}|.)", re.S)
_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f"}


def _unescape(raw: bytes) -> str:
    def one(m: re.Match) -> bytes:
        code = m.group(1)
        if code[:1].isdigit():
            return bytes([int(code, 8) & 0xFF])
        return _ESCAPES.get(code, code if code not in (b"\n", b"\r") else b"")
    return (_ESCAPE.sub(one, raw) if b"\\" in raw else raw).decode("latin-1")


def _objects(data: bytes):
    """(object number, dictionary part, stream data or None) of each top-level `N G obj ... endobj`.

    The search jumps from one `endobj` to the next header, so stream bytes are never scanned for headers.
    """
    pos = 0
    while True:
        m = _HEADER.search(data, pos)
        if m is None:
            return
        end = data.find(b"endobj", m.end())
        end = len(data) if end < 0 else end
        body, pos = data[m.end():end], end + 6
        s = _STREAM.search(body)
        if s is None:
            yield m.group(1), body, None
            continue
        head, stream = body[:s.start()], body[s.end():body.rfind(b"endstream")]
        if b"/FlateDecode" in head:
            try:
                stream = zlib.decompressobj().decompress(stream)
            except zlib.error:
                stream = b""
        yield m.group(1), head, stream


def pdf_facts(data: bytes) -> tuple[int, bool, str]:
    """(pages, encrypted, text shown) of a PDF; pages 0 when no page object is found."""
    pages: set[bytes] = set()
    in_streams = 0
    shown: list[str] = []
    for number, head, stream in _objects(data):
        if _PAGE.search(head):
            pages.add(number)
        if stream is None:
            continue
        if b"/ObjStm" in head:
            in_streams += len(_PAGE.findall(stream))
            continue
        for s in _SHOWN.finditer(stream):
            if s.group(1) is not None:
                shown.append(_unescape(s.group(1)))
            else:
                shown.append("".join(_unescape(p) for p in _IN_ARRAY.findall(s.group(2))))
    return len(pages) + in_streams, _ENCRYPT.search(data) is not None, "\n".join(shown)
