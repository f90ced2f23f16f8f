"""The dbt DuckDB file as the `status` and `report` commands reach it: located as dbt does, opened read-only.

Located with dbt's own conventions: `--project-dir` (else ``DBT_PROJECT_DIR``, else the current
directory), `--profiles-dir` (else ``DBT_PROFILES_DIR``, else the current directory when it has a
profiles.yml, else ``~/.dbt``), the profile named in dbt_project.yml (or `--profile`), `--target`
(else ``DBT_TARGET``, else the profile's `target`). The duckdb output's `path` may use
``{{ env_var('NAME') }}`` / ``{{ env_var('NAME', 'default') }}``; a relative path is taken from the
project directory. dbt-duckdb opens a relative path from the directory dbt runs in, so this is the file
of a dbt run from the project directory, which is where `plan` and `compare` run dbt.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbt_claude_batch.base.errors import ConfigError, DatabaseLockedError, NothingToShowError


@dataclass(frozen=True)
class Location:
    """Where to find the database: the project directory, profiles directory, profile and target."""

    project_dir: str | None = None
    profiles_dir: str | None = None
    profile: str | None = None
    target: str | None = None


def _render(value: Any, where: str) -> Any:
    """Render ``{{ env_var(...) }}`` in a profile value as dbt does (other Jinja is refused)."""
    if not isinstance(value, str) or ("{{" not in value and "{%" not in value):
        return value
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    def env_var(name: str, default: str | None = None) -> str:
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError(f"{where} uses env_var('{name}'), which is not set: export it, or pass --database FILE.")

    try:
        return SandboxedEnvironment(undefined=jinja2.StrictUndefined).from_string(value).render(env_var=env_var)
    except jinja2.TemplateError as exc:
        raise ConfigError(f"{where} cannot be rendered here ({exc}): pass --database FILE instead.") from None


def _load_yaml(path: Path, what: str) -> dict:
    import yaml

    if not path.is_file():
        raise ConfigError(f"No {what} at {path}: pass the right --project-dir / --profiles-dir, or --database FILE.")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a YAML mapping: fix it, or pass --database FILE.")
    return data


def project_dir_of(loc: Location) -> Path:
    """The dbt project directory, absolute: `--project-dir`, else ``DBT_PROJECT_DIR``, else the current one."""
    return Path(loc.project_dir or os.environ.get("DBT_PROJECT_DIR") or Path.cwd()).expanduser().resolve()


def profiles_dir_of(loc: Location) -> Path:
    """The directory of profiles.yml, absolute, as dbt finds it from the current directory."""
    if loc.profiles_dir or os.environ.get("DBT_PROFILES_DIR"):
        return Path(loc.profiles_dir or os.environ["DBT_PROFILES_DIR"]).expanduser().resolve()
    return Path.cwd().resolve() if (Path.cwd() / "profiles.yml").exists() else Path.home() / ".dbt"


def database_file(loc: Location) -> str:
    """The absolute path of the DuckDB file the dbt target writes to."""
    project_dir = project_dir_of(loc)
    project = _load_yaml(project_dir / "dbt_project.yml", "dbt_project.yml")
    profile_name = loc.profile or os.environ.get("DBT_PROFILE") or _render(project.get("profile"), "dbt_project.yml")
    if not profile_name:
        raise ConfigError(f"{project_dir / 'dbt_project.yml'} names no profile: pass --profile, or --database FILE.")
    profiles_file = profiles_dir_of(loc) / "profiles.yml"
    profile = _load_yaml(profiles_file, "profiles.yml").get(profile_name)
    if not isinstance(profile, dict):
        raise ConfigError(f"{profiles_file} has no profile {profile_name!r}: pass --profile, or --database FILE.")
    target = loc.target or os.environ.get("DBT_TARGET") or _render(profile.get("target"), str(profiles_file)) or "default"
    output = (profile.get("outputs") or {}).get(target)
    if not isinstance(output, dict):
        raise ConfigError(f"Profile {profile_name!r} in {profiles_file} has no target {target!r}: pass --target.")
    kind = _render(output.get("type"), str(profiles_file))
    if kind != "duckdb":
        raise ConfigError(f"Target {target!r} of profile {profile_name!r} is of type {kind!r}; "
                          "dbt-claude-batch reads dbt-duckdb targets only.")
    path = str(_render(output.get("path", ":memory:"), f"The path of target {target!r} in {profiles_file}"))
    if path == ":memory:" or ":" in path.split("/")[0]:
        raise ConfigError(f"Target {target!r} uses {path!r}, not a local DuckDB file: nothing to read.")
    return str((project_dir / Path(path).expanduser()).resolve())


def open_read_only(path: str):
    """A read-only DuckDB connection to `path`; never creates the file, never waits for a lock.

    Raises `NothingToShowError` when the file does not exist and `DatabaseLockedError` when a running
    dbt holds its lock (DuckDB refuses at once rather than waiting).
    """
    if not os.path.isfile(path):
        raise NothingToShowError(f"No DuckDB file at {path}: run dbt first, or point --database at the right file.")
    return connect(path, "try again when it has finished.", read_only=True)


def connect(path: str, when_locked: str, read_only: bool = False):
    """A DuckDB connection to `path`; `DatabaseLockedError` (its message ending with `when_locked`) when a
    running dbt holds the file's lock, which DuckDB refuses at once rather than waiting for."""
    import duckdb

    try:
        return duckdb.connect(path, read_only=read_only)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise DatabaseLockedError(
                f"{path} is locked by another process (a running dbt): {when_locked}\n{exc}"
            ) from None
        raise
