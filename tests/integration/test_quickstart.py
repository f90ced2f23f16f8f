"""The quickstart cannot rot: docs/getting-started.md, pasted into a fresh directory, runs against the emulator.

The project is built only from the page's marked blocks (`<!-- quickstart: FILE -->` and
`<!-- quickstart: run -->`), plus what a user's machine has: a profile pointing at a DuckDB file, the
package where `packages.yml` says (this repository) and the emulator as `ANTHROPIC_BASE_URL`.
"""

from __future__ import annotations

import csv
import io
import os
import shlex
import subprocess

import duckdb
import yaml

import dbt_harness
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
    assert words[0] == "dbt", f"the quickstart test cannot run `{line}`: only `export` and `dbt` lines"
    out_file = None
    if ">" in words:
        at = words.index(">")
        words, out_file = words[:at], words[at + 1]
    proc = _dbt(words[1:], cwd, env)
    assert proc.returncode == 0, f"`{line}` failed ({proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    if out_file:
        (cwd / out_file).write_text(proc.stdout, encoding="utf-8")


def test_the_getting_started_page_runs_in_a_fresh_project(tmp_path, emulator):
    blocks = quickstart_blocks(read("getting-started.md"))
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

    for block in runs:
        for line in block.splitlines():
            _run_line(line, root, env)

    [model] = [name.removeprefix("models/").removesuffix(".py") for name in files if name.endswith(".py")]
    [seed] = [name for name in files if name.startswith("seeds/")]
    source = list(csv.DictReader(io.StringIO(files[seed])))
    project = yaml.safe_load(files["dbt_project.yml"])
    key = project["models"][project["name"]][model]["+meta"]["claude_batch"]["key"]
    target = yaml.safe_load(profiles.read_text())[project["profile"]]
    db_path = root / target["outputs"][target["target"]]["path"]  # relative: dbt runs in the project directory
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        results = con.execute(f'select "{key}", output_text from main."{model}"').fetchall()
    finally:
        con.close()
    assert sorted(r[0] for r in results) == sorted(int(row[key]) for row in source)
    assert all(text for _, text in results)
    assert "dbt_claude_batch.no_key_dropped" in (root / "models" / f"{model}.yml").read_text()
