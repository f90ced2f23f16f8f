"""The one pass that renders pending rows into request lines, before anything is sent.

When DuckDB can render every pending row (a plain template), it runs in SQL (`sql_spool.py`), with
one spool file per batch; otherwise row by row in Python (`row_pass.py`). Either way each candidate
row's request is rendered, judged (changed or not), shared with identical ones, priced, and its line
cut into batches by count and bytes, with the verdicts next to the candidates for DuckDB. Everything
that can refuse a run (a request too large, the budget) happens here, before money is spent.
"""

from __future__ import annotations

from dbt_claude_batch.base.prompts import Prompt, params_sql
from dbt_claude_batch.base.settings import Settings
from dbt_claude_batch.run.parts import check_part_ids
from dbt_claude_batch.run.planning import PENDING, candidate_rows_sql, load_rendered
from dbt_claude_batch.run.row_pass import RowPass
from dbt_claude_batch.run.spool_files import Chunk, Spool
from dbt_claude_batch.run.sql_spool import build_in_sql
from dbt_claude_batch.state.state import State

_READ_ROWS = 10_000
_READ_ROWS_MEDIA = 16


def build_spool(state: State, prompt: Prompt, settings: Settings, directory: str, source_sql: str,
                in_sql: bool = True) -> Spool:
    """Render the pending rows into spool files and the verdicts table (`in_sql=False`: always row by row)."""
    spool = Spool(directory, state)
    extra = _sql_rendered_columns(prompt, settings)
    writer = RowPass(spool, prompt, settings)
    columns = prompt.input_columns
    if extra and in_sql:
        rendered = build_in_sql(
            state, settings,
            lambda rows: candidate_rows_sql(source_sql, settings.key, columns, rows, extra, ordered=False),
            spool.chunk_path, writer.limit_requests, writer.limit_bytes, writer.fixed_tokens)
        if rendered is not None:
            spool.chunks = [Chunk(index=i, lane=lane, path=spool.chunk_path(i), n=n, n_bytes=size, length=size,
                                  model=model) for i, lane, n, size, model in rendered.chunks]
            spool.n_lines = sum(c.n for c in spool.chunks)
            spool.n_deduplicated = rendered.n_deduplicated
            spool.unpriced_models = rendered.unpriced_models
            return spool
    rows = candidate_rows_sql(source_sql, settings.key, columns, f"select * from {PENDING}", extra)
    # Attachment columns may hold files' bytes (BLOBs): a few rows at a time keeps memory flat.
    reader = state.cursor.sql(rows).to_arrow_reader(_READ_ROWS_MEDIA if settings.attachments else _READ_ROWS)
    try:
        writer.write(reader)
    except BaseException:
        state.cursor.abort()  # DuckDB refuses further work on a cursor with an unfinished result
        raise
    load_rendered(state, spool.verdicts)
    if spool.uploads is not None:
        spool.uploads.load(state)
    check_part_ids(state)
    return spool


def _sql_rendered_columns(prompt: Prompt, settings: Settings) -> str:
    """Where SQL renders the prompt exactly as Jinja would (a plain template over text or integer columns,
    no splitting), DuckDB renders it, builds the request JSON and hashes it, and the pass below only
    routes lines. `__cb_params` is NULL for a row SQL cannot build byte for byte; Python renders that one.
    Rows with attachments are always rendered in Python (media.py reads and checks their files)."""
    if settings.attachments:
        return ""
    expression = prompt.sql_expression() if settings.split_column is None else None
    params = params_sql(settings, "__cb_prompt", "__cb_model") if expression else None
    if params is None:
        return ""
    return (f", {expression} as __cb_prompt, {params} as __cb_params, "
            "sha256(__cb_params) as __cb_request_hash")
