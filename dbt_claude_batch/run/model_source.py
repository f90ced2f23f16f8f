"""The model's source as a run sees it: its query, columns and key types, the prompt over them, and the
attachment columns whose local files are stamped (an edited file at the same path changes no column).
"""

from __future__ import annotations

from dbt_claude_batch.base.errors import ConfigError
from dbt_claude_batch.base.keys import check_key_columns
from dbt_claude_batch.base.prompts import Prompt
from dbt_claude_batch.base.settings import Settings
from dbt_claude_batch.state.state import State


def source_shape(source, cfg: Settings) -> tuple[str, list[str], Prompt, dict[str, str]]:
    """The source's query, columns, the prompt over them, and the key columns' types; checks that every
    column a setting or the template names is there."""
    columns = list(source.columns)
    types = {c: str(t) for c, t in zip(source.columns, source.types)}
    prompt = Prompt(cfg, project_dir(), types)
    prompt.check_columns(columns)
    for name in ("model_column", "split_column"):
        column = getattr(cfg, name)
        if column and column not in columns:
            raise ConfigError(f"Setting `{name}` names {column!r}, which is not in the source: fix it.\n"
                              f"Source columns: {', '.join(columns)}")
    check_key_columns(cfg.key, columns)
    return source.sql_query(), columns, prompt, {c: types[c] for c in cfg.key}


def stamp_files(cfg: Settings, source_sql: str, state: State) -> tuple[list[str], list[str], str | None]:
    """The attachment columns of text type (local paths) and of BLOB type, and the stamp of the files the
    text ones name (None without any)."""
    stamped, blobs = _attachment_columns(cfg, source_sql, state)
    if not stamped:
        return stamped, blobs, None
    from dbt_claude_batch.run.media import resolve_root, stamp_local_files

    return stamped, blobs, stamp_local_files(state, source_sql, stamped, resolve_root(cfg, project_dir()))


def _attachment_columns(cfg: Settings, source_sql: str, state: State) -> tuple[list[str], list[str]]:
    """Attachment columns of text type (they may hold local paths, whose files are stamped) and of BLOB type."""
    if not cfg.attachments:
        return [], []
    types = dict(state.run(f"select column_name, column_type from (describe {source_sql})"))
    of = {a["column"]: str(types.get(a["column"], "")).upper() for a in cfg.attachments}
    return [c for c, t in of.items() if t == "VARCHAR"], [c for c, t in of.items() if t == "BLOB"]


def project_dir() -> str | None:
    try:
        from dbt.flags import get_flags

        return getattr(get_flags(), "PROJECT_DIR", None)
    except Exception:  # noqa: BLE001 - outside a dbt invocation
        return None
