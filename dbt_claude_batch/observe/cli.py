"""The `dbt-claude-batch` console script.

Each subcommand registers itself in `build_parser`; its implementation is imported lazily
inside its handler, so `dbt-claude-batch --help` stays fast and the product never loads the
emulator. `status` and `report` share dbt's connection options (`_add_connection_options`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _scenario(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--scenario must be a JSON object: {e}")
    if not isinstance(value, dict) or "name" not in value:
        raise argparse.ArgumentTypeError('--scenario must be a JSON object with a "name"')
    return value


def _run_emulator(args: argparse.Namespace) -> int:
    from dbt_claude_batch.emulator import serve

    return serve(port=args.port, state_dir=args.state_dir, processing_delay=args.processing_delay,
                 time_factor=args.time_factor, scenarios=args.scenario, seed=args.seed,
                 max_batch_bytes=args.max_batch_bytes)


def _add_emulator(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("emulator", help="run the local Message Batches API emulator",
                       description="Serve a local emulator of the Message Batches API on 127.0.0.1. "
                                   "The first stdout line is the base URL.")
    p.add_argument("--port", type=int, default=0, help="port to bind (0: pick a free one)")
    p.add_argument("--state-dir", required=True, help="directory for persisted state")
    p.add_argument("--processing-delay", type=float, default=None,
                   help="emulated seconds a batch takes to end (default 0)")
    p.add_argument("--time-factor", type=float, default=None,
                   help="emulated seconds per real second (default 1)")
    p.add_argument("--scenario", type=_scenario, action="append", default=None,
                   help='fault scenario as JSON, e.g. \'{"name": "http_error", "status": 529}\'; repeatable')
    p.add_argument("--seed", type=int, default=None, help="seed for result order (default 0)")
    p.add_argument("--max-batch-bytes", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=_run_emulator)


def _vars(text: str) -> dict:
    """`--vars` as dbt takes it: a YAML (or JSON) mapping."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise argparse.ArgumentTypeError(f"not YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a mapping, as dbt's --vars, e.g. \"{run_date: '2026-12-01'}\"")
    return value


def _add_vars_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vars", type=_vars, default=None, metavar="YAML",
                   help="passed to dbt as your `dbt run --vars` (the command's own vars win over one of the same name)")


def _add_connection_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("where the state is (dbt's conventions, or --database)")
    g.add_argument("--project-dir", help="dbt project directory (default: DBT_PROJECT_DIR, else the current one)")
    g.add_argument("--profiles-dir", help="directory of profiles.yml (default: DBT_PROFILES_DIR, else the current "
                                          "directory when it has one, else ~/.dbt)")
    g.add_argument("--profile", help="profile name (default: the one dbt_project.yml names)")
    g.add_argument("--target", "-t", help="target name (default: DBT_TARGET, else the profile's target)")
    g.add_argument("--database", metavar="FILE", help="the DuckDB file itself (skips the dbt project lookup)")
    g.add_argument("--state-schema", default="dbt_claude_batch", help="the `state_schema` setting (default: %(default)s)")


def _location(args: argparse.Namespace):
    from dbt_claude_batch.state.warehouse import Location

    return Location(args.project_dir, args.profiles_dir, args.profile, args.target)


def _database_of(args: argparse.Namespace):
    """A callable that locates the DuckDB file (again on each call, so --watch follows profile edits)."""
    def locate() -> str:
        from dbt_claude_batch.state.warehouse import database_file

        if args.database:
            return os.path.abspath(args.database)
        return database_file(_location(args))
    return locate


def _run_status(args: argparse.Namespace) -> int:
    from dbt_claude_batch.observe.status import run

    return run(_database_of(args), args.state_schema, as_json=args.json, watch=args.watch,
               refreshes=args.refreshes, api_interval=args.api_interval)


def _at_least(minimum: float, kind=float):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum:g}, got {text}")
        return value
    return parse


def _add_status(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="batches in flight, spend, failures and last runs of every batch model",
                       description="Per batch model: batches in flight with progress, age, time left and ETA; "
                                   "spend billed and committed; failures by kind with their next action; when it "
                                   "last ran. Reads the DuckDB file read-only; while a running dbt holds its lock, "
                                   "shows the snapshot that run keeps current. Exit 1 when there is nothing to show.")
    _add_connection_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON document (with --watch: one per line)")
    p.add_argument("--watch", nargs="?", type=float, const=10.0, default=None, metavar="SECONDS",
                   help="refresh every SECONDS (default 10) until Ctrl-C, with the API's live counts of the "
                        "batches in flight (read-only retrieves; ANTHROPIC_API_KEY from the environment)")
    p.add_argument("--refreshes", type=_at_least(1, int), default=None, metavar="N",
                   help="with --watch: stop after N refreshes")
    p.add_argument("--api-interval", type=_at_least(5.0), default=30.0, metavar="SECONDS",
                   help="with --watch: ask the API about each batch at most every SECONDS (default 30, at least 5)")
    p.set_defaults(func=_run_status)


def _run_report(args: argparse.Namespace) -> int:
    from dbt_claude_batch.observe.report import run

    return run(_database_of(args), args.state_schema, args.out)


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write one self-contained HTML page with charts of spend, outcomes and batches",
                       description="Write one static HTML page (no network needed to open it): spend per day and "
                                   "model, outcome mix per run, batch turnaround against the 24 h window, tokens "
                                   "with cache reads and writes, de-duplication and reuse savings, top failure "
                                   "messages. Needs the DuckDB file unlocked (run it when dbt is not running).")
    _add_connection_options(p)
    p.add_argument("--out", required=True, metavar="FILE.html", help="where to write the page")
    p.set_defaults(func=_run_report)


def _run_compare(args: argparse.Namespace) -> int:
    from dbt_claude_batch.observe.compare import command_for, run

    command, cwd = command_for(args.model, args.sample, args.via, _location(args), args.vars)
    return run(args.model, args.sample, _database_of(args), args.state_schema, args.json, command, cwd=cwd,
               via=args.via)


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="send a model's edited prompt for a sample of answered keys; compare answers",
                       description="Run `dbt run --select MODEL --vars '{claude_batch_compare: N}'`: N keys that "
                                   "hold answers, spread over the answers' kinds, get the model's current request "
                                   "synchronously (full price) or, with --via batch, as one small batch (half "
                                   "price, collected by running the same command again once it has ended); the "
                                   "answers are compared with the held ones field by field into <model>__compare. "
                                   "The results table and held answers are not touched. Then prints agreement per "
                                   "field, the changed rows and the cost.")
    p.add_argument("--model", required=True, help="the batch model (dbt model name)")
    p.add_argument("--sample", type=_at_least(1, int), default=50, metavar="N", help="keys to compare (default 50)")
    p.add_argument("--via", choices=("sync", "batch"), default="sync",
                   help="sync: answers now at full price (default); batch: half price, answers within 24 h: "
                        "the same command again collects them, and sends nothing new while one is in flight")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON document")
    _add_vars_option(p)
    _add_connection_options(p)
    p.set_defaults(func=_run_compare)


def _run_dbt(args: argparse.Namespace) -> int:
    """dbt's own command line in this process, with SIGTERM handled like Ctrl-C (for schedulers)."""
    import signal

    signal.signal(signal.SIGTERM, signal.default_int_handler)
    from dbt.cli.main import cli

    sys.argv = ["dbt", *args.dbt_args]
    try:
        cli.main(args=args.dbt_args, prog_name="dbt", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def _add_dbt(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dbt", help="run dbt with SIGTERM handled like Ctrl-C (for schedulers)",
                       description="Run dbt's own command line in this process, e.g. `dbt-claude-batch dbt run -s "
                                   "my_model`. dbt itself dies at once on SIGTERM; here SIGTERM is Ctrl-C: batch "
                                   "models stop between creates and polls, write what they hold, and exit non-zero.")
    p.add_argument("dbt_args", nargs=argparse.REMAINDER, metavar="DBT_ARGS", help="what you would pass to `dbt`")
    p.set_defaults(func=_run_dbt)


def _run_answers(args: argparse.Namespace) -> int:
    """`answers export` opens the file read-only; `answers import` writes this state's imported_answers."""
    from dbt_claude_batch.base.errors import DbtClaudeBatchError

    try:
        return _answers(args)
    except DbtClaudeBatchError as exc:
        print(f"dbt-claude-batch answers {args.action}: {exc}", file=sys.stderr)
        return 1


def _answers(args: argparse.Namespace) -> int:
    path = _database_of(args)()
    if args.action == "export":
        from dbt_claude_batch.state.answer_files import export_answers
        from dbt_claude_batch.state.warehouse import open_read_only

        con = open_read_only(path)
        try:
            n = export_answers(con, args.state_schema, args.model, args.to, path)
        finally:
            con.close()
        print(f"exported {n} answers of {args.model} (one per request hash) to {os.path.abspath(args.to)}")
        return 0
    from dbt_claude_batch.base.errors import ConfigError
    from dbt_claude_batch.state.answer_files import import_answers, schemas_with_models
    from dbt_claude_batch.state.warehouse import connect

    source = getattr(args, "from")
    if not os.path.isfile(source):  # before the connect, which would create a missing database file
        raise ConfigError(f"No file at {os.path.abspath(source)}: pass --from the Parquet file `dbt-claude-batch "
                          "answers export` wrote.")
    con = connect(path, "import again when it has finished.")
    try:
        elsewhere = [s for s in schemas_with_models(con) if s != args.state_schema]
        added, held = import_answers(con, args.state_schema, source)
    finally:
        con.close()
    print(f"imported {added} answers into {args.state_schema}.imported_answers of {path}"
          + (f" ({held} already held)" if held else "") + "; runs reuse them by exact request hash")
    if elsewhere:
        sys.stderr.write(f"warning: the batch models of this database keep their state in "
                         f"{', '.join(elsewhere)}, not only in {args.state_schema}: a model reuses the answers "
                         f"imported into its own state_schema; import again with --state-schema {elsewhere[0]} "
                         "for those\n")
    return 0


def _add_answers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("answers", help="export a model's answers to Parquet, or import such a file as an answer source",
                       description="Answers travel with their request hashes: `export` writes one batch model's "
                                   "answers to a Parquet file (the DuckDB file opened read-only); `import` adds such "
                                   "a file to this state's imported_answers, which every run reuses by exact request "
                                   "hash, at $0. Needs the DuckDB file unlocked (not while dbt runs).")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = actions.add_parser("export", help="write a model's answers to a Parquet file")
    _add_connection_options(export)
    export.add_argument("--model", required=True, help="the batch model: schema.identifier, or its identifier")
    export.add_argument("--to", required=True, metavar="FILE.parquet", help="where to write the answers")
    imported = actions.add_parser("import", help="add an export's answers to this state's imported_answers")
    _add_connection_options(imported)
    imported.add_argument("--from", required=True, metavar="FILE.parquet", help="a file `answers export` wrote")
    p.set_defaults(func=_run_answers)


def _run_plan(args: argparse.Namespace) -> int:
    from dbt_claude_batch.observe.plan import run

    return run(_database_of(args), args.state_schema, args.select, args.recorded, args.json, _location(args),
               user_vars=args.vars)


def _add_plan(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="what the next run would buy, why, and what it would cost (no API call)",
                       description="Run `dbt run --vars '{claude_batch_plan: true}'` (builds nothing new, calls no "
                                   "API) and print each batch model's plan: rows new, changed and why, to retry, "
                                   "reusable; requests and batches; tokens and USD as a range with their basis; "
                                   "time to results; the levers. --recorded reads the last recorded plans instead.")
    _add_connection_options(p)
    p.add_argument("--select", "-s", "--model", "-m", dest="select", help="dbt selection (e.g. a model name)")
    p.add_argument("--recorded", action="store_true", help="read the newest recorded plan of each model; run nothing")
    p.add_argument("--json", action="store_true", help='print {"schema_version": 1, "plans": [...]} (docs/plan.md)')
    _add_vars_option(p)
    p.set_defaults(func=_run_plan)


# -- forget (erasure) --------------------------------------------------------------------------
def _run_forget(args: argparse.Namespace) -> int:
    from dbt_claude_batch.base.errors import DbtClaudeBatchError
    from dbt_claude_batch.state.erasure import SCRUB, forget_in_file, parse_key

    try:
        removed = forget_in_file(_database_of(args)(), args.state_schema, args.model, parse_key(args.key),
                                 args.missing_ok)
    except DbtClaudeBatchError as exc:
        print(f"dbt-claude-batch forget: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"model": args.model, "removed": removed}) if args.json else
          f"erased {args.model} key {' '.join(args.key)}: "
          + ", ".join(f"{n} {t}" + (" scrubbed" if t in SCRUB else "") for t, n in removed.items()))
    return 0


def _add_forget(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("forget", help="erase one key's prompts, answers and failures from state and results",
                       description="Erase one key of a batch model everywhere dbt-claude-batch keeps it: requests, "
                                   "answers, failures, stored prompts, held answers, run notes that name it, the "
                                   "results table, the status snapshot; then rewrite the DuckDB file so no erased "
                                   "byte is left in it. Records the erasure (no content). Needs the DuckDB file "
                                   "unlocked (dbt not running).")
    _add_connection_options(p)
    p.add_argument("--model", required=True, help="the batch model as schema.model, e.g. main.ticket_labels")
    p.add_argument("--key", required=True, action="append",
                   help="the key: column=value (repeat for each column of a composite key) or a JSON object")
    p.add_argument("--missing-ok", action="store_true",
                   help="succeed when nothing holds the key (else that is an error: a value written wrong matches "
                        "nothing)")
    p.add_argument("--json", action="store_true", help="print what was removed as JSON")
    p.set_defaults(func=_run_forget)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dbt-claude-batch",
                                     description="Run Claude over dbt tables through the Message Batches API.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_emulator(sub)
    _add_status(sub)
    _add_report(sub)
    _add_dbt(sub)
    _add_answers(sub)
    _add_compare(sub)
    _add_plan(sub)
    _add_forget(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
