"""End-to-end pipeline benchmark: N staging rows through real `dbt run`s against the local emulator.

Not a test. Builds a throwaway dbt-duckdb project that installs this repository (tests/dbt_harness.py),
loads N rows into raw.items with DuckDB SQL, and times three real dbt processes:

  A  submit    stage, plan, render the spool, create ceil(N / 100,000) batches (still in progress)
  B  harvest   (emulator clock advanced past the processing delay) poll, download, load and
               reconcile every results file, materialise N result rows
  C  no-op     nothing changed: one scan and anti-join, no create call

For each: wall time of the dbt process, its peak RSS, create calls seen by the emulator, and the time
dbt reports for the batch model node. A baseline `dbt run -s stg_items` (same project, no batch model)
gives what dbt + dbt-duckdb cost on their own.

Peak RSS and peak spill to disk (DuckDB's `<database>.tmp`) are measured as benchmarks/measure.py says.

    .venv/bin/python benchmarks/pipeline.py                   # 1,000,000 rows
    .venv/bin/python benchmarks/pipeline.py --rows 100000
    .venv/bin/python benchmarks/pipeline.py --scale 100000,300000,1000000
    .venv/bin/python benchmarks/pipeline.py --rows 300000 --stages   # RSS per product stage
    .venv/bin/python benchmarks/pipeline.py --memory-limit 512MB      # DuckDB memory_limit in the profile
    .venv/bin/python benchmarks/pipeline.py --rows 10000000 --stages --submit-only   # phase A alone

To measure a fixed commit while the working tree is being edited: `git archive HEAD | tar -x -C SNAP`,
copy this file into SNAP/benchmarks/, and run it with PYTHONPATH=SNAP (the dbt and emulator processes
inherit it, so they import SNAP's package and the project's packages.yml points at SNAP).

`--stages` runs dbt through this file as a launcher (`pipeline.py _dbt ...`, dbt's own entry point
in-process) that wraps the product's stage functions and records, per stage, the RSS at exit and the
peak RSS reached inside it (VmHWM, reset before each stage via /proc/self/clear_refs), and the peak
spill to `<database>.tmp` inside it (sampled by a thread of the launcher).
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
from measure import run_measured  # noqa: E402,F401 - benchmarks/measure.py; re-exported

BATCH_SIZE = 100_000
PROCESSING_DELAY = 3600
TEMPLATE = ("Classify this support ticket.\nLabels: billing (invoice, refund), bug, account, other\n\n"
            "Ticket {{ id }}: {{ body }}")
# ~200-byte bodies, distinct per row.
BODY_SQL = ("'Customer ' || (i % 9973) || ' reports that the invoice for order ' || (i * 7) || "
            "' was charged twice on the card ending ' || lpad((i % 10000)::varchar, 4, '0') || "
            "'; they ask for a refund of the duplicate amount and a confirmation email to the account owner. "
            "Ticket ref ' || md5(i::varchar)[1:12] || '.'")
STAGE_FILE_ENV = "CB_BENCH_STAGE_FILE"
DUCKDB_MEMORY_ENV = "CB_BENCH_DUCKDB_MEMORY"
TRACE_ENV = "CB_BENCH_TRACEMALLOC"
SPILL_ENV = "CB_BENCH_SPILL_DIR"


# --- measurement -----------------------------------------------------------------------------------

def node_seconds(out: str, model: str) -> float | None:
    """The time dbt reports for the model node: `... main.items_batch ... [OK in 12.34s]`."""
    m = re.search(rf"\b{re.escape(model)}\b.*\[\w+ in ([0-9.]+)s\]", out)
    return float(m.group(1)) if m else None


# --- one pipeline ------------------------------------------------------------------------------------

def bench(n: int, work: Path, memory_limit: str | None, stages: bool, trace: bool = False,
          submit_only: bool = False) -> dict:
    import duckdb
    from dbt_harness import DBT, DbtProject, create_calls
    from emulator_harness import EmulatorProcess

    emu = EmulatorProcess(work / "emulator-state", "--processing-delay", str(PROCESSING_DELAY))
    try:
        project = DbtProject(work / "project", emu)
        if memory_limit:
            import yaml
            profiles = yaml.safe_load((project.root / "profiles.yml").read_text())
            profiles["test_project"]["outputs"]["dev"]["settings"] = {"memory_limit": memory_limit}
            project.write("profiles.yml", yaml.safe_dump(profiles))
        project.write("prompts/item.j2", TEMPLATE)
        project.configure(key="id", prompt_template="prompts/item.j2", model="claude-haiku-4-5", max_tokens=16,
                          max_requests_per_batch=BATCH_SIZE, wait_seconds=0)
        t0 = time.perf_counter()
        con = duckdb.connect(str(project.db_path))
        try:
            con.execute("create schema if not exists raw")
            con.execute(f"create or replace table raw.items as select i::bigint as id, {BODY_SQL} as body "
                        f"from range(1, {n + 1}) t(i)")
            avg_body = con.execute("select avg(strlen(body)) from raw.items").fetchone()[0]
        finally:
            con.close()
        t_load = time.perf_counter() - t0

        env = project.env()
        stage_file = work / "stages.jsonl"
        if stages:
            env[STAGE_FILE_ENV] = str(stage_file)
            env[SPILL_ENV] = f"{project.db_path}.tmp"
        if trace:
            env[TRACE_ENV] = "1"

        def dbt(label: str, *args: str) -> dict:
            cmd = [sys.executable, str(Path(__file__).resolve()), "_dbt", *args] if stages else [DBT, *args]
            if stages:
                stage_file.write_text("")
            r = run_measured(cmd, project.root, env, work / f"dbt-{label}.log", project.db_path)
            if r["rc"] != 0:
                raise SystemExit(f"dbt {' '.join(args)} failed ({r['rc']}):\n{r['out'][-6000:]}")
            r["node"] = node_seconds(r["out"], project.model)
            m = re.search(r"dbt_claude_batch work took ([0-9.]+)s", r["out"])
            r["work"] = float(m.group(1)) if m else None
            r["creates"] = create_calls(emu)
            r["stages"] = ([json.loads(l) for l in stage_file.read_text().splitlines() if l.strip()]
                           if stages else [])
            # The launcher resets VmHWM per stage, which also resets ru_maxrss: the process peak is
            # then the largest of the per-stage peaks and what wait4 saw after the last reset.
            r["rss_mib"] = max([r["rss_mib"], *(s["hwm_mib"] for s in r["stages"])])
            return r

        phases = {}
        phases["baseline"] = dbt("baseline", "run", "-s", "stg_items")
        phases["submit"] = dbt("submit", "run", "-s", f"+{project.model}")
        batches = emu.ledger(requests=False)["batches"]
        expected_batches = -(-n // (BATCH_SIZE - 1))  # each batch also carries its marker request
        assert len(batches) == expected_batches, f"{len(batches)} batches created, expected {expected_batches}"
        assert phases["submit"]["creates"] == expected_batches, (phases["submit"]["creates"], expected_batches)
        assert all(b["processing_status"] == "in_progress" for b in batches), batches
        if submit_only:
            return {"rows": n, "batches": len(batches), "avg_body": avg_body, "load_s": t_load,
                    "emulator_process_s": 0.0, "db_mib": project.db_path.stat().st_size / 2**20, "phases": phases}

        emu.advance_clock(PROCESSING_DELAY + 1)
        # The emulator processes a batch lazily on its first access after the end; do that here, so
        # phase B measures the product, not the emulator.
        t0 = time.perf_counter()
        client = emu.client(max_retries=0, timeout=1800)
        for b in batches:
            got = client.messages.batches.retrieve(b["id"])
            if got.processing_status == "in_progress":  # its first access: a fresh batch is never ended yet
                got = client.messages.batches.retrieve(b["id"])
            assert got.processing_status == "ended", got
        t_emulator = time.perf_counter() - t0

        phases["harvest"] = dbt("harvest", "run", "-s", f"+{project.model}")
        phases["noop"] = dbt("noop", "run", "-s", f"+{project.model}")
        assert "nothing to submit" in phases["noop"]["out"], phases["noop"]["out"][-3000:]
        # B and C send nothing: the create count stays at one per batch.
        assert phases["harvest"]["creates"] == phases["noop"]["creates"] == expected_batches, (
            phases["harvest"]["creates"], phases["noop"]["creates"], expected_batches)

        (n_rows, n_ok), = project.query(
            "select count(*), count(*) filter (where output_text in ('billing', 'bug', 'account', 'other')) "
            "from main.items_batch")
        assert n_rows == n and n_ok == n, (n_rows, n_ok)
        (n_fail,), = project.query("select count(*) from main.items_batch__failures")
        assert n_fail == 0, n_fail
        db_mib = project.db_path.stat().st_size / 2**20
        return {"rows": n, "batches": len(batches), "avg_body": avg_body, "load_s": t_load,
                "emulator_process_s": t_emulator, "db_mib": db_mib, "phases": phases}
    finally:
        emu.stop()


# --- reporting --------------------------------------------------------------------------------------

PHASE_LABELS = {
    "baseline": "baseline: `dbt run -s stg_items` (no batch model)",
    "submit": "A: build + submit",
    "harvest": "B: poll + harvest + materialise",
    "noop": "C: nothing to do",
}


def fmt_s(x: float | None) -> str:
    return "-" if x is None else f"{x:,.1f} s"


def table(res: dict) -> str:
    lines = ["| phase | dbt process wall | model node (dbt) | batch_model's own time | peak RSS of dbt "
             "| peak spill to disk | create calls (cumulative) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for key, label in PHASE_LABELS.items():
        if key not in res["phases"]:
            continue
        p = res["phases"][key]
        node, work = ("-", "-") if key == "baseline" else (fmt_s(p["node"]), fmt_s(p.get("work")))
        lines.append(f"| {label} | {fmt_s(p['wall'])} | {node} | {work} | {p['rss_mib']:,.0f} MiB | {p['spill_mib']:,.0f} MiB | {p['creates']} |")
    return "\n".join(lines)


def scale_table(results: list[dict]) -> str:
    head = "| rows | " + " | ".join(f"{PHASE_LABELS[k].split(':')[0]} wall / peak RSS" for k in PHASE_LABELS) + " |"
    lines = [head, "|---:|" + "---:|" * len(PHASE_LABELS)]
    for r in results:
        cells = [f"{fmt_s(r['phases'][k]['wall'])} / {r['phases'][k]['rss_mib']:,.0f} MiB" for k in PHASE_LABELS]
        lines.append(f"| {r['rows']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def stage_table(res: dict) -> str:
    traced = any("py_peak_mib" in s for p in res["phases"].values() for s in p["stages"])
    lines = ["| phase | stage | calls | seconds | peak RSS inside | RSS after | peak spill inside |"
             + (" Python heap peak inside (tracemalloc) |" if traced else ""),
             "|---|---|---:|---:|---:|---:|---:|" + ("---:|" if traced else "")]
    for key in ("submit", "harvest", "noop"):
        agg: dict[str, dict] = {}
        for s in res["phases"].get(key, {"stages": []})["stages"]:
            a = agg.setdefault(s["stage"], {"calls": 0, "seconds": 0.0, "peak": 0.0, "after": 0.0, "py": 0.0,
                                                 "spill": 0.0})
            a["spill"] = max(a["spill"], s.get("spill_mib", 0.0))
            a["py"] = max(a["py"], s.get("py_peak_mib", 0.0))
            a["calls"] += 1
            a["seconds"] += s["seconds"]
            a["peak"] = max(a["peak"], s["hwm_mib"])
            a["after"] = s["rss_mib"]
        for name, a in agg.items():
            lines.append(f"| {key} | {name} | {a['calls']} | {a['seconds']:.1f} | {a['peak']:,.0f} MiB | "
                         f"{a['after']:,.0f} MiB | {a['spill']:,.0f} MiB |" + (f" {a['py']:,.1f} MiB |" if traced else ""))
    return "\n".join(lines)


def machine() -> str:
    cpu = ""
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import duckdb
    return (f"{os.cpu_count()} cores{' (' + cpu + ')' if cpu else ''}, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}, DuckDB {duckdb.__version__}, "
            f"{dt.date.today().isoformat()}")


def report(res: dict) -> str:
    return (f"{res['rows']:,} rows (bodies {res['avg_body']:.0f} bytes on average), {res['batches']} batches; "
            f"load {res['load_s']:.1f} s; emulator processing (outside the dbt runs) {res['emulator_process_s']:.1f} s; "
            f"DuckDB file {res['db_mib']:,.0f} MiB\n\n{table(res)}")


# --- launcher for --stages -------------------------------------------------------------------------

def _proc_status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def _launch_dbt(args: list[str]) -> int:
    """Run dbt in this process with the product's stages wrapped to record time and RSS."""
    out_path = os.environ.get(STAGE_FILE_ENV)
    traced = bool(os.environ.get(TRACE_ENV))
    if traced:
        import tracemalloc

        tracemalloc.start()
    import importlib

    from dbt_claude_batch.run import python_model
    from measure import SpillSampler

    spill = SpillSampler(Path(os.environ[SPILL_ENV]) if os.environ.get(SPILL_ENV) else None).__enter__()

    def wrap(module_name: str, name: str, label: str | None = None, reset: bool = True) -> None:
        """Wrap `name` where it is defined and where python_model bound it (imports may be lazy)."""
        try:
            module = importlib.import_module(f"dbt_claude_batch.{module_name}")
            *owners, attr = name.split(".")  # "Class.method" wraps a method
            for owner in owners:
                module = getattr(module, owner)
            fn = getattr(module, attr)
        except (ImportError, AttributeError):
            # A renamed or moved stage would silently drop out of the table: fail instead.
            raise SystemExit(f"pipeline benchmark: no dbt_claude_batch.{module_name}.{name} to measure; "
                             "update the wrap() list in benchmarks/pipeline.py")

        @functools.wraps(fn)
        def wrapper(*a, **kw):
            if reset:
                try:
                    with open("/proc/self/clear_refs", "w") as f:
                        f.write("5")  # reset VmHWM to the current RSS
                except OSError:
                    pass
            if reset and traced:
                tracemalloc.reset_peak()
            if reset:
                spill.peak = 0
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                rec = {"stage": label or f"{module_name}.{name}", "seconds": time.perf_counter() - t0,
                       "hwm_mib": _proc_status_mib("VmHWM"), "rss_mib": _proc_status_mib("VmRSS"),
                       "spill_mib": spill.peak / 2**20}
                if traced:
                    rec["py_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
                cursor = getattr(a[0], "cursor", None) if a else None  # a State's; a session's is a method
                if os.environ.get(DUCKDB_MEMORY_ENV) and cursor is not None and not callable(cursor):
                    # Where DuckDB's memory and spill sit as the stage ends, by tag (tables, sorts, ...).
                    try:
                        rec["duckdb_mib"] = {tag: [round(m / 2**20), round(t / 2**20)] for tag, m, t in cursor.execute(
                            "select tag, memory_usage_bytes, temporary_storage_bytes from duckdb_memory() "
                            "where memory_usage_bytes + temporary_storage_bytes > 0").fetchall()}
                        rec["temp_tables"] = dict(cursor.execute(
                            "select table_name, estimated_size from duckdb_tables() where temporary").fetchall())
                    except Exception as e:  # a cursor busy with an open result: leave it be
                        rec["duckdb_mib"] = repr(e)
                if out_path:
                    with open(out_path, "a") as f:
                        f.write(json.dumps(rec) + "\n")

        setattr(module, attr, wrapper)
        if getattr(python_model, name, None) is fn:
            setattr(python_model, name, wrapper)

    wrap("base.keys", "check_keys")
    wrap("run.polling", "refresh")
    wrap("run.harvest", "harvest_ended")
    wrap("run.planning", "stage")
    wrap("base.keys", "check_custom_ids_unique")
    wrap("run.planning", "plan")
    wrap("run.spool", "build_spool")
    wrap("run.sql_spool", "build_in_sql", "sql_spool.build_in_sql (in build_spool)", reset=False)
    wrap("run.sql_spool", "_judging", "sql_spool._judging: the groups' leaders (in build_in_sql)")
    wrap("run.batch_files", "BatchFiles.add", "batch_files.BatchFiles.add: cut, write (in build_in_sql)",
         reset=False)
    wrap("run.sql_spool", "_view_verdicts", "sql_spool._view_verdicts (in build_in_sql)")
    wrap("run.planning", "record_aliases")
    wrap("run.local_outcomes", "reuse_held_answers")
    wrap("run.submission", "submit_chunk")
    wrap("run.submission", "create_batch", "submission.create_batch (in submit_chunk)", reset=False)
    wrap("run.spool", "Spool.body_of", "spool.Spool.body_of (in create_batch)", reset=False)
    wrap("state.state", "State.record_intent", "state.State.record_intent (in create_batch)", reset=False)
    wrap("run.submission", "_create", "submission._create: the HTTP call (in create_batch)", reset=False)
    wrap("run.harvest", "download_results", "harvest.download_results (in harvest_ended, on its download thread)", reset=False)
    wrap("run.harvest", "load_lines", "harvest.load_lines (in harvest_ended)", reset=False)
    wrap("run.harvest", "finish_batch", "harvest.finish_batch (in harvest_ended)", reset=False)
    wrap("run.answers", "refresh_pending")
    wrap("run.answers", "refresh", "answers.refresh (in answers.refresh_pending)", reset=False)
    wrap("run.retention", "prune_prompts", "retention.prune_prompts (in _finish)", reset=False)
    wrap("run.retention", "drop_rows_gone_from_source", "retention.drop_rows_gone_from_source (in _finish)", reset=False)
    wrap("run.retention", "compact_if_due", "retention.compact_if_due (in _finish)", reset=False)
    wrap("run.python_model", "_poll_and_harvest")
    wrap("run.python_model", "_api_work")
    wrap("run.python_model", "_finish")
    wrap("run.results", "write_views")
    wrap("run.python_model", "batch_model", "batch_model (at return)", reset=False)
    from dbt.cli.main import cli

    sys.argv = ["dbt", *args]
    try:
        cli()
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0


# --- main -------------------------------------------------------------------------------------------

def main(argv: list[str]) -> int:
    if argv[:1] == ["_dbt"]:
        return _launch_dbt(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--scale", help="comma-separated row counts, e.g. 100000,300000,1000000")
    ap.add_argument("--memory-limit", help="DuckDB memory_limit set in the dbt profile, e.g. 512MB")
    ap.add_argument("--stages", action="store_true", help="record time and RSS per product stage")
    ap.add_argument("--tracemalloc", action="store_true",
                    help="with --stages: also the Python heap peak per stage (slower)")
    ap.add_argument("--submit-only", action="store_true", help="stop after the submit (no harvest, no no-op run)")
    ap.add_argument("--keep", action="store_true", help="keep the temp directories")
    args = ap.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.scale.split(",")] if args.scale else [args.rows]

    print(f"machine: {machine()}", flush=True)
    results = []
    for n in sizes:
        work = Path(tempfile.mkdtemp(prefix=f"cb_pipeline_{n}_"))
        try:
            res = bench(n, work, args.memory_limit, args.stages or args.tracemalloc, args.tracemalloc,
                        args.submit_only)
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
        results.append(res)
        print(f"\n{report(res)}", flush=True)
        if args.stages or args.tracemalloc:
            print(f"\nper stage (launcher in-process):\n\n{stage_table(res)}", flush=True)
    if len(results) > 1:
        print(f"\nscaling{' (DuckDB memory_limit ' + args.memory_limit + ')' if args.memory_limit else ''}:\n")
        print(scale_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
