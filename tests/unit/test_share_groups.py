"""Planning's share groups (pure DuckDB): candidates with identical inputs form one group, whose first row
(in the order rows are staged and rendered) is its leader; every other candidate is its own leader.

planning.plan finds the groups of more than one row by a 64-bit hash before sorting only their rows; the
reference here is the definition, computed in Python over the planned rows' own group columns.
"""

from __future__ import annotations

from collections import defaultdict

from hypothesis import HealthCheck, given, settings, strategies as st

from dbt_claude_batch.run import planning
from staging_builders import staged_items

GROUP = ("__cb_input_hash", "__cb_model", "__cb_max_tokens", "__cb_split_tokens", "__cb_split_parts", "__cb_rerun")

rows = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c", None, ""]), st.sampled_from([None, "claude-haiku-4-5", "claude-sonnet-4-5"])),
    min_size=1, max_size=40)


def _plan(source_rows: list[tuple[str | None, str | None]], rerun: set[int]) -> list[tuple]:
    con, state = staged_items(source_rows)
    keys = ", ".join(f"'{k}'" for k in sorted(rerun))
    # without re-runs, a first attempt's pending rows are planning's view of the staged rows
    planning.plan(state, 3, False, 4096, 64, can_split=False,
                  rerun_filter=f"__cb_custom_id in ({keys})" if rerun else None)
    found = con.execute(f"select __cb_custom_id, __cb_leader, __cb_group_size, __cb_ordinal, {', '.join(GROUP)} "
                        f"from {planning.PENDING} order by __cb_ordinal").fetchall()
    con.close()
    return found


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows, st.sets(st.integers(min_value=0, max_value=39), max_size=6))
def test_identical_inputs_share_the_first_keys_request_and_others_lead_themselves(source_rows, rerun):
    planned = _plan(source_rows, rerun)
    assert len(planned) == len(source_rows)  # a first run: every row is a candidate
    members = defaultdict(list)
    for row in planned:
        members[row[4:]].append(row[0])
    for custom_id, leader, size, _, *group in planned:
        mates = members[tuple(group)]
        assert (leader, size) == (mates[0], len(mates)), (custom_id, group, mates)  # `planned` is in ordinal order
    # Ordinals number the candidates in the order they were staged (the source's), uniquely, from 1:
    # no sort of every candidate.
    assert [int(r[0]) for r in planned] == list(range(len(planned)))
    assert [r[3] for r in planned] == list(range(1, len(planned) + 1))


def test_a_source_of_distinct_rows_has_no_group_and_one_of_copies_has_one():
    distinct = _plan([(f"body {i}", None) for i in range(12)], set())
    assert {(cid, leader, size) for cid, leader, size, *_ in distinct} == {(str(i), str(i), 1) for i in range(12)}
    copies = _plan([("same", None)] * 12 + [("other", None)], {5})
    # Row 5 is a rerun: its request is its own (a rerun never shares with rows that are not reruns).
    assert {(cid, leader, size) for cid, leader, size, *_ in copies} == (
        {(str(i), "0", 11) for i in range(12) if i != 5} | {("5", "5", 1), ("12", "12", 1)})
