"""Private scratch directories for request spools and downloaded results.

Prompt text and answers never go to the shared system temp directory: each run works in a directory
of its own under ``$DBT_CLAUDE_BATCH_WORKDIR`` (default ``~/.cache/dbt_claude_batch``), created with
mode 0700 and named for the process that owns it. A run removes its directory when it ends; a run
killed before that leaves it behind, and the next run removes every directory whose process is gone.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

WORKDIR_ENV = "DBT_CLAUDE_BATCH_WORKDIR"
_PREFIX = "run-"


def base_dir() -> Path:
    configured = os.environ.get(WORKDIR_ENV)
    if configured:
        return Path(configured)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "dbt_claude_batch"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale() -> list[Path]:
    """Remove the scratch directories of processes that no longer run; return what was removed."""
    base = base_dir()
    removed = []
    if not base.is_dir():
        return removed
    for entry in base.iterdir():
        if not entry.name.startswith(_PREFIX):
            continue
        try:
            pid = int(entry.name[len(_PREFIX):].split("-", 1)[0])
        except ValueError:
            continue
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


@contextmanager
def scratch() -> Iterator[str]:
    """A fresh private directory (mode 0700) for one piece of work, removed when the work ends."""
    base = base_dir()
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(base, 0o700)
    path = tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=base)  # mkdtemp creates it 0700
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
