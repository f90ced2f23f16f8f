"""The quickstarts cannot rot: docs/getting-started.md and docs/documents.md, each pasted into a fresh
directory, run against the emulator.

The project is built only from the page's marked blocks (`<!-- quickstart: FILE -->` and
`<!-- quickstart: run -->`), plus what a user's machine has: a profile pointing at a DuckDB file, the
package where `packages.yml` says (this repository) and the emulator as `ANTHROPIC_BASE_URL`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
import subprocess
import sys
from collections import Counter

import duckdb
import yaml

import dbt_harness
from dbt_harness import row_requests
from docs_pages import REPO_ROOT, quickstart_blocks, read



def _dbt(args: list[str], cwd, env) -> subprocess.CompletedProcess:
    command = [dbt_harness.DBT, *args]
    if dbt_harness.LAUNCHER is None:
        return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    return dbt_harness.LAUNCHER.run(command, cwd, env, timeout=600)


def _run_line(line: str, cwd, env) -> None:
    """One line of a `run` block, as a shell in the project directory would run it."""
    words = shlex.split(line, comments=True)
    if not words:
        return
    if words[0] == "export":
        name, _, value = words[1].partition("=")
        if name != "ANTHROPIC_API_KEY":  # the page's is a placeholder; the emulator takes any key
            env[name] = value
        return
    if words[0] == "python":  # a script of the page, with the Python that runs dbt (the user's environment)
        proc = subprocess.run([sys.executable, *words[1:]], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, f"`{line}` failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return
    assert words[0] == "dbt", f"the quickstart test cannot run `{line}`: only `export`, `python` and `dbt` lines"
    out_file = None
    if ">" in words:
        at = words.index(">")
        words, out_file = words[:at], words[at + 1]
    proc = _dbt(words[1:], cwd, env)
    assert proc.returncode == 0, f"`{line}` failed ({proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    if out_file:
        (cwd / out_file).write_text(proc.stdout, encoding="utf-8")


def _fresh_project(page: str, tmp_path, emulator):
    """The page's file blocks written into a fresh project and home: (root, files, run blocks, env, profiles)."""
    blocks = quickstart_blocks(read(page))
    files = {b.name: b.text for b in blocks if b.name != "run"}
    runs = [b.text for b in blocks if b.name == "run"]
    assert runs and "dbt_project.yml" in files and "packages.yml" in files

    root, home = tmp_path / "fresh", tmp_path / "home"
    for name, text in files.items():
        path = home / name.removeprefix("~/") if name.startswith("~/") else root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    # The page's package path is where the user cloned the repository: here, this one.
    packages = yaml.safe_load(files["packages.yml"])
    assert [list(p) for p in packages["packages"]] == [["local"]], "packages.yml should install one local package"
    (root / "packages.yml").write_text(yaml.safe_dump({"packages": [{"local": str(REPO_ROOT)}]}))
    profiles = home / ".dbt" / "profiles.yml"
    assert profiles.is_file(), "the page gives no ~/.dbt/profiles.yml block"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBT_", "ANTHROPIC_"))}
    env.update({"ANTHROPIC_API_KEY": "test-key", "ANTHROPIC_BASE_URL": emulator.url, "HOME": str(home),
                "DBT_PROFILES_DIR": str(profiles.parent), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"})
    return root, files, runs, env, profiles


def _database(root, files, profiles):
    """The project's DuckDB file, read-only (its path in the profile is relative to the project directory)."""
    project = yaml.safe_load(files["dbt_project.yml"])
    target = yaml.safe_load(profiles.read_text())[project["profile"]]
    return duckdb.connect(str(root / target["outputs"][target["target"]]["path"]), read_only=True)


def test_the_getting_started_page_runs_in_a_fresh_project(tmp_path, emulator):
    root, files, runs, env, profiles = _fresh_project("getting-started.md", tmp_path, emulator)
    for block in runs:
        for line in block.splitlines():
            _run_line(line, root, env)

    [model] = [name.removeprefix("models/").removesuffix(".py") for name in files if name.endswith(".py")]
    [seed] = [name for name in files if name.startswith("seeds/")]
    source = list(csv.DictReader(io.StringIO(files[seed])))
    project = yaml.safe_load(files["dbt_project.yml"])
    key = project["models"][project["name"]][model]["+meta"]["claude_batch"]["key"]
    con = _database(root, files, profiles)
    try:
        results = con.execute(f'select "{key}", output_text from main."{model}"').fetchall()
    finally:
        con.close()
    assert sorted(r[0] for r in results) == sorted(int(row[key]) for row in source)
    assert all(text for _, text in results)
    assert "dbt_claude_batch.no_key_dropped" in (root / "models" / f"{model}.yml").read_text()


def test_the_documents_page_runs_in_a_fresh_project(tmp_path, emulator):
    """PDFs and a PNG in a folder, listed by a staging table, to extracted fields; the corrupt file a named
    failure; after an edit, that file alone is sent again (3 dbt commands: deps, build, run)."""
    root, files, runs, env, profiles = _fresh_project("documents.md", tmp_path, emulator)
    assert [len(block.splitlines()) for block in runs] == [4, 2]
    for line in runs[0].splitlines():
        _run_line(line, root, env)
    first = Counter(r["custom_id"] for r in row_requests(emulator))
    for line in runs[1].splitlines():
        _run_line(line, root, env)

    con = _database(root, files, profiles)
    try:
        results = {r[0]: r[1:] for r in con.execute(
            "select file_name, custom_id, document_type, summary, attempt from main.document_fields").fetchall()}
        parts = json.loads(con.execute("select output_json from main.document_fields "
                                       "where file_name = 'appraisal-003.pdf'").fetchone()[0])
        failures = dict(con.execute("select file_name, error_message from main.document_fields__failures "
                                    "where error_type = 'attachment_error'").fetchall())
        n_failures = con.execute("select count(*) from main.document_fields__failures").fetchone()[0]
        leaked = con.execute("select table_name from information_schema.tables "
                             "where table_name like 'document_fields__dbt_tmp%'").fetchall()
    finally:
        con.close()
    expected = {"application-001.pdf": ("loan_application", "pdf:2p:", 1),
                "statement-002.pdf": ("bank_statement", "pdf:3p:", 2),
                "id-card-005.png": ("id_card", "image:540x340:", 1)}
    # The 120-page PDF is cut into two parts of 60 pages: one results row, its output_json the parts'
    # objects in page order (output columns NULL: no single object), each part reading its own pages.
    cut = results.pop("appraisal-003.pdf")
    assert cut[1:] == (None, None, 1), cut
    assert [(p["document_type"], p["summary"].split(" | ")[1][:7]) for p in parts] == [("appraisal", "pdf:60p")] * 2
    assert sorted(results) == sorted(expected)
    for name, (document_type, read_as, attempt) in expected.items():
        _, got_type, summary, got_attempt = results[name]
        assert (got_type, got_attempt) == (document_type, attempt), name
        assert summary.startswith(f"{document_type} | {read_as}"), (name, summary)

    assert failures["broken-004.pdf"].startswith(
        'Attachment in column `pdf` for key {"file_name":"broken-004.pdf"} is a corrupt PDF')
    assert n_failures == len(failures) == 1
    assert leaked == []  # the page's post-hook drops dbt-duckdb's leaked temp tables

    # The first build sent each good file once; the edit sent the edited file alone, once more.
    sent = {name: results[name][0] for name in ("application-001.pdf", "statement-002.pdf", "id-card-005.png")}
    assert {name: first[cid] for name, cid in sent.items()} == dict.fromkeys(sent, 1)
    assert sum(first.values()) == len(sent) + 2  # and the over-limit PDF's two parts; the corrupt PDF never
    after = Counter(r["custom_id"] for r in row_requests(emulator))
    assert after - first == Counter({sent["statement-002.pdf"]: 1})
