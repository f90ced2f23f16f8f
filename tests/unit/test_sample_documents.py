"""The example project's sample documents (integration_project/scripts/make_documents.py) are what
`make demo` and docs/getting-started.md say: readable PDFs with text, one over the page limit, one
corrupt, a JPEG and a PNG scan, the same bytes on every run."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pypdf
import pytest
from PIL import Image

from dbt_claude_batch.base.media_types import detect

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "integration_project" / "scripts"))
import make_documents  # noqa: E402


def test_the_sample_documents_are_the_files_the_demo_expects(tmp_path):
    docs = make_documents.documents()
    assert docs == make_documents.documents()  # deterministic: a second make changes no file
    assert {name: detect(data) for name, data in docs.items()} == {
        "loan-application-0001.pdf": "application/pdf", "bank-statement-0002.pdf": "application/pdf",
        "payslip-0003.jpg": "image/jpeg", "id-card-0004.png": "image/png",
        "appraisal-report-0005.pdf": "application/pdf", "loan-application-0006.pdf": "application/pdf"}

    def pages(name: str) -> list[str]:
        return [page.extract_text() for page in pypdf.PdfReader(io.BytesIO(docs[name]), strict=True).pages]

    assert pages("loan-application-0001.pdf")[0].startswith("Loan application\nApplicant: Maria Keller")
    assert pages("bank-statement-0002.pdf")[0].startswith("Bank statement")
    assert len(pages("appraisal-report-0005.pdf")) == make_documents.OVER_LIMIT_PAGES > 100
    with pytest.raises(pypdf.errors.PdfReadError):
        pypdf.PdfReader(io.BytesIO(docs["loan-application-0006.pdf"]), strict=True)
    assert Image.open(io.BytesIO(docs["id-card-0004.png"])).size == (540, 340)

    written = make_documents.write(tmp_path / "documents")
    assert [p.name for p in written] == sorted(docs) and all(p.read_bytes() == docs[p.name] for p in written)


def test_a_filler_makes_a_pdf_of_the_size_asked_that_still_reads():
    data = make_documents.text_pdf([["Loan file 1"]], filler=b"\x01" * 2_000_000)
    assert 2_000_000 < len(data) < 2_010_000
    assert pypdf.PdfReader(io.BytesIO(data), strict=True).pages[0].extract_text() == "Loan file 1"
