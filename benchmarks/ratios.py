"""The product against its floors, one ratio per stage, from one run of this script (issue 9).

Not a test: it prints measurements. Each stage alternates the product and its floor, `--reps` times
(three by default; the no-op stage at least `NOOP_REPS` times, as one of its runs varies by as much as
its goal's margin), and prints the min and the median of each and their ratios:

  submit    the batch model's own time in a `dbt run` that stages, plans, renders, spools and creates
            ceil(N / 99,999) batches, minus the time the emulator took to answer the creates (logged
            per create), against DuckDB alone writing the same request JSON to a file (`COPY`).
  harvest   the batch model's time in the `dbt run` that polls, downloads, loads, reconciles and
            materialises N results, against DuckDB's `create table as select * from read_json(...)` of
            the same results files into a fresh database file.
  noop      a whole `dbt run` of the batch model with nothing to do, against a whole `dbt run` of an
            empty Python model in the same project.
  e2e       (`--e2e-rows`, 20,000 by default) a whole `dbt run` that submits, waits out 2 s of emulated
            processing and harvests, against `tutorial_script.py` doing the same job the way API
            tutorials do (SDK create, retrieve every second, iterate results, one bulk insert).

Each stage also measures a bound. For submit and harvest it is a part of the job the product cannot
skip, timed on its own: a goal it alone exceeds is shown out of reach rather than argued to be. For
e2e it is the script's own job run by dbt, for comparison: what dbt adds to the same work.

  submit    the floor's `COPY` with the sha256 of each request line (the request hash that proves a
            request was already bought) computed as it is written.
  harvest   a `dbt run` of an incremental Python model that returns `read_json` of the same files,
            merged by dbt-duckdb into the model's (empty) table on its key, with no download and no
            state: dbt's node time, as for the product. Both use `delete+insert`, the strategy the
            README recommends since it lands 10M rows in half the time of `merge`.
  noop      a whole `dbt run` of a Python model that reads the source's key and prompt columns once
            (count and sum of DuckDB's `hash`): knowing that nothing changed means reading the source.
  e2e       a whole `dbt run` of a Python model that runs the tutorial script's job itself
            (`tutorial_job`, no state): what dbt alone adds to the same job.

Every dbt process's peak RSS and peak spill to disk (benchmarks/measure.py) are printed next to its time. The DuckDB
`memory_limit` of the profile is `--memory-limit` (1GB by default, as the README advises; `none` for
DuckDB's default). The floors run with the same limit.

    .venv/bin/python benchmarks/ratios.py --rows 1000000
    .venv/bin/python benchmarks/ratios.py --rows 300000,1000000,10000000 --stages submit,harvest,noop --reps 1

The last lines are one table of every figure issue 21 names, per scale: product / bound against its
goal, peak RSS of the dbt process (goal: at most 1.5 GiB in every stage) and the most DuckDB spilled to
`<database>.tmp` meanwhile (goal: at most 2 GB in the first submit), with the commit measured.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import BATCH_SIZE, BODY_SQL, TEMPLATE, machine, node_seconds, run_measured  # noqa: E402

HERE = Path(__file__).resolve().parent
EMPTY_MODEL = '''def model(dbt, session):
    dbt.config(materialized="table")
    return session.sql("select 1 as id")
'''
# The no-op bound: one read of the key and prompt columns, as proving that nothing changed needs.
SOURCE_SCAN_MODEL = '''def model(dbt, session):
    dbt.config(materialized="table")
    return dbt.ref("stg_items").aggregate("count(*) as n, sum(hash(id, body)::hugeint) as h")
'''
# The end-to-end bound: the tutorial script's own job, run by dbt.
TUTORIAL_MODEL = '''import sys

sys.path.insert(0, {here!r})
from tutorial_script import tutorial_job


def model(dbt, session):
    dbt.config(materialized="table")
    return tutorial_job(session)
'''
# The harvest's bound: dbt merging the results files, as they are, into an incremental model (its first
# run creates it empty), with nothing else to do. Incremental, as the product must be: a table model
# would rewrite every result in every run, the ones with nothing to do included.
RESULTS_FLOOR_MODEL = '''def model(dbt, session):
    dbt.config(materialized="incremental", unique_key="custom_id", incremental_strategy="delete+insert")
    results = session.sql("select * from read_json({files!r}, format = 'newline_delimited')")
    return results if dbt.is_incremental else results.limit(0)
'''
# The request JSON the product sends for TEMPLATE, built by DuckDB alone.
FLOOR_REQUEST_SQL = """select to_json({{'custom_id': id::varchar, 'params': {{'model': 'claude-haiku-4-5', 'max_tokens': 16,
    'messages': [{{'role': 'user', 'content': {prompt}}}]}}}}) as line from raw.items"""
FLOOR_PROMPT_SQL = ("'Classify this support ticket.' || chr(10) || 'Labels: billing (invoice, refund), bug, account, other' "
                    "|| chr(10) || chr(10) || 'Ticket ' || id::varchar || ': ' || body")


# `--template shaped`: a template of branches and filters that renders the very text TEMPLATE renders for
# these rows (bodies are never blank, carry no outer whitespace and are under 300 characters), so the
# floor and the bound stay the same: before base/template_sql.py Jinja rendered it row by row.
SHAPED_TEMPLATE = ("Classify this support ticket.\nLabels: billing (invoice, refund), bug, account, other\n\n"
                   "{% if body %}Ticket {{ id }}: {{ body | trim | truncate(300) }}"
                   "{% else %}Ticket {{ id }}: (no text){% endif %}")
TEMPLATES = {"plain": TEMPLATE, "shaped": SHAPED_TEMPLATE}

# Issue 9's goals: the product's time at most this many times its floor's.
# Issue 21's goals, each against the stage's bound (product / bound, medians); e2e keeps issue 9's goal
# against its floor (the tutorial script), as it has no bound the product could reach.
GOALS = {"submit": 1.3, "harvest": 1.3, "noop": 1.1}
E2E_GOAL = 1.2
RSS_GOAL_MIB = 1.5 * 1024  # every stage, with memory_limit 1GB
# A run with nothing to do takes seconds, and one run of it (or of its bound) varies by +-10% on this
# kind of machine, the size of the goal's margin: the no-op stage always alternates at least this many.
NOOP_REPS = 5
SPILL_GOAL_MIB = 2e9 / 2**20  # the first submit


class Stage:
    def __init__(self, name: str, what: str, floor: str, bound: str | None = None):
        self.name, self.what, self.floor, self.bound = name, what, floor, bound
        self.product: list[float] = []
        self.floors: list[float] = []
        self.bounds: list[float] = []
        self.rss: list[float] = []
        self.spill: list[float] = []
        self.floor_rss: list[float] = []

    def ratio(self) -> float | None:
        """Product / bound (e2e: / floor), medians."""
        against = self.floors if self.name == "e2e" else self.bounds
        if not self.product or not against:
            return None
        return statistics.median(self.product) / statistics.median(against)

    def goal(self) -> float:
        return E2E_GOAL if self.name == "e2e" else GOALS[self.name]

    def memory(self) -> str:
        """Peak RSS and spill of the product's dbt process, each with its goal's verdict."""
        if not self.rss:
            return ""
        rss = max(self.rss)
        text = f"peak RSS {rss:,.0f} MiB ({'met' if rss <= RSS_GOAL_MIB else 'not met'}: <= 1,536 MiB)"
        if self.spill:
            spill = max(self.spill)
            text += f", spill {spill:,.0f} MiB"
            if self.name == "submit":
                text += f" ({'met' if spill <= SPILL_GOAL_MIB else 'not met'}: <= 2 GB)"
        return text

    def line(self) -> str:
        if not self.product or not self.floors:
            return f"{self.name}: not measured"
        pmin, pmed = min(self.product), statistics.median(self.product)
        fmin, fmed = min(self.floors), statistics.median(self.floors)
        frss = f" (floor {max(self.floor_rss):,.0f} MiB)" if self.floor_rss else ""
        ratio, goal = self.ratio(), self.goal()
        against = "floor" if self.name == "e2e" or not self.bounds else "bound"
        verdict = f"product / {against} {ratio:.2f}x (goal <= {goal}x: {'met' if ratio <= goal else 'not met'})"
        bound = ""
        if self.bounds:
            bmed = statistics.median(self.bounds)
            bound = f" | bound: {self.bound} median {bmed:.2f} s = {bmed / fmed:.2f}x the floor"
        return (f"{self.name}: {verdict} | {self.what} min {pmin:.2f} s, median {pmed:.2f} s | {self.floor} "
                f"min {fmin:.2f} s, median {fmed:.2f} s (product / floor {pmed / fmed:.2f}x){bound} | "
                f"{self.memory()}{frss}")


def _set_memory_limit(project, limit: str | None) -> None:
    import yaml

    profiles = yaml.safe_load((project.root / "profiles.yml").read_text())
    if limit:
        profiles["test_project"]["outputs"]["dev"]["settings"] = {"memory_limit": limit}
    project.write("profiles.yml", yaml.safe_dump(profiles))


def _connect(path: Path, limit: str | None):
    import duckdb

    return duckdb.connect(str(path), config={"memory_limit": limit} if limit else {})


def _project(work: Path, emu, rows: int, limit: str | None, template: str = TEMPLATE, **settings):
    import duckdb
    from dbt_harness import DbtProject

    project = DbtProject(work / "project", emu)
    _set_memory_limit(project, limit)
    project.write("prompts/item.j2", template)
    project.write("models/empty_model.py", EMPTY_MODEL)
    project.write("models/source_scan.py", SOURCE_SCAN_MODEL)
    project.configure(key="id", prompt_template="prompts/item.j2", model="claude-haiku-4-5", max_tokens=16,
                      max_requests_per_batch=BATCH_SIZE, **settings)
    con = duckdb.connect(str(project.db_path))
    try:
        con.execute("create schema if not exists raw")
        con.execute(f"create or replace table raw.items as select i::bigint as id, {BODY_SQL} as body "
                    f"from range(1, {rows + 1}) t(i)")
    finally:
        con.close()
    project.dbt("run", "-s", "stg_items", "empty_model", "source_scan")
    return project


class Runner:
    def __init__(self, project, work: Path):
        self.project, self.work, self.n = project, work, 0

    def dbt(self, *args: str) -> dict:
        self.n += 1
        r = run_measured([_dbt_path(), *args], self.project.root, self.project.env(), self.work / f"dbt-{self.n}.log",
                         self.project.db_path)
        if r["rc"] != 0:
            raise SystemExit(f"dbt {' '.join(args)} failed ({r['rc']}):\n{r['out'][-6000:]}")
        r["node"] = node_seconds(r["out"], self.project.model)
        r["creates_s"] = sum(float(x) for x in re.findall(r"submitted batch \S+ with .*? in ([0-9.]+)s", r["out"]))
        return r

    def restore(self, snapshot: Path) -> None:
        shutil.copyfile(snapshot, self.project.db_path)
        wal = Path(str(self.project.db_path) + ".wal")
        if wal.exists():
            wal.unlink()


def _dbt_path() -> str:
    from dbt_harness import DBT

    return DBT


def _timed(fn) -> float:
    """Seconds `fn` takes, run in a forked child: DuckDB's memory stays out of this process, whose
    size every later dbt child would otherwise inherit in its peak RSS (ru_maxrss counts the fork)."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    queue = ctx.SimpleQueue()

    def child() -> None:
        t0 = time.perf_counter()
        fn()
        queue.put(time.perf_counter() - t0)

    proc = ctx.Process(target=child)
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise SystemExit(f"floor failed (exit {proc.exitcode})")
    return queue.get()


def bench_scale(rows: int, reps: int, limit: str | None, stages: set[str], work: Path,
                template: str = TEMPLATE) -> list[Stage]:
    from emulator_harness import EmulatorProcess

    submit = Stage("submit", "product (model node minus create calls)", "SQL floor (COPY of the request JSON)",
                   "the floor with each line's sha256")
    harvest = Stage("harvest", "product (model node: poll, download, load, materialise)",
                    "floor (read_json into a table)", "an incremental dbt model merging read_json of the files")
    noop = Stage("noop", "product (`dbt run`, nothing to do)", "floor (`dbt run` of an empty Python model)",
                 "a `dbt run` of a model scanning the source once")
    emu = EmulatorProcess(work / "emulator", "--processing-delay", "3600")
    try:
        project = _project(work, emu, rows, limit, template, wait_seconds=0)
        runner = Runner(project, work)
        fresh = work / "fresh.duckdb"
        shutil.copyfile(project.db_path, fresh)
        floor_db = work / "floor.duckdb"

        def copy_requests(hashed: bool) -> None:
            """The floor (hashed=False), or the bound: the same lines, each with its sha256."""
            shutil.copyfile(fresh, floor_db)
            con = _connect(floor_db, limit)
            try:
                sql = FLOOR_REQUEST_SQL.format(prompt=FLOOR_PROMPT_SQL)
                if hashed:
                    sql = f"select line || chr(31) || sha256(line) from ({sql})"
                con.execute(f"copy ({sql}) to '{work / 'floor-requests.jsonl'}' (format csv, header false, quote '', "
                            "escape '', delimiter '\x1e')")
            finally:
                con.close()

        last = None
        for _ in range(reps):
            runner.restore(fresh)
            r = runner.dbt("run", "-s", project.model)
            if "submit" in stages:
                submit.product.append(r["node"] - r["creates_s"])
                submit.rss.append(r["rss_mib"])
                submit.spill.append(r["spill_mib"])
                submit.floors.append(_timed(lambda: copy_requests(False)))
                submit.bounds.append(_timed(lambda: copy_requests(True)))
            last = r
            if "submit" not in stages:
                break
        print(submit.line() if "submit" in stages else "submit: skipped", flush=True)
        if "submit" in stages:
            # The product side is the node less the creates; with the next batch's intent written while a
            # create is in flight, both are worth seeing (the emulator shares this machine's cores).
            print(f"submit detail (last repetition): model node {last['node']:.1f} s, of which the create calls "
                  f"{last['creates_s']:.1f} s", flush=True)
        submitted = work / "submitted.duckdb"
        shutil.copyfile(project.db_path, submitted)
        ids = re.findall(r"submitted batch (\S+) with", last["out"])
        assert len(ids) == -(-rows // (BATCH_SIZE - 1)), (len(ids), rows)

        if not stages & {"harvest", "noop"}:
            return [submit]  # (the `finally` stops the emulator) no download of results nobody times
        emu.advance_clock(3601)
        client = emu.client(max_retries=0, timeout=1800)
        files = []
        for i, batch_id in enumerate(ids):
            got = client.messages.batches.retrieve(batch_id)
            if got.processing_status != "ended":  # its first access: a fresh batch is never ended yet
                got = client.messages.batches.retrieve(batch_id)
            assert got.processing_status == "ended", got
            path = work / f"results-{i}.jsonl"
            with client.messages.batches.with_streaming_response.results(batch_id) as resp, open(path, "wb") as out:
                for chunk in resp.iter_bytes(1 << 20):
                    out.write(chunk)
            files.append(str(path))

        def floor_harvest() -> None:
            for p in (floor_db, Path(str(floor_db) + ".wal")):
                p.unlink(missing_ok=True)
            con = _connect(floor_db, limit)
            try:
                con.execute(f"create table results as select * from read_json({files!r}, format = 'newline_delimited')")
            finally:
                con.close()

        project.write("models/results_floor.py", RESULTS_FLOOR_MODEL.format(files=files))
        for _ in range(reps if "harvest" in stages or "noop" in stages else 0):
            runner.restore(submitted)
            r = runner.dbt("run", "-s", project.model)
            (n,), = project.query(f"select count(*) from main.{project.model}")
            assert n == rows, (n, rows)
            if "harvest" not in stages:
                break
            harvest.product.append(r["node"])
            harvest.rss.append(r["rss_mib"])
            harvest.spill.append(r["spill_mib"])
            harvest.floors.append(_timed(floor_harvest))
            runner.dbt("run", "-s", "results_floor")
            b = runner.dbt("run", "-s", "results_floor")
            harvest.bounds.append(node_seconds(b["out"], "results_floor"))
        if "harvest" in stages:
            con = _connect(project.db_path, limit)
            try:
                con.execute("drop table if exists main.results_floor")  # the noop runs see the product's DB only
            finally:
                con.close()
        print(harvest.line() if "harvest" in stages else "harvest: skipped", flush=True)

        if "noop" in stages:
            for _ in range(max(reps, NOOP_REPS)):
                r = runner.dbt("run", "-s", project.model)
                assert "nothing to submit" in r["out"], r["out"][-3000:]
                noop.product.append(r["wall"])
                noop.rss.append(r["rss_mib"])
                noop.spill.append(r["spill_mib"])
                f = runner.dbt("run", "-s", "empty_model")
                noop.floors.append(f["wall"])
                noop.floor_rss.append(f["rss_mib"])
                noop.bounds.append(runner.dbt("run", "-s", "source_scan")["wall"])
            print(noop.line(), flush=True)
            # The first of them is the quiet run an hourly schedule makes right after a harvest.
            print(f"noop, first quiet run after the harvest: {noop.product[0]:.2f} s against a bound of "
                  f"{noop.bounds[0]:.2f} s ({noop.product[0] / noop.bounds[0]:.2f}x)", flush=True)
    finally:
        emu.stop()
    return [s for s in (submit, harvest, noop) if s.name in stages]


def bench_e2e(rows: int, reps: int, limit: str | None, work: Path) -> Stage:
    from emulator_harness import EmulatorProcess

    e2e = Stage("e2e", f"product (one `dbt run`, {rows:,} rows)", "tutorial script",
                "a `dbt run` of a model running the script's job")
    emu = EmulatorProcess(work / "emulator", "--processing-delay", "2")
    try:
        project = _project(work, emu, rows, limit, wait_seconds=600)
        project.write("models/tutorial_model.py", TUTORIAL_MODEL.format(here=str(HERE)))
        runner = Runner(project, work)
        fresh = work / "fresh.duckdb"
        shutil.copyfile(project.db_path, fresh)
        script_db = work / "script.duckdb"
        for _ in range(reps):
            runner.restore(fresh)
            r = runner.dbt("run", "-s", project.model)
            (n,), = project.query(f"select count(*) from main.{project.model}")
            assert n == rows, (n, rows)
            e2e.product.append(r["wall"])
            e2e.rss.append(r["rss_mib"])
            shutil.copyfile(fresh, script_db)
            s = run_measured([sys.executable, str(HERE / "tutorial_script.py"), str(script_db)], work,
                             project.env(), work / "script.log")
            if s["rc"] != 0:
                raise SystemExit(f"tutorial script failed:\n{s['out'][-3000:]}")
            e2e.floors.append(s["wall"])
            e2e.floor_rss.append(s["rss_mib"])
            e2e.bounds.append(runner.dbt("run", "-s", "tutorial_model")["wall"])
    finally:
        emu.stop()
    print(e2e.line(), flush=True)
    return e2e


def summary(commit: str, by_rows: dict[int, list[Stage]]) -> str:
    """One table of every figure issue 21 names: ratio to the bound, peak RSS and spill, per scale."""
    lines = ["| rows | stage | product / bound | goal | peak RSS of dbt | spill to disk | commit |",
             "|---:|---|---:|---:|---:|---:|---|"]
    for rows, stages in by_rows.items():
        for s in stages:
            ratio = s.ratio()
            cell = "-" if ratio is None else f"{ratio:.2f}x ({'met' if ratio <= s.goal() else 'not met'})"
            rss = f"{max(s.rss):,.0f} MiB" if s.rss else "-"
            spill = f"{max(s.spill):,.0f} MiB" if s.spill else "-"
            label = s.name if s.name != "e2e" else "e2e (/ tutorial script)"
            lines.append(f"| {rows:,} | {label} | {cell} | <= {s.goal()}x | {rss} | {spill} | {commit} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", default="1000000",
                    help="row counts, comma-separated (300000,1000000,10000000 for every scale issue 21 names)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--memory-limit", default="1GB", help="DuckDB memory_limit of the profile, or 'none'")
    ap.add_argument("--stages", default="submit,harvest,noop,e2e")
    ap.add_argument("--e2e-rows", type=int, default=20_000)
    ap.add_argument("--template", choices=sorted(TEMPLATES), default="plain",
                    help="the prompt template of submit, harvest and noop (shaped: branches and filters)")
    ap.add_argument("--keep", action="store_true", help="keep the temp directories")
    ap.add_argument("--workdir", help="where the temp directories go (default: the system's)")
    args = ap.parse_args(argv)
    limit = None if args.memory_limit.lower() == "none" else args.memory_limit
    stages = set(args.stages.split(","))
    scales = [int(r.replace("_", "")) for r in args.rows.split(",")]
    # A snapshot (`git archive`, see pipeline.py) has no .git: `git archive` writes its commit into
    # benchmarks/COMMIT (export-subst in .gitattributes); CB_BENCH_COMMIT names it otherwise.
    commit = os.environ.get("CB_BENCH_COMMIT") or subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True).stdout.strip()
    if not commit:
        stamped = (HERE / "COMMIT").read_text().strip()
        commit = "" if stamped.startswith("$Format") else stamped
    dirty = not os.environ.get("CB_BENCH_COMMIT") and subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=HERE, capture_output=True, text=True).stdout.strip()
    commit = (commit or "unknown commit") + (" (with uncommitted changes)" if dirty else "")
    print(f"machine: {machine()}\ncommit: {commit}; memory_limit {limit or 'DuckDB default'}; "
          f"{args.reps} repetitions; template {args.template}", flush=True)
    by_rows: dict[int, list[Stage]] = {}

    def measured(name: str, fn) -> list[Stage]:
        work = Path(tempfile.mkdtemp(prefix=f"cb_ratios_{name}_", dir=args.workdir))
        try:
            return fn(work)
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)

    if stages & {"submit", "harvest", "noop"}:
        for rows in scales:
            print(f"\n{rows:,} rows:", flush=True)
            by_rows[rows] = measured(f"{rows}", lambda w: bench_scale(rows, args.reps, limit, stages, w,
                                                                       TEMPLATES[args.template]))
    if "e2e" in stages:
        print(f"\n{args.e2e_rows:,} rows, end to end:", flush=True)
        by_rows.setdefault(args.e2e_rows, []).extend(
            measured("e2e", lambda w: [bench_e2e(args.e2e_rows, args.reps, limit, w)]))
    print(f"\nsummary ({machine()}; memory_limit {limit or 'DuckDB default'}):\n")
    print(summary(commit, by_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
