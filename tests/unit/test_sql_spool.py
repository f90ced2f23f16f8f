"""The spool pass in SQL gives what the row pass gives: the same verdicts, bytes and batches (pure DuckDB).

The row pass (spool.py) is the reference: it decides, row by row, what is sent, shared, skipped and
where batches are cut. The SQL pass replaces it for plain templates, so any difference between the two
would send different requests, or cut batches the recorded requests do not match.
"""

from __future__ import annotations

import hashlib
import json

import duckdb
import pytest

from dbt_claude_batch.run import planning, sql_spool
from dbt_claude_batch.base.errors import SourceDataError
from dbt_claude_batch.base.prompts import Prompt, canonical_json, request_params
from dbt_claude_batch.base.settings import Settings
from dbt_claude_batch.run.spool import build_spool
from dbt_claude_batch.state.state import State

MODEL = "db.main.items_batch"
TEMPLATE = "Classify this ticket:\n{{ body }}"


def _bodies() -> dict[int, str]:
    bodies = {i: f"body {i} " + "x" * (i * 7 % 60) for i in range(1, 41)}
    bodies.update({20: "same text", 21: "same text", 22: "same text",  # a group whose first row is unchanged
                   30: "shared", 31: "shared", 32: "shared", 34: "shared",  # a group that shares one line
                   5: "{{ not a template }} é 漢字 😀 \"quoted\" \\ back\tslash"})
    return bodies


def _planned(tmp_path, template=TEMPLATE, bodies=None, **settings_kw):
    (tmp_path / "t.j2").write_text(template, encoding="utf-8")
    settings = Settings.build(None, {"key": "id", "prompt_template": "t.j2", "model": "claude-haiku-4-5",
                                     **settings_kw})
    prompt = Prompt(settings, str(tmp_path), {"id": "BIGINT", "body": "VARCHAR"})
    con = duckdb.connect()
    state = State(con, "dbt_claude_batch", MODEL)
    state.ensure()
    con.execute("create table items (id bigint, body varchar)")
    con.executemany("insert into items values (?, ?)", list((bodies or _bodies()).items()))
    source = "select * from items"
    planning.stage(state, source, settings.key, prompt.columns, settings.model_column, settings.model,
                   prompt.fingerprint())
    planning.plan(state, settings.max_attempts, False, settings.effective_max_tokens_cap, settings.max_tokens,
                  can_split=False, rerun_filter="__cb_custom_id in ('3', '8', '33')")
    return con, state, settings, prompt, source


def _as_if_sent_before(con, state, settings, prompt, source, tmp_path):
    """Give some rows a history: inputs changed since their last attempt, which rendering then judges."""
    build_spool(state, prompt, settings, str(tmp_path), source, in_sql=False)
    hashes = dict(con.execute(f"select custom_id, request_hash from {planning.RENDERED}").fetchall())
    history = [("10", hashes["10"], False), ("11", hashes["11"], True), ("12", "old", False),
               ("20", hashes["20"], False), ("32", hashes["32"], False), ("34", hashes["34"], True)]
    for custom_id, prev, retry in history:
        con.execute(f"update {planning.PENDING} set __cb_reason = 'maybe_changed', __cb_prev_request_hash = ?, "
                    "__cb_would_retry = ? where __cb_custom_id = ?", [prev, retry, custom_id])


def _outcome(con, spool) -> dict:
    """What a pass decided, independent of how it lays out its files: every verdict with the bytes of the
    line it sends, and every batch with its lines. The order of lines within a batch is not compared:
    the SQL pass writes them in the order DuckDB streams them (a batch is answered by custom_id, never
    by position), the row pass in key order."""
    columns = [c for c in planning.RENDERED_COLUMNS if c != "line_offset"]
    rendered = con.execute(f"select {', '.join(columns)}, line_offset from {planning.RENDERED} "
                           "order by ordinal, custom_id").fetchall()
    chunks = {c.index: c for c in spool.chunks}
    verdicts = []
    for *row, offset in rendered:
        line = None
        if offset is not None:
            chunk = chunks[row[columns.index("chunk")]]
            with open(chunk.path, "rb") as f:
                f.seek(offset)  # in both layouts, where the line is in its batch's file
                line = f.read(row[columns.index("line_length")])
        verdicts.append((*row, line))
    return {"verdicts": verdicts, "n_lines": spool.n_lines, "n_deduplicated": spool.n_deduplicated,
            "unpriced": spool.unpriced_models,
            "chunks": [(c.index, c.lane, c.n, c.n_bytes, c.length, c.model, _requests(spool, c)) for c in spool.chunks]}


def _requests(spool, chunk) -> list:
    """A batch's create body, as its requests in custom_id order (and its lines are exactly those requests)."""
    requests = json.loads(spool.body_of(chunk))["requests"]
    lines = sorted(spool.lines_of(chunk).splitlines())
    assert len(lines) == len(requests) == chunk.n
    return [lines, sorted(requests, key=lambda r: r["custom_id"])]


def _both_passes_agree(tmp_path, con, state, settings, prompt, source) -> dict:
    """Spool the pending rows by the row pass and by the SQL pass; they must agree. Returns the SQL pass's."""
    by_row, in_sql = tmp_path / "rows", tmp_path / "sql"
    by_row.mkdir()
    in_sql.mkdir()
    expected = _outcome(con, build_spool(state, prompt, settings, str(by_row), source, in_sql=False))
    got = _outcome(con, build_spool(state, prompt, settings, str(in_sql), source))
    assert not (in_sql / "verdicts.csv").exists()  # the SQL pass ran
    assert got == expected
    return got


@pytest.mark.parametrize("settings_kw", [
    {},
    {"max_requests_per_batch": 4},  # the count cuts batches
    {"max_batch_bytes": 1100},  # the bytes cut batches, at lines of varied length
    {"model": "claude-future-9", "dedupe": False},  # no price known; nothing shared
], ids=["defaults", "by-count", "by-bytes", "unpriced-no-dedupe"])
def test_the_sql_pass_gives_what_the_row_pass_gives(tmp_path, settings_kw):
    con, state, settings, prompt, source = _planned(tmp_path, **settings_kw)
    _as_if_sent_before(con, state, settings, prompt, source, tmp_path)
    got = _both_passes_agree(tmp_path, con, state, settings, prompt, source)
    reasons = {r[7] for r in got["verdicts"]}
    assert {"new", "changed", "retry", "unchanged", "rerun"} <= reasons
    assert {c[1] for c in got["chunks"]} == {"batch", "sync"}
    if settings.dedupe:
        # 31 and 34 (a retry) share 30's line; 32 is unchanged. 20 is unchanged and sends nothing, so 21,
        # the next of its group, sends the line 22 shares: the one request is bought once (found by an
        # audit: 21 and 22 each sent it)
        assert got["n_deduplicated"] == 3
        shared = {v[1]: v[6] for v in got["verdicts"]}  # custom_id -> dedup_of
        assert (shared["20"], shared["21"], shared["22"]) == (None, None, "21")
    if "max_requests_per_batch" in settings_kw or "max_batch_bytes" in settings_kw:
        assert len([c for c in got["chunks"] if c[1] == "batch"]) > 2


def test_the_sql_pass_in_slices_gives_what_the_row_pass_gives(tmp_path, monkeypatch):
    """Both renders join the candidates to the source a slice of ordinals at a time; a group of identical
    inputs split across slices (20 and 21 | 22) and batches cut across slices come out the same."""
    monkeypatch.setattr(sql_spool, "_SLICE_ROWS", 7)
    con, state, settings, prompt, source = _planned(tmp_path, max_requests_per_batch=4)
    _as_if_sent_before(con, state, settings, prompt, source, tmp_path)
    assert len(sql_spool._slices(state)) == 6
    got = _both_passes_agree(tmp_path, con, state, settings, prompt, source)
    assert got["n_deduplicated"] == 3  # 22 shares 21's line across the slices (20, unchanged, sends none)
    assert len([c for c in got["chunks"] if c[1] == "batch"]) > 2


def test_the_sql_pass_of_a_compiled_template_gives_what_the_row_pass_gives(tmp_path):
    """A template with branches and filters (base/template_sql.py) goes through the SQL pass, alike."""
    template = ("{% if body == 'shared' %}S: {{ body | replace('a', 'A') }}{% elif id in [3, 4] %}{{ body | trim }}"
                "{% else %}{{ body | truncate(30) }}{% endif %} #{{ id }}")
    con, state, settings, prompt, source = _planned(tmp_path, template=template)
    _as_if_sent_before(con, state, settings, prompt, source, tmp_path)
    got = _both_passes_agree(tmp_path, con, state, settings, prompt, source)
    assert got["n_deduplicated"] == 0  # the id makes every text its own


def test_a_row_outside_a_compiled_templates_guards_takes_the_row_pass(tmp_path):
    bodies = {**_bodies(), 9: "straße"}  # Python upper-cases ß to SS, DuckDB does not: the row pass renders it
    con, state, settings, prompt, source = _planned(tmp_path, template="{{ body | upper }}", bodies=bodies)
    assert prompt.sql_expression() is not None
    build_spool(state, prompt, settings, str(tmp_path), source)
    assert (tmp_path / "verdicts.csv").exists()  # the row pass ran
    row = con.execute(f"select request_hash from {planning.RENDERED} where custom_id = '9'").fetchall()
    expected = canonical_json(request_params(settings, "STRASSE", settings.model))
    assert row == [(hashlib.sha256(expected.encode()).hexdigest(),)]


def test_a_row_too_large_is_refused_the_same_way_by_both_passes(tmp_path):
    con, state, settings, prompt, source = _planned(tmp_path, max_batch_bytes=400)
    messages = []
    for in_sql in (False, True):
        with pytest.raises(SourceDataError) as caught:
            build_spool(state, prompt, settings, str(tmp_path), source, in_sql=in_sql)
        messages.append(str(caught.value))
    assert messages[0] == messages[1]
    assert "max_batch_bytes" in messages[1] and '"id":' in messages[1]


def test_what_a_row_records_is_the_hash_of_the_line_it_sends_even_from_a_changing_source(tmp_path):
    """The SQL pass renders each row once, and the line written is the one hashed: a source whose rows
    read differently each time (here a sequence) still records, for every row sent, the sha256 of the
    exact params its line carries, and every follower the hash of its leader's line."""
    bodies = {i: "same" if i in (20, 21, 22) else f"body {i}" for i in range(1, 41)}
    con, state, settings, prompt, _ = _planned(tmp_path, bodies=bodies)  # staged from the stable rows
    con.execute("create sequence cb_test_seq")
    changing = "select id, body || nextval('cb_test_seq') as body from items"

    spool = build_spool(state, prompt, settings, str(tmp_path), changing)

    assert not (tmp_path / "verdicts.csv").exists()  # the SQL pass ran
    paths = {c.index: c.path for c in spool.chunks}
    rows = con.execute(f"select custom_id, request_hash, chunk, line_offset, line_length, dedup_of "
                       f"from {planning.RENDERED} where include").fetchall()
    sent = {}
    for custom_id, request_hash, chunk, offset, length, dedup_of in rows:
        if dedup_of is None:
            with open(paths[chunk], "rb") as f:
                f.seek(offset)
                line = f.read(length)
            prefix = b'{"custom_id":"' + custom_id.encode() + b'","params":'
            assert line.startswith(prefix) and line.endswith(b"}\n"), line
            params = line[len(prefix):-2]
            assert hashlib.sha256(params).hexdigest() == request_hash, custom_id
            sent[custom_id] = request_hash
    followers = {r[0]: (r[5], r[1]) for r in rows if r[5] is not None}
    assert set(followers) == {"21", "22"} and len(sent) == 38 == spool.n_lines
    assert all(sent[leader] == request_hash for leader, request_hash in followers.values())


def test_rows_sharing_a_line_the_source_no_longer_sends_stop_the_run(tmp_path):
    """The leaders of shared lines are rendered before the rows: a source that changes in between (its
    rows blank from the 41st read on) leaves 21 and 22 sharing a line 20 does not send. Nothing is sent."""
    bodies = {i: "same" if i in (20, 21, 22) else f"body {i}" for i in range(1, 41)}
    con, state, settings, prompt, _ = _planned(tmp_path, "{{ body }}", bodies)
    con.execute("create sequence cb_test_seq")
    changing = "select id, case when nextval('cb_test_seq') > 40 then '' else body end as body from items"

    with pytest.raises(SourceDataError) as caught:
        build_spool(state, prompt, settings, str(tmp_path), changing)

    first = str(caught.value).splitlines()[0]
    assert first.startswith("The source changed while this run rendered its requests") and "nothing was submitted" in first
    assert [p.name for p in tmp_path.iterdir()] == ["t.j2"]  # the template; no batch file, no verdicts
    assert con.execute("select count(*) from items").fetchall() == [(40,)]  # the cursor is usable afterwards


def test_a_row_sql_cannot_build_sends_the_whole_run_through_the_row_pass(tmp_path):
    con, state, settings, prompt, source = _planned(tmp_path)
    con.execute(f"update {planning.PENDING} set __cb_max_tokens = 64 where __cb_custom_id = '7'")  # escalated

    spool = build_spool(state, prompt, settings, str(tmp_path), source)

    assert (tmp_path / "verdicts.csv").exists()
    assert con.execute(f"select max_tokens from {planning.RENDERED} where custom_id = '7'").fetchall() == [(64,)]
    assert (spool.n_lines, spool.n_deduplicated) == (35, 5)  # 21, 22 share 20's line; 31, 32, 34 share 30's


def test_rows_that_render_empty_are_failures_judged_alike_by_both_passes(tmp_path):
    bodies = {**_bodies(), 13: None, 14: "", 15: " \n\t ", 16: "\u00a0\u3000\u2028", 17: None, 18: None,
              19: " x "}  # 17 and 18 form a group of identical empty rows; 19 is text
    con, state, settings, prompt, source = _planned(tmp_path, "{{ body }}", bodies)
    _as_if_sent_before(con, state, settings, prompt, source, tmp_path)
    con.execute(f"update {planning.PENDING} set __cb_reason = 'maybe_changed', __cb_prev_request_hash = 'old' "
                "where __cb_custom_id = '15'")  # a row that had text before
    got = _both_passes_agree(tmp_path, con, state, settings, prompt, source)
    columns = [c for c in planning.RENDERED_COLUMNS if c != "line_offset"]  # as `_outcome` lists them
    verdicts = {v[columns.index("custom_id")]: dict(zip(columns, v)) for v in got["verdicts"]}
    inputs = dict(con.execute(f"select __cb_custom_id, __cb_input_hash from {planning.PENDING}").fetchall())
    for key in ("13", "14", "15", "16", "17", "18"):
        verdict = verdicts[key]
        assert (verdict["reason"], verdict["include"], verdict["chunk"]) == ("empty_prompt", False, None), key
        assert verdict["request_hash"] == "empty_prompt:" + inputs[key]
        assert verdict["error"].startswith(f'The prompt for key {{"id":{key}}} is empty'), verdict["error"]
    assert (verdicts["19"]["reason"], verdicts["19"]["include"]) == ("new", True)
    assert got["n_lines"] == len(bodies) - 6 - 3 - 3  # 6 empty; 10, 20, 32 unchanged; 31, 34 share 30's, 22 21's

    # The row pass over the prompts SQL rendered (a run SQL cannot build whole) judges them alike too.
    con.execute(f"update {planning.PENDING} set __cb_max_tokens = 64 where __cb_custom_id = '7'")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    build_spool(state, prompt, settings, str(mixed), source)
    assert (mixed / "verdicts.csv").exists()
    assert con.execute(f"select custom_id, request_hash, error from {planning.RENDERED} where reason = 'empty_prompt' "
                       "order by custom_id").fetchall() == [
        (key, verdicts[key]["request_hash"], verdicts[key]["error"]) for key in ("13", "14", "15", "16", "17", "18")]


def test_blank_means_the_same_in_python_and_in_sql():
    from dbt_claude_batch.base.prompts import blank_sql, is_blank

    con = duckdb.connect()
    con.execute("create table cp as select i, chr(i::integer) as c from range(1, 1114112) t(i) "
                "where i not between 55296 and 57343")  # every code point but the surrogates
    in_sql = {i for (i,) in con.execute(f"select i from cp where {blank_sql('c')}").fetchall()}
    in_python = {i for i in range(1, 0x110000) if not 0xD800 <= i <= 0xDFFF and is_blank(chr(i))}
    assert in_sql == in_python and len(in_python) > 20
    for text, blank in [("", True), (" \n\t\u00a0", True), (" a ", False), ("\u200b", False)]:
        assert is_blank(text) is blank
        assert con.execute(f"select {blank_sql('?')}", [text]).fetchone()[0] is blank


def test_rows_identical_to_a_later_leader_share_its_line_in_the_row_pass(tmp_path):
    # Row 9 comes first though its key is last in key order ('10' < '11' < '9'): the row pass renders rows in
    # the source's order, and a group led by its first key in key order sent row 9 alone, then 10 again.
    con, state, settings, prompt, source = _planned(tmp_path, bodies={9: "same", 10: "same", 11: "same", 12: "other"})
    got = _both_passes_agree(tmp_path, con, state, settings, prompt, source)
    assert got["n_lines"] == 2 and got["n_deduplicated"] == 2
    shared = {v[1]: v[6] for v in got["verdicts"]}  # custom_id -> dedup_of
    assert sorted(shared.items()) == [("10", "9"), ("11", "9"), ("12", None), ("9", None)]
