"""Tiny dependency-free builders of test media: PDFs, PNGs and JPEGs made in the test itself.

    pdf_bytes(pages, text="", encrypted=False, compressed=False) -> bytes   a valid PDF of `pages` pages
    png_bytes(width, height, color=(r, g, b), pad_to=0) -> bytes   a valid solid-colour RGB PNG
    jpeg_bytes(width, height) -> bytes                    a valid solid mid-grey baseline JPEG

Each PDF page shows one line, `"<text> page k/N"` (standard Helvetica; its content stream
Flate-compressed with `compressed=True`, as most real PDFs have it), so two PDFs differ in their bytes whenever their page count or text differ. `encrypted=True` adds a
Standard security handler `/Encrypt` dictionary to the trailer: readers (and the API) treat the file
as encrypted; the page contents themselves are not actually enciphered.
"""

from __future__ import annotations

import struct
import zlib


def _pdf_string(text: str) -> str:
    return "(" + text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ")"


def pdf_bytes(pages: int, text: str = "", encrypted: bool = False, compressed: bool = False) -> bytes:
    """A minimal valid PDF 1.4 with `pages` pages, each showing `text` and its page number."""
    if pages < 1:
        raise ValueError("a PDF needs at least one page")
    first_page = 4  # objects: 1 catalog, 2 page tree, 3 font, then (page, content) pairs
    kids = " ".join(f"{first_page + 2 * i} 0 R" for i in range(pages))
    objects: list[str | bytes] = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i in range(pages):
        line = f"{text} page {i + 1}/{pages}".strip()
        stream = f"BT /F1 12 Tf 72 720 Td {_pdf_string(line)} Tj ET"
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                       f"/Resources << /Font << /F1 3 0 R >> >> /Contents {first_page + 2 * i + 1} 0 R >>")
        data = stream.encode("latin-1")
        if compressed:
            data = zlib.compress(data)
        flate = " /Filter /FlateDecode" if compressed else ""
        objects.append(f"<< /Length {len(data)}{flate} >>\nstream\n".encode("latin-1") + data + b"\nendstream")
    if encrypted:
        objects.append("<< /Filter /Standard /V 1 /R 2 /Length 40 /P -44 "
                       f"/O <{'00' * 32}> /U <{'00' * 32}> >>")
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        raw = body if isinstance(body, bytes) else body.encode("latin-1")
        out += f"{number} 0 obj\n".encode("ascii") + raw + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode("ascii")
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode("ascii")
    trailer = f"/Size {len(objects) + 1} /Root 1 0 R"
    if encrypted:
        trailer += f" /Encrypt {len(objects)} 0 R /ID [<{'11' * 16}> <{'11' * 16}>]"
    out += f"trailer\n<< {trailer} >>\nstartxref\n{xref}\n%%EOF\n".encode("ascii")
    return bytes(out)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(width: int, height: int, color: tuple[int, int, int] = (200, 30, 30), pad_to: int = 0) -> bytes:
    """A valid 8-bit RGB PNG of one colour (a large one compresses to a few KB).

    `pad_to` makes the file at least that many bytes with a private ancillary chunk that readers
    skip (for size limits without a huge image).
    """
    rows = (b"\x00" + bytes(color) * width) * height  # each row: filter type 0, then the pixels
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunks = [_png_chunk(b"IHDR", header), _png_chunk(b"IDAT", zlib.compress(rows, 9))]
    size = 8 + sum(map(len, chunks)) + 12
    if pad_to > size:
        chunks.append(_png_chunk(b"pdDg", b"\x00" * max(0, pad_to - size - 12)))
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks) + _png_chunk(b"IEND", b"")


def jpeg_bytes(width: int, height: int) -> bytes:
    """A valid baseline greyscale JPEG of one mid-grey (every 8x8 block is DC 0, end of block).

    Both Huffman tables hold a single one-bit code, so each block is the two bits `00`.
    """
    def segment(marker: int, payload: bytes) -> bytes:
        return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload

    blocks = ((width + 7) // 8) * ((height + 7) // 8)
    bits = 2 * blocks
    scan = b"\x00" * (bits // 8)
    if bits % 8:
        scan += bytes([0xFF >> (bits % 8)])  # the last byte padded with 1 bits
    counts = bytes([1] + [0] * 15)  # one code of length 1
    return b"".join([
        b"\xff\xd8",
        segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"),
        segment(0xDB, b"\x00" + bytes([1] * 64)),
        segment(0xC0, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00"),
        segment(0xC4, b"\x00" + counts + b"\x00"),  # DC table 0: symbol 0 (difference 0)
        segment(0xC4, b"\x10" + counts + b"\x00"),  # AC table 0: symbol 0 (end of block)
        segment(0xDA, b"\x01\x01\x00\x00\x3f\x00"),
        scan,
        b"\xff\xd9",
    ])
