"""The `dbt-claude-batch` console script.

Each subcommand registers itself in `build_parser`; its implementation is imported lazily
inside its handler, so `dbt-claude-batch --help` stays fast and the product never loads the
emulator. More subcommands (status, cancel) are added the same way.
"""

from __future__ import annotations

import argparse
import json
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dbt-claude-batch",
                                     description="Run Claude over dbt tables through the Message Batches API.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_emulator(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
