"""Poll cadence: early polls come quickly, a known expected end is aimed at, never faster than 5 s."""

from __future__ import annotations

import pytest

from dbt_claude_batch.run.polling import next_wait


def _bounds(value: float) -> tuple[float, float]:
    return value * 0.8, value * 1.2


@pytest.mark.parametrize("polls, expected", [(0, 1), (1, 1), (2, 1), (3, 2), (4, 4), (5, 8), (7, 32), (8, 45),
                                             (11, 45)])
def test_first_polls_come_each_second_then_double_up_to_the_interval(polls, expected):
    low, high = _bounds(expected)
    for _ in range(50):
        assert low <= next_wait(45, 10_000, polls) <= high


def test_a_known_expected_end_is_aimed_at_but_never_below_one_second():
    for _ in range(50):
        assert 0.8 * 12 <= next_wait(45, 10_000, polls=6, until_expected=12) <= 1.2 * 12
        assert 0.8 * 1 <= next_wait(45, 10_000, polls=3, until_expected=0.2) <= 1.2 * 1
        assert 0.8 * 30 <= next_wait(45, 10_000, polls=0, until_expected=30) <= 1.2 * 30


def test_never_past_the_wait_budget_and_tiny_intervals_stay_tiny():
    for _ in range(50):
        assert next_wait(45, 3, polls=5) <= 3
        assert next_wait(0.05, 100, polls=7) <= 0.06


class _Down:
    """A client whose retrieve answers HTTP 500 past the SDK's retries, every time."""

    def __init__(self):
        import anthropic
        import httpx2 as httpx

        request = httpx.Request("GET", "http://127.0.0.1/v1/messages/batches/msgbatch_1")
        self.error = anthropic.InternalServerError("Internal server error", response=httpx.Response(500, request=request),
                                                   body=None)
        self.messages = self
        self.batches = self
        self.calls = 0

    def retrieve(self, batch_id):
        self.calls += 1
        raise self.error


class _OneBatchInFlight:
    def unharvested_batches(self):
        return [("msgbatch_1", "in_progress")]


def test_a_lasting_server_error_is_logged_once_per_batch_in_a_wait_loop(caplog):
    from dbt_claude_batch.run.polling import refresh

    client, state, warned = _Down(), _OneBatchInFlight(), set()
    with caplog.at_level("WARNING", logger="dbt_claude_batch"):
        for _ in range(5):
            assert refresh(client, state, warned) == []
    assert client.calls == 5  # polled each time all the same
    lines = [r.getMessage() for r in caplog.records if "answered HTTP 500" in r.getMessage()]
    assert len(lines) == 1 and "batch msgbatch_1: retrieve answered HTTP 500; the next run polls it again" in lines[0]


def test_a_batch_the_api_does_not_know_is_gone_only_past_its_results_retention_or_when_named():
    from datetime import datetime, timedelta

    from dbt_claude_batch.run.polling import gone_for_sure

    now = datetime(2026, 12, 8)
    assert not gone_for_sure(now - timedelta(days=28), now, named_gone=False)  # maybe another workspace's
    assert not gone_for_sure(None, now, named_gone=False)
    assert gone_for_sure(now - timedelta(days=29, minutes=1), now, named_gone=False)  # results gone anyway
    assert gone_for_sure(now - timedelta(hours=1), now, named_gone=True)
