"""custom_id rules, checked through DuckDB (the only place they are computed)."""

from __future__ import annotations

import random
import re
import uuid

import duckdb
import pytest

from dbt_claude_batch.base.errors import SourceDataError
from dbt_claude_batch.base.keys import check_keys, custom_id_sql
from dbt_claude_batch.run.spool_files import marker_id
from dbt_claude_batch.base.keys import MARKER_PATTERN

VALID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def ids(values, columns=("k",), types=None):
    con = duckdb.connect()
    types = types or ["VARCHAR"] * len(columns)
    con.execute(f"create table t ({', '.join(f'{c} {t}' for c, t in zip(columns, types))})")
    con.executemany(f"insert into t values ({', '.join('?' for _ in columns)})", values)
    return [r[0] for r in con.execute(f"select {custom_id_sql(columns)} from t").fetchall()]


def test_exact_keys_are_kept():
    assert ids([["10231"], ["abc-DEF_9"], ["x" * 64]]) == ["10231", "abc-DEF_9", "x" * 64]


def test_integer_keys_read_as_themselves():
    assert ids([[1], [42]], types=["BIGINT"]) == ["1", "42"]


def test_lossy_keys_get_a_readable_prefix_and_a_hash():
    got = ids([["a/b"], ["user@example.com"], ["x" * 80]])
    assert got[0].startswith("a_b-") and len(got[0]) == len("a_b-") + 12
    assert got[1].startswith("user_example_com-")
    assert len(got[2]) == 64 and got[2].startswith("x" * 51 + "-")
    assert all(VALID.fullmatch(i) for i in got)


def test_sanitizing_never_merges_distinct_keys():
    keys = ["a/b", "a_b", "a b", "a:b", "a\tb", "", " ", "é", "e", "x" * 80, "x" * 81, "x" * 80 + "y"]
    got = ids([[k] for k in keys])
    assert len(set(got)) == len(keys)
    assert all(VALID.fullmatch(i) for i in got)


def test_random_unicode_keys_are_valid_and_unique():
    rng = random.Random(5)
    alphabet = "abcXYZ019_-/ @.é中🎉\\\"'"
    keys = sorted({"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 90))) for _ in range(5000)})
    got = ids([[k] for k in keys])
    assert len(set(got)) == len(keys)
    assert all(VALID.fullmatch(i) for i in got)


def test_ids_are_deterministic():
    keys = [["a/b"], ["ключ"], ["x" * 70]]
    assert ids(keys) == ids(keys)


def test_composite_keys_join_with_dash_when_reversible():
    got = ids([["acme", 7], ["acme", 8], ["glo-bex", 7]], columns=("tenant", "n"), types=["VARCHAR", "BIGINT"])
    assert got[:2] == ["acme-7", "acme-8"]
    assert got[2].startswith("glo-bex-7-")  # a '-' inside a part would be ambiguous: hashed
    ambiguous = ids([["a_", "b"], ["a", "_b"]], columns=("p", "q"))
    assert ambiguous[0] != ambiguous[1]


def _checked(rows, columns=("id",)):
    con = duckdb.connect()
    con.execute("create table t (id bigint, body varchar)")
    con.executemany("insert into t values (?, ?)", rows)
    check_keys(con, "select * from t", list(columns), ["id", "body"])


def test_no_key_gets_the_custom_id_of_a_marker_request():
    """Markers are `dbt_claude_batch-proof-` and 32 hex digits (spool.marker_id): a key spelling one exactly,
    alone or joined from parts, gets a hashed id instead, which never has that form; other keys that
    merely start with the prefix keep their ids."""
    marker = marker_id(str(uuid.UUID(int=7)))
    assert re.fullmatch(MARKER_PATTERN, marker)
    lookalike = "dbt_claude_batch-proof-abc"
    assert ids([[marker], [lookalike]]) == [ids([[marker]])[0], lookalike]
    single = ids([[marker]])[0]
    joined = ids([["dbt_claude_batch", "proof", marker.rsplit("-", 1)[1]]], columns=("a", "b", "c"))[0]
    for got in (single, joined):
        assert got != marker and got.startswith("dbt_claude_batch-proof-") and VALID.fullmatch(got)
        assert not re.fullmatch(MARKER_PATTERN, got)
    rng = random.Random(3)
    near = [marker[:n] + "".join(rng.choice("0123456789abcdef" + "-_x" * (i % 2)) for _ in range(55 - n))
            for n in range(20, 56) for i in range(4)]
    assert sum(bool(re.fullmatch(MARKER_PATTERN, k)) for k in near) > 10  # many keys spell a marker exactly
    assert not any(re.fullmatch(MARKER_PATTERN, i) for i in ids([[k] for k in near]))


def test_check_keys_accepts_clean_keys():
    _checked([[1, "a"], [2, "b"]])


def test_check_keys_rejects_nulls_and_duplicates_and_unknown_columns():
    with pytest.raises(SourceDataError, match=r"^1 source row\(s\) have a null key \(id\)"):
        _checked([[1, "a"], [None, "b"]])
    with pytest.raises(SourceDataError, match=r"^2 key value\(s\) of \(id\) appear on more than one"):
        _checked([[1, "a"], [1, "b"], [2, "c"], [2, "d"], [3, "e"]])
    with pytest.raises(SourceDataError, match=r"^Key column\(s\) ticket_id not found"):
        _checked([[1, "a"]], columns=("ticket_id",))


def test_two_keys_sharing_a_custom_id_are_refused_with_both_keys():
    from dbt_claude_batch.base.keys import check_custom_ids_unique

    con = duckdb.connect()
    con.execute("create table staged (__cb_custom_id varchar, __cb_key_json varchar)")
    con.execute("insert into staged select 'k' || i, '[' || i || ']' from range(1000) t(i)")
    check_custom_ids_unique(con, "staged")  # distinct ids: nothing to say
    con.execute("""insert into staged values ('k7', '["7 "]')""")
    with pytest.raises(SourceDataError, match=r"""Keys \['\["7 "\]', '\[7\]'\] map to the same custom_id 'k7'"""):
        check_custom_ids_unique(con, "staged")
