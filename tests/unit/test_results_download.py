"""Downloading a batch's results file (pure: a stand-in for the SDK's streaming response)."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from dbt_claude_batch.run.harvest import DownloadIncomplete, download_results


class _Results:
    """`client.messages.batches.with_streaming_response.results(id)` answering these chunks with HTTP 200."""

    def __init__(self, *chunks: bytes):
        self.chunks = chunks
        self.messages = self.batches = self.with_streaming_response = self

    @contextmanager
    def results(self, batch_id):
        yield self

    def iter_bytes(self, size):
        yield from self.chunks


def test_a_complete_file_is_saved_as_it_came(tmp_path):
    path = tmp_path / "r.jsonl"
    assert download_results(_Results(b'{"a":1}\n{"b"', b':2}\n'), "msgbatch_1", str(path)) == 16
    assert path.read_bytes() == b'{"a":1}\n{"b":2}\n'


@pytest.mark.parametrize("chunks, says", [
    ((b'{"a":1}\n{"b"',), "ended mid-line after 12 bytes"),
    # An ended batch holds a line per request, its marker's at least: an empty body is a broken
    # download, and harvesting it would make every request `missing` and buy it again (found by an audit).
    ((), "was empty"),
    ((b"",), "was empty"),
])
def test_a_file_cut_short_or_empty_is_downloaded_again(tmp_path, chunks, says):
    with pytest.raises(DownloadIncomplete, match=says):
        download_results(_Results(*chunks), "msgbatch_1", str(tmp_path / "r.jsonl"))
