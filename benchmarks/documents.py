"""Memory benchmark for documents: N rows, each with its own ~2 MB PDF, submitted by one real `dbt run`.

Not a test (not in `make test` or `make bench`). For each size: a fresh emulator (a long processing
delay, so the batches stay in progress: this measures the submit), a fresh dbt-duckdb project that
installs this repository (tests/dbt_harness.py), a folder of N distinct PDFs of ~2 MB (a few pages of
text made with pypdf plus an incompressible embedded file; integration_project/scripts/make_documents.py),
raw.items listing them, and one `dbt run` of the batch model with `attachments: [{column: doc, kind:
document}]`: every file is read, checked, base64-encoded into the spool and sent, in as many batches
as the 256 MB per batch allows. Printed per size: wall time, peak RSS of the dbt process (ru_maxrss of
that pid, via os.wait4: dbt, DuckDB and this package together), batches and bytes sent. Flat RSS means
the files are streamed through the spool, never held for a batch.

    .venv/bin/python benchmarks/documents.py                          # 500, 1,500 and 3,000 rows
    .venv/bin/python benchmarks/documents.py --scale 100,300 --pdf-mb 2

Disk: about 2 MB of files + 2.7 MB of spool + 2.7 MB in the emulator's state per row, in --work
(default a temporary directory, removed after each size).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "integration_project" / "scripts"))
sys.path.insert(0, str(ROOT))

from pipeline import machine, run_measured  # noqa: E402 - benchmarks/pipeline.py

PROCESSING_DELAY = 86_400
TEMPLATE = "Extract the borrower and the amount of loan file {{ id }}."


def make_pdfs(folder: Path, n: int, pdf_mb: float) -> float:
    """n distinct PDFs of about pdf_mb MB each in folder; seconds taken."""
    from make_documents import text_pdf

    t0 = time.perf_counter()
    folder.mkdir(parents=True)
    filler = os.urandom(int(pdf_mb * 2**20))
    for i in range(1, n + 1):
        pages = [[f"Loan file {i}", f"Borrower {i}, amount EUR {1000 * i:,}"], [f"Loan file {i}, page 2"]]
        # A different first 16 bytes of filler per file: each PDF's bytes (and request) are its own.
        (folder / f"loan-{i:06d}.pdf").write_bytes(text_pdf(pages, i.to_bytes(16, "big") + filler[16:]))
    return time.perf_counter() - t0


def bench(n: int, work: Path, pdf_mb: float) -> dict:
    import duckdb
    from dbt_harness import DBT, DbtProject, create_calls
    from emulator_harness import EmulatorProcess

    emu = EmulatorProcess(work / "emulator-state", "--processing-delay", str(PROCESSING_DELAY))
    try:
        project = DbtProject(work / "project", emu)
        files = project.root / "files"
        t_files = make_pdfs(files, n, pdf_mb)
        pdf_bytes = sum(p.stat().st_size for p in files.iterdir())
        project.write("prompts/item.j2", TEMPLATE)
        project.configure(key="id", prompt_template="prompts/item.j2", model="claude-haiku-4-5", max_tokens=64,
                          attachments=[{"column": "doc", "kind": "document"}], attachments_root="files",
                          wait_seconds=0, max_cost_usd=1_000_000)
        con = duckdb.connect(str(project.db_path))
        try:
            con.execute("create schema if not exists raw")
            con.execute(f"create or replace table raw.items as select i::bigint as id, "
                        f"'loan-' || lpad(i::varchar, 6, '0') || '.pdf' as doc from range(1, {n + 1}) t(i)")
        finally:
            con.close()
        run = run_measured([DBT, "run", "-s", f"+{project.model}"], project.root, project.env(), work / "dbt.log",
                           project.db_path)
        if run["rc"] != 0:
            raise SystemExit(f"dbt run failed ({run['rc']}):\n{run['out'][-6000:]}")
        return {"rows": n, "pdf_mib": pdf_bytes / n / 2**20, "files_s": t_files, "wall": run["wall"],
                "rss_mib": run["rss_mib"], "spill_mib": run["spill_mib"], "creates": create_calls(emu), "out": run["out"]}
    finally:
        emu.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="500,1500,3000", help="comma-separated row counts")
    parser.add_argument("--pdf-mb", type=float, default=2.0, help="size of each PDF in MB")
    parser.add_argument("--work", type=Path, default=None, help="working directory (default: a temporary one)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.scale.split(",")]
    print(f"documents benchmark: {machine()}", flush=True)
    print("| rows | PDF size | dbt run wall | peak RSS of dbt | peak spill | batches created |\n|---:|---:|---:|---:|---:|---:|",
          flush=True)
    for n in sizes:
        work = Path(tempfile.mkdtemp(prefix=f"cb-documents-{n}-", dir=args.work))
        try:
            r = bench(n, work, args.pdf_mb)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(f"| {n:,} | {r['pdf_mib']:.2f} MiB | {r['wall']:,.1f} s | {r['rss_mib']:,.0f} MiB | {r['spill_mib']:,.0f} MiB | {r['creates']} |",
              flush=True)
        summary = [line for line in r["out"].splitlines() if "run summary" in line]
        if summary:
            print(f"  {summary[-1].split('dbt_claude_batch ', 1)[-1]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
