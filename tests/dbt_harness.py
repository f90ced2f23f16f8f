"""A throwaway dbt-duckdb project that installs this repository as a package, driven by real `dbt`.

    project = DbtProject(tmp_path, emulator)       # writes the project and installs the package
    project.load_table("items", rows)              # raw.items in the DuckDB file (while dbt is not running)
    project.configure(key="id", prompt_template="prompts/item.j2", ...)
    project.dbt("run")                             # a real dbt process against the emulator
    project.query("select ... from main.items_batch")

Every dbt command is a separate process, so state written by one run is only seen by the next
through the DuckDB file, exactly as for a user. In the test suite those processes fork from a
`dbt_forkserver.ForkServer` (see tests/conftest.py); elsewhere (the benchmarks) each is the `dbt` script.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import duckdb
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DBT = str(Path(sys.executable).parent / "dbt")
# Set by the test suite (tests/conftest.py) to a `dbt_forkserver.ForkServer`; None: every command is `DBT` itself.
LAUNCHER = None
# Set by the test suite to a directory of dbt's parse results (`partial_parse.msgpack`), one per project
# configuration; None: every project parses on its own. See `DbtProject._seed_parse`.
PARSE_CACHE: Path | None = None
MODEL = "items_batch"

MODEL_PY = '''from dbt_claude_batch import batch_model


def model(dbt, session):
    dbt.config(materialized="incremental", unique_key={unique_key!r}, incremental_strategy={strategy!r})
    return batch_model(dbt, session, source=dbt.ref("stg_items"), settings=dbt.config.meta_get("claude_batch"))
'''

TEMPLATE = "Item {{ id }}: {{ body }}"
# Where `configure` writes the batch model's settings, unless a test gives the model a properties file.
SETTINGS_YML = "models/_claude_batch_settings.yml"


def _take_ctrl_c() -> None:
    """In a dbt child before exec: SIGINT as a terminal user's dbt has it. A suite started in the background
    (`cmd &` in a script, nohup) inherits SIGINT ignored, and its Ctrl-C tests would signal a deaf dbt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class DbtRunFailed(AssertionError):
    pass


class DbtProject:
    def __init__(self, root: Path, emulator, model: str = MODEL):
        self.root = Path(root)
        self.emulator = emulator
        self.model = model
        self.db_path = self.root / "warehouse.duckdb"
        self.settings: dict[str, Any] = {}
        self.post_hook = True
        # The re-buy guard (max_rebuy_fraction, default 0.2) is off unless a test opts in: many tests edit a
        # template and expect every row to be bought again. Set before `configure`, which writes it.
        self.rebuy_guard = False
        self.project_vars: dict[str, Any] = {}  # `vars:` of dbt_project.yml (written by `configure`)
        self.env_overrides: dict[str, str | None] = {}
        self.root.mkdir(parents=True, exist_ok=True)
        # Relative (dbt runs in the project directory), so that projects of the same configuration have the
        # same profile for dbt's parse check and can share a parse (`_seed_parse`).
        self.write("profiles.yml", yaml.safe_dump({
            "test_project": {"target": "dev", "outputs": {"dev": {
                "type": "duckdb", "path": self.db_path.name, "threads": 1}}}}))
        self.write("packages.yml", yaml.safe_dump({"packages": [{"local": str(REPO_ROOT)}]}))
        self.write("models/stg_items.sql", "select * from raw.items\n")
        self.write("prompts/item.j2", TEMPLATE)
        self.configure(key="id", prompt_template="prompts/item.j2", model="claude-haiku-4-5", max_tokens=64)
        self.write_model()
        self.install_package()

    def install_package(self) -> None:
        """What `dbt deps` does for a `local:` package: a link in dbt_packages/ (without its 2 s start-up).

        `test_dbt_deps_installs_the_package` runs the real `dbt deps` once.
        """
        packages = self.root / "dbt_packages"
        packages.mkdir(exist_ok=True)
        link = packages / "dbt_claude_batch"
        if not link.exists():
            link.symlink_to(REPO_ROOT, target_is_directory=True)

    # files ---------------------------------------------------------------------------------
    def write(self, relpath: str, text: str) -> Path:
        """Write a file of the project. A properties file with an entry for the batch model becomes the
        home of its settings (`configure`): dbt takes one entry per model."""
        if relpath != SETTINGS_YML and relpath.startswith("models/") and relpath.endswith((".yml", ".yaml")):
            doc = yaml.safe_load(text) or {}
            if any(m.get("name") == self.model for m in doc.get("models") or []):
                self._settings_home, self._settings_doc = relpath, doc
                self._write_settings()
                return self.root / relpath
        return self._write(relpath, text)

    def _write(self, relpath: str, text: str) -> Path:
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def write_model(self, unique_key: str | list[str] = "id", body: str | None = None,
                    strategy: str = "delete+insert") -> None:
        self.write(f"models/{self.model}.py", body or MODEL_PY.format(unique_key=unique_key, strategy=strategy))

    def configure(self, replace: bool = True, **settings: Any) -> None:
        """Set the model's `claude_batch` settings (replacing, or updating with replace=False).

        They go in a properties file (`config: meta:`), not in dbt_project.yml: a changed dbt_project.yml
        makes dbt parse the whole project again, a changed properties file only itself and its model.
        """
        self.settings = dict(settings) if replace else {**self.settings, **settings}
        model_cfg: dict[str, Any] = {}
        if self.post_hook:
            model_cfg["+post-hook"] = [{
                "sql": "{{ dbt_claude_batch.drop_leaked_tmp_tables(this) }}", "transaction": False}]
        project = yaml.safe_dump({
            "name": "test_project", "version": "1.0.0", "config-version": 2, "profile": "test_project",
            "model-paths": ["models"], "macro-paths": ["macros"],
            "models": {"test_project": {self.model: model_cfg}},
            **({"vars": self.project_vars} if self.project_vars else {}),
        }, sort_keys=False)
        if not (self.root / "dbt_project.yml").exists() or (self.root / "dbt_project.yml").read_text() != project:
            self._write("dbt_project.yml", project)
        self._write_settings()

    def written_settings(self) -> dict[str, Any]:
        """The `claude_batch` settings as written for dbt (with the re-buy guard's default)."""
        written = dict(self.settings)
        if not self.rebuy_guard:
            written.setdefault("max_rebuy_fraction", None)
        return written

    def _write_settings(self) -> None:
        meta = {"claude_batch": self.written_settings()}
        home = getattr(self, "_settings_home", SETTINGS_YML)
        if home == SETTINGS_YML:
            doc = {"version": 2, "models": [{"name": self.model, "config": {"meta": meta}}]}
        else:
            doc = json.loads(json.dumps(self._settings_doc))
            for entry in doc["models"]:
                if entry.get("name") == self.model:
                    config = entry.setdefault("config", {})
                    config["meta"] = {**(config.get("meta") or {}), **meta}
            (self.root / SETTINGS_YML).unlink(missing_ok=True)
        self._write(home, yaml.safe_dump(doc, sort_keys=False))

    # data ----------------------------------------------------------------------------------
    def load_table(self, name: str, rows: Iterable[dict], types: dict[str, str] | None = None) -> None:
        """(Re)create raw.<name> from dict rows; column types default to BIGINT for ints, VARCHAR else."""
        rows = list(rows)
        columns = list(types or {}) or list(rows[0])
        types = types or {c: ("BIGINT" if isinstance(rows[0][c], int) else "VARCHAR") for c in columns}
        con = duckdb.connect(str(self.db_path))
        try:
            con.execute("create schema if not exists raw")
            cols = ", ".join(f'"{c}" {types[c]}' for c in columns)
            con.execute(f"create or replace table raw.{name} ({cols})")
            if rows:
                marks = ", ".join("?" for _ in columns)
                con.executemany(f"insert into raw.{name} values ({marks})", [[r[c] for c in columns] for r in rows])
        finally:
            con.close()

    def query(self, sql: str, params: list | None = None) -> list[tuple]:
        con = duckdb.connect(str(self.db_path), read_only=True)
        try:
            return con.execute(sql, params or []).fetchall()
        finally:
            con.close()

    def rows_by_key(self, relation: str) -> dict[Any, dict]:
        """Rows of a relation as dicts, keyed by their first column."""
        con = duckdb.connect(str(self.db_path), read_only=True)
        try:
            cur = con.execute(f"select * from {relation}")
            names = [d[0] for d in cur.description]
            return {row[0]: dict(zip(names, row)) for row in cur.fetchall()}
        finally:
            con.close()

    def results(self) -> dict[Any, dict]:
        return self.rows_by_key(f"main.{self.model}")

    def failures(self) -> dict[Any, dict]:
        return self.rows_by_key(f"main.{self.model}__failures")

    # dbt -----------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DBT_", "ANTHROPIC_"))}
        env.update({
            "ANTHROPIC_API_KEY": "test-key",
            "ANTHROPIC_BASE_URL": self.emulator.url if self.emulator else "http://127.0.0.1:9",
            "DBT_PROFILES_DIR": str(self.root),
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        })
        for k, v in self.env_overrides.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        return env

    def command(self, *args: str, vars: dict | None = None) -> list[str]:
        cmd = [DBT, *args]
        if vars:
            cmd += ["--vars", json.dumps(vars)]
        return cmd

    def _parse_key(self, vars: dict | None) -> str:
        """What dbt's parse check compares (the projects' dbt_project.yml, the profile, the --vars): a
        saved parse of another project with the same key is one dbt itself accepts as this one's."""
        digest = hashlib.sha256()
        for name in ("dbt_project.yml", "profiles.yml"):
            digest.update((self.root / name).read_bytes() + b"\0")
        digest.update(json.dumps(vars or {}, sort_keys=True).encode())
        return digest.hexdigest()

    def _seed_parse(self, vars: dict | None) -> str | None:
        """Before a command: put the saved parse of a project configured like this one in target/.

        A fresh project, or one whose configuration just changed, would otherwise parse dbt's ~530
        macros again (~2.5 s of CPU, a third of the suite). dbt still checks what it is given: it
        re-reads every file whose checksum differs from the saved one (this project's own model, prompt
        or schema files) and parses everything afresh when the configuration does not match, as on a
        user's second run. Returns the key to save the parse under after the command."""
        if PARSE_CACHE is None:
            return None
        key = self._parse_key(vars)
        saved = PARSE_CACHE / f"{key}.msgpack"
        if key != getattr(self, "_parsed_key", None) and saved.exists():
            (self.root / "target").mkdir(exist_ok=True)
            shutil.copyfile(saved, self.root / "target" / "partial_parse.msgpack")
        return key

    def _keep_parse(self, key: str | None) -> None:
        own = self.root / "target" / "partial_parse.msgpack"
        if key is None or not own.exists():
            return
        self._parsed_key = key
        saved = PARSE_CACHE / f"{key}.msgpack"
        if not saved.exists():
            tmp = PARSE_CACHE / f".{key}.{os.getpid()}.tmp"
            shutil.copyfile(own, tmp)
            os.replace(tmp, saved)

    def dbt(self, *args: str, vars: dict | None = None, expect_ok: bool = True) -> subprocess.CompletedProcess:
        command = self.command(*args, vars=vars)
        key = self._seed_parse(vars)
        if LAUNCHER is None:
            proc = subprocess.run(command, cwd=self.root, env=self.env(), capture_output=True, text=True, timeout=600)
        else:
            proc = LAUNCHER.run(command, self.root, self.env(), timeout=600)
        self._keep_parse(key if proc.returncode == 0 else None)
        if expect_ok and proc.returncode != 0:
            raise DbtRunFailed(f"dbt {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}")
        if not expect_ok and proc.returncode == 0:
            raise DbtRunFailed(f"dbt {' '.join(args)} succeeded but was expected to fail:\n{proc.stdout[-4000:]}")
        return proc

    def run(self, vars: dict | None = None, expect_ok: bool = True) -> subprocess.CompletedProcess:
        return self.dbt("run", "-s", f"+{self.model}", vars=vars, expect_ok=expect_ok)

    def popen(self, *args: str, vars: dict | None = None):
        """A running dbt command, its stderr merged into `stdout` (a text pipe)."""
        self._seed_parse(vars)
        if LAUNCHER is not None:
            return LAUNCHER.popen(self.command(*args, vars=vars), self.root, self.env())
        return subprocess.Popen(self.command(*args, vars=vars), cwd=self.root, env=self.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                preexec_fn=_take_ctrl_c)

    def run_and_kill(self, line: str | None = None, when=None, timeout: float = 120) -> re.Match | None:
        """`dbt run`, then kill -9 it the moment its output matches `line` or `when()` turns true.

        Synchronises on an observable event (a log line, or the emulator's ledger), never on time.
        Returns the match of `line`; fails the test if dbt ended before the event.
        """
        proc = self.popen("run", "-s", f"+{self.model}")
        seen: list[str] = []
        found = None
        try:
            if line is not None:
                for text in proc.stdout:
                    seen.append(text)
                    found = re.search(line, text)
                    if found:
                        break
            else:
                deadline = time.monotonic() + timeout
                while not when():
                    if proc.poll() is not None or time.monotonic() > deadline:
                        break
            alive = proc.poll() is None
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            rest = proc.stdout.read()
            proc.stdout.close()
        if not alive or (line is not None and not found):
            raise DbtRunFailed(f"dbt ended before the event it was to be killed at:\n{''.join(seen)}{rest[-4000:]}")
        return found


def emulator_answer(prompt_text: str) -> str:
    """What the emulator answers to a prompt (no answer scenario): a digest of its exact text."""
    return "digest:" + hashlib.sha256(prompt_text.encode("utf-8")).hexdigest()[:16]


def expected_answer(item_id, body: str) -> str:
    """What the emulator answers for the default template."""
    return emulator_answer(f"Item {item_id}: {body}")


def items(n: int, start: int = 1, prefix: str = "body") -> list[dict]:
    return [{"id": i, "body": f"{prefix} number {i} with some text"} for i in range(start, start + n)]


MARKER_PATTERN = "dbt_claude_batch-proof-[0-9a-f]{32}"  # as keys.MARKER_PATTERN: no key's custom_id has this form


def is_marker(custom_id: str) -> bool:
    return re.fullmatch(MARKER_PATTERN, custom_id) is not None


def created_batches(emulator) -> list[dict]:
    """The emulator's batches; `request_count` counts the rows' requests, `marker` says one more was the proof."""
    ledger = emulator.ledger()
    marked = {r["batch_id"] for r in ledger["requests"] if is_marker(r["custom_id"])}
    out = []
    for batch in ledger["batches"]:
        batch = dict(batch, marker=batch["id"] in marked)
        batch["request_count"] -= batch["marker"]
        out.append(batch)
    return out


def row_requests(emulator) -> list[dict]:
    """Requests the emulator received for rows (marker requests left out)."""
    return [r for r in emulator.ledger()["requests"] if not is_marker(r["custom_id"])]


def marker_cost(project: "DbtProject") -> float:
    """What the marker requests (one per batch, see submission.py) cost, from the state's own outcomes."""
    from dbt_claude_batch.base.pricing import cost_sql, model_family_sql, prices_cte

    return project.query(
        f"with {prices_cte()} select coalesce(sum({cost_sql('o', 'p')}), 0) from dbt_claude_batch.outcomes o "
        f"left join cb_prices p on p.model_family = {model_family_sql('o.answered_model')} "
        f"where regexp_full_match(o.custom_id, '{MARKER_PATTERN}')"
    )[0][0]


def create_calls(emulator) -> int:
    calls = emulator.ledger(requests=False)["calls"].get("POST /v1/messages/batches", {})
    return sum(calls.values())
