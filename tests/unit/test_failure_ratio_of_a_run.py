"""Which runs turn red: failures no retry fixes, each measured against what could have failed that way."""

from __future__ import annotations

import pytest

from dbt_claude_batch.base.errors import RunHealthError
from dbt_claude_batch.state.run_record import RunRecord, check_health


def record(submitted: int, **by_kind: int) -> RunRecord:
    return RunRecord(run_id="r", start_seq=0, n_submitted=submitted, by_kind=by_kind)


def test_a_row_that_failed_before_sending_is_measured_against_the_rows_sent_beside_it():
    # 29 sent, 1 template error: not 1 of 1 (the 29 are harvested by a later run)
    check_health(record(29, template_error=1), 0.5)
    with pytest.raises(RunHealthError) as info:
        check_health(record(1, template_error=2), 0.5)
    assert str(info.value).startswith("2 of the 3 rows this run rendered failed before they were sent "
                                      "(2 template_error), over max_failure_ratio 0.5")


def test_harvested_failures_are_measured_against_what_was_harvested():
    check_health(record(0, succeeded=6, invalid_request=4), 0.5)
    with pytest.raises(RunHealthError) as info:
        check_health(record(500, succeeded=4, invalid_request=6), 0.5)
    assert str(info.value).startswith("6 of the 10 requests this run harvested failed for a reason no retry fixes "
                                      "(6 invalid_request), over max_failure_ratio 0.5")
