"""Attachments in the spool pass and in staging (pure DuckDB): the row path, the blocks, the estimate, the input hash."""

from __future__ import annotations

import base64
import json
import os

import duckdb
from media_builders import pdf_bytes, png_bytes

from dbt_claude_batch.base import media_types as mt
from dbt_claude_batch.base.pricing import estimate_input_tokens, list_price
from dbt_claude_batch.base.prompts import Prompt, request_params
from dbt_claude_batch.base.settings import Settings
from dbt_claude_batch.run import media, planning
from dbt_claude_batch.run.spool import build_spool
from dbt_claude_batch.state.state import State

ATTACH = [{"column": "doc", "kind": "document"}, {"column": "scan", "kind": "image"}]


def _state(tmp_path, rows, root=None):
    (tmp_path / "t.j2").write_text("Extract the total: {{ body }}", encoding="utf-8")
    settings = Settings.build(None, {"key": "id", "prompt_template": "t.j2", "model": "claude-haiku-4-5",
                                     "attachments": ATTACH, "attachments_root": root})
    prompt = Prompt(settings, str(tmp_path), {"id": "BIGINT", "body": "VARCHAR", "doc": "VARCHAR", "scan": "BLOB"})
    con = duckdb.connect()
    state = State(con, "dbt_claude_batch", "db.main.items_batch")
    state.ensure()
    con.execute("create table items (id bigint, body varchar, doc varchar, scan blob)")
    con.executemany("insert into items values (?, ?, ?, ?)", rows)
    return con, state, settings, prompt


def _stage(state, settings, prompt, tmp_path):
    source = "select * from items"
    stamped = ["doc"]
    media.stamp_local_files(state, source, stamped, media.resolve_root(settings, str(tmp_path)))
    planning.stage(state, source, settings.key, prompt.input_columns, None, settings.model, prompt.fingerprint(),
                   stamped, ["scan"])
    return dict(state.run(f"select __cb_custom_id, __cb_input_hash from {planning.STAGED}"))


def test_rows_with_attachments_take_the_row_path_with_blocks_first_and_media_in_the_estimate(tmp_path):
    (tmp_path / "files").mkdir()
    pdf, png = pdf_bytes(2, "invoice"), png_bytes(300, 200)
    (tmp_path / "files" / "inv.pdf").write_bytes(pdf)
    con, state, settings, prompt = _state(tmp_path, [(1, "acme", "inv.pdf", png), (2, "bad", "inv.pdf", b"\x00junk")],
                                          root="files")
    _stage(state, settings, prompt, tmp_path)
    planning.plan(state, 3, False, settings.effective_max_tokens_cap, settings.max_tokens, can_split=False)
    spool = build_spool(state, prompt, settings, str(tmp_path), "select * from items")  # in_sql allowed

    assert [c.path for c in spool.chunks] == [spool.lane_path("batch")]  # the row pass, not the SQL pass
    line = json.loads(open(spool.lane_path("batch"), "rb").readline())
    assert line["custom_id"] == "1"
    content = line["params"]["messages"][-1]["content"]
    assert [b["type"] for b in content] == ["document", "image", "text"]
    assert content[0]["source"]["data"] == base64.b64encode(pdf).decode()
    assert content[1]["transformations"] == {"oversized_image": "downsize"}
    assert content[2] == {"type": "text", "text": "Extract the total: acme"}

    verdicts = {r[0]: r[1:] for r in con.execute(f"select custom_id, reason, cost, error from {planning.RENDERED}").fetchall()}
    text_only = estimate_input_tokens(request_params(settings, "Extract the total: acme", settings.model))
    tokens = text_only + 2 * mt.PDF_PAGE_TOKENS + mt.image_tokens(300, 200)
    price_in, price_out = list_price(settings.model)
    assert verdicts["1"][:2] == ("new", (tokens * price_in + settings.max_tokens * price_out) / 1e6)
    reason, cost, error = verdicts["2"]
    assert (reason, cost) == ("attachment_error", 0.0)
    assert error.startswith('Attachment in column `scan` for key {"id":2} is not a supported type (from its bytes)')


def test_the_input_hash_sees_blob_bytes_and_a_local_file_edited_at_the_same_path(tmp_path):
    (tmp_path / "files").mkdir()
    path = tmp_path / "files" / "a.pdf"
    path.write_bytes(pdf_bytes(1, "one"))
    rows = [(1, "x", "a.pdf", b"\x89PNG one"), (2, "x", "a.pdf", b"\x89PNG two")]
    con, state, settings, prompt = _state(tmp_path, rows, root="files")
    first = _stage(state, settings, prompt, tmp_path)
    assert first["1"] != first["2"]  # only the BLOB bytes differ
    assert _stage(state, settings, prompt, tmp_path) == first  # nothing changed, nothing new
    path.write_bytes(pdf_bytes(2, "two"))
    os.utime(path, ns=(10**18, 10**18))
    edited = _stage(state, settings, prompt, tmp_path)
    assert edited["1"] != first["1"] and edited["2"] != first["2"]
