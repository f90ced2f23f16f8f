"""Requests cut into parts: a prompt too long for the context window (`split_column`), and a PDF over
the page limit (`max_pages_per_request`, at most the API's 100), cut into even page ranges.

Each part is a request of its own, with the custom_id ``<key's custom_id>-p<N>`` (`part_custom_id`);
the parts' answers are joined again into one results row per key (answers.py, results.py). A PDF's
parts are cut one row at a time, while the spool writes that row's lines: never a whole batch.
"""

from __future__ import annotations

import hashlib
import io
import math
from typing import Iterator

from dbt_claude_batch.base.errors import SourceDataError
from dbt_claude_batch.base.identifiers import literal
from dbt_claude_batch.run.planning import PENDING, RENDERED, STAGED
from dbt_claude_batch.state.state import State


def page_ranges(pages: int, limit: int) -> list[tuple[int, int]]:
    """(first, last) pages, 1-based and inclusive, of the ceil(pages / limit) parts of a document.

    The parts are balanced: their sizes differ by at most one page, the larger ones first (250 pages
    at 100 a part: 1-84, 85-167, 168-250)."""
    if pages < 1 or limit < 1:
        raise ValueError(f"page_ranges needs pages >= 1 and limit >= 1; got {pages}, {limit}")
    n = math.ceil(pages / limit)
    size, extra = divmod(pages, n)
    ranges, first = [], 1
    for i in range(n):
        last = first + size + (1 if i < extra else 0) - 1
        ranges.append((first, last))
        first = last + 1
    return ranges


def pages_note(first: int, last: int, pages: int) -> str:
    """The line put before the prompt of one part of a cut document, so the model knows what it holds."""
    return f"Pages {first}-{last} of {pages}."


def pdf_parts(data: bytes, ranges: list[tuple[int, int]]) -> Iterator[bytes]:
    """A PDF of each (first, last) page range (1-based, inclusive) of `data`, in turn, from one read of
    it. pypdf writes the same bytes for the same input, so a part's request hash is stable from run to run."""
    import pypdf

    reader = pypdf.PdfReader(io.BytesIO(data))
    for first, last in ranges:
        writer = pypdf.PdfWriter()
        for page in reader.pages[first - 1:last]:
            writer.add_page(page)
        out = io.BytesIO()
        writer.write(out)
        yield out.getvalue()


# A prompt is split up front when its estimate passes this share of the context window.
_SPLIT_THRESHOLD = 0.9
# Parts of a split prompt aim at half the context window: the estimate is rough, and the model needs
# room for the instructions around the part.
_SPLIT_FILL = 0.5


def split_count(estimate: int, too_long_tokens: int | None, cut_before: int | None, context_tokens: int) -> int:
    """How many parts a prompt of `estimate` tokens is split into; 1 when it is sent whole.

    `too_long_tokens`: what the API said the prompt needed when it refused it as too long (the estimate is
    rough); `cut_before`: the parts the last attempt of the same inputs was cut into, so a retry cuts it
    the same way and re-sends only the parts that failed, never the whole prompt again."""
    needed = max(estimate, too_long_tokens or 0)
    if needed <= context_tokens * _SPLIT_THRESHOLD and not too_long_tokens and (cut_before or 0) <= 1:
        return 1
    return max(2, math.ceil(needed / (context_tokens * _SPLIT_FILL)), cut_before or 0)


def split_text(text: str, parts: int) -> list[str]:
    """Cut text into `parts` pieces of similar length, at whitespace where possible."""
    pieces, start = [], 0
    for i in range(1, parts):
        target = len(text) * i // parts
        cut = text.rfind(" ", start + 1, target + 1)
        if cut <= start:
            cut = target
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def part_custom_id(key_id: str, part: int) -> str:
    """The custom_id of part `part` of a key: ``<key_id>-p<part>``, within the API's 64 characters
    (a long key id is cut and given 8 hex digits of its md5, so two keys never share a part id)."""
    suffix = f"-p{part}"
    if len(key_id) + len(suffix) <= 64:
        return key_id + suffix
    return key_id[:47] + "-" + hashlib.md5(key_id.encode()).hexdigest()[:8] + suffix


def check_part_ids(state: State) -> None:
    """A part id (`<custom_id>-pN`) must not be the custom_id of another key, or one batch would hold it twice;
    nor may a key sent whole take the id of a part another key was sent in before."""
    if state.run(f"select exists (select 1 from {state.table('requests')} where model_id = ? and parts > 1)",
                 [state.model_id])[0][0]:
        taken = state.run(
            f"select r.custom_id, any_value(p.__cb_key_json), any_value(q.key_json)::varchar from {RENDERED} r "
            f"join {PENDING} p on p.__cb_ordinal = r.ordinal join {state.table('requests')} q "
            f"on q.model_id = {literal(state.model_id)} and q.custom_id = r.custom_id "
            "and q.key_custom_id is not null and q.key_custom_id <> r.custom_id "
            "where r.include and r.parts = 1 group by all limit 1")
        if taken:
            custom_id, key, cut = taken[0]
            raise SourceDataError(
                f"Key {key} would be sent as custom_id {custom_id!r}, which is already the id of a part of key {cut} "
                "(sent in parts before): rename the key (its custom_id is its value), or filter it out of the staging "
                "model; nothing was submitted.")
    if not state.run(f"select exists (select 1 from {RENDERED} where parts > 1)")[0][0]:
        return  # no part ids (and a run that cuts nothing may have dropped the staged rows)
    clash = state.run(
        f"select r.custom_id, c.__cb_key_json, s.__cb_key_json from {RENDERED} r "
        # the cut key by its ordinal in the pending rows (numbered over the rows planning looked at, which
        # are not always every staged row: `planning.open_rows`)
        f"join {STAGED} s on s.__cb_custom_id = r.custom_id join {PENDING} c on c.__cb_ordinal = r.ordinal "
        "where r.parts > 1 limit 1"
    )
    if clash:
        part_id, cut, other = clash[0]
        raise SourceDataError(
            f"Key {cut} is sent in parts (a split prompt or a cut document), and its part would get the id "
            f"{part_id!r}, which is already the custom_id of another key, {other}: rename one of the two keys, "
            "or turn `split_column` off (or raise `max_pages_per_request`) for this run; nothing was submitted."
        )
