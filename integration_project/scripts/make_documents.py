"""Sample loan documents for the example project's `loan_documents` model, made here (nothing downloaded).

    .venv/bin/python integration_project/scripts/make_documents.py [FOLDER]

Writes into FOLDER (default integration_project/documents/, wiped first) PDFs made with pypdf, with
real text on their pages, and "scans" drawn with Pillow (PNG and JPEG):

    loan-application-0001.pdf   3 pages, a loan application
    bank-statement-0002.pdf     2 pages, a bank statement
    payslip-0003.jpg            a payslip scan (JPEG)
    id-card-0004.png            an identity card scan (PNG)
    appraisal-report-0005.pdf   120 pages: over the API's 100 pages per request
    loan-application-0006.pdf   corrupt: the first half of a valid PDF

The same bytes every time (no dates, no randomness), so a second run changes nothing. Also imported
by benchmarks/documents.py (`text_pdf`).
"""

from __future__ import annotations

import io
import shutil
import sys
from pathlib import Path

from PIL import Image, ImageDraw
from pypdf import PdfWriter
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

PROJECT = Path(__file__).resolve().parent.parent
DEFAULT_FOLDER = PROJECT / "documents"
OVER_LIMIT_PAGES = 120


def _pdf_text(text: str) -> str:
    return "(" + text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ")"


def text_pdf(pages: list[list[str]], filler: bytes = b"") -> bytes:
    """A PDF whose page i shows the lines pages[i] in Helvetica (Flate-compressed content streams).

    `filler` is stored as an embedded file, to make a PDF of a given size (benchmarks).
    """
    writer = PdfWriter()
    font = writer._add_object(DictionaryObject({
        NameObject("/Type"): NameObject("/Font"), NameObject("/Subtype"): NameObject("/Type1"),
        NameObject("/BaseFont"): NameObject("/Helvetica")}))
    for lines in pages:
        page = writer.add_blank_page(612, 792)
        shown = " T* ".join(f"{_pdf_text(line)} Tj" for line in lines)
        stream = DecodedStreamObject()
        stream.set_data(f"BT /F1 11 Tf 14 TL 72 720 Td {shown} ET".encode("latin-1"))
        page[NameObject("/Contents")] = writer._add_object(stream)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})})
        page.compress_content_streams()
    if filler:
        writer.add_attachment("filler.bin", filler)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def scan(lines: list[str], size: tuple[int, int], image_format: str) -> bytes:
    """A grey 'scan' of a card or a sheet with the lines written on it."""
    image = Image.new("RGB", size, (236, 234, 228))
    draw = ImageDraw.Draw(image)
    draw.rectangle([8, 8, size[0] - 9, size[1] - 9], outline=(90, 90, 90), width=3)
    for i, line in enumerate(lines):
        draw.text((30, 30 + 28 * i), line, fill=(20, 20, 20))
    out = io.BytesIO()
    image.save(out, format=image_format, **({"quality": 85} if image_format == "JPEG" else {}))
    return out.getvalue()


def documents() -> dict[str, bytes]:
    """The sample files by name."""
    application = text_pdf([
        ["Loan application", "Applicant: Maria Keller", "Amount requested: EUR 240,000", "Term: 25 years"],
        ["Loan application, page 2", "Employer: Nordlicht Logistics GmbH", "Net monthly income: EUR 5,100"],
        ["Loan application, page 3", "Signed: Maria Keller, Hamburg"],
    ])
    return {
        "loan-application-0001.pdf": application,
        "bank-statement-0002.pdf": text_pdf([
            ["Bank statement", "Account holder: Maria Keller", "Opening balance: EUR 12,480.10"],
            ["Bank statement, page 2", "Closing balance: EUR 13,902.55"],
        ]),
        "payslip-0003.jpg": scan(["PAYSLIP", "Nordlicht Logistics GmbH", "Employee: Maria Keller",
                                  "Net pay: EUR 5,100.00"], (620, 300), "JPEG"),
        "id-card-0004.png": scan(["IDENTITY CARD", "KELLER, MARIA", "Born 1986-04-12"], (540, 340), "PNG"),
        "appraisal-report-0005.pdf": text_pdf(
            [[f"Property appraisal report, page {i + 1} of {OVER_LIMIT_PAGES}", "Elbchaussee 12, Hamburg"]
             for i in range(OVER_LIMIT_PAGES)]),
        "loan-application-0006.pdf": application[: len(application) // 2],
    }


def write(folder: Path = DEFAULT_FOLDER) -> list[Path]:
    """Wipe `folder` and write the sample files into it; their paths, sorted."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    paths = []
    for name, data in documents().items():
        (folder / name).write_bytes(data)
        paths.append(folder / name)
    return sorted(paths)


if __name__ == "__main__":
    for path in write(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_FOLDER):
        print(f"{path} ({path.stat().st_size:,} bytes)")
