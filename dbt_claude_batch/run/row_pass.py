"""The row pass: pending rows rendered one by one in Python, where SQL cannot render them exactly.

For each candidate row it renders the request, decides whether it really changed, splits a prompt
too long for the context window, lets identical requests share one line, estimates the cost, and
cuts the lines into batches by count and bytes. Lines go to the spool (spool_files.py) and the
verdicts to a CSV that DuckDB loads next to the candidates. Memory holds one Arrow batch of rows,
plus one entry per group of identical requests. Rows with attachments (media.py) always take this
pass: their files are read, checked and base64-encoded one row at a time, as the row's line is
written; a PDF over the page limit is cut into one line per page range (parts.py), each with its own
request hash (`part_hash`).
"""

from __future__ import annotations

import csv
import hashlib
import json
from typing import Any

from dbt_claude_batch.base.errors import RowTemplateError
from dbt_claude_batch.base.log import logger
from dbt_claude_batch.base.pricing import estimate_input_tokens, list_price, text_tokens
from dbt_claude_batch.base.prompts import Prompt, empty_prompt_message, hash_request, is_blank, request_params
from dbt_claude_batch.base.settings import Settings
from dbt_claude_batch.run import media, uploads
from dbt_claude_batch.run.parts import pages_note, part_custom_id, split_count, split_text
from dbt_claude_batch.run.planning import RENDERED_COLUMNS
from dbt_claude_batch.run.spool_files import Chunk, Spool
from dbt_claude_batch.run.sql_spool import request_too_large

_ENVELOPE = len(b'{"requests":[]}')
# Every batch carries one marker request (see submission.py); room for it is kept in each chunk.
_MARKER_RESERVE_BYTES = 256
VERDICT_COLUMNS = list(RENDERED_COLUMNS)


def held_as_sent(request_hash: str, row: dict[str, Any]) -> bool:
    """Whether a changed request is the one the key's last attempt sent and had answered: a retry at an
    escalated max_tokens, that max_tokens now being the setting. Its answer is kept, not bought again."""
    return request_hash == row.get("__cb_prev_sent_hash") and row.get("__cb_prev_result") == "succeeded"


class RowPass:
    def __init__(self, spool: Spool, prompt: Prompt, settings: Settings):
        self.spool = spool
        self.prompt = prompt
        self.settings = settings
        self.limit_bytes = settings.max_batch_bytes - _ENVELOPE - _MARKER_RESERVE_BYTES
        # A batch never holds more than the queue may: with nothing in flight the first one always fits.
        most = min(settings.max_requests_per_batch, settings.max_requests_in_flight or settings.max_requests_per_batch)
        self.limit_requests = most - 1  # the marker takes one
        self.current: dict[str, Chunk] = {}
        self.files: dict[str, Any] = {}
        self.offsets: dict[str, int] = {}
        self.groups: dict[str, tuple[list[str], Chunk, str]] = {}  # leader custom_id -> (sent ids, chunk, hash)
        # Rows with attachments sent this run, by what makes their lines equal: (request hash, max_tokens,
        # lane, split). Equal inputs are grouped before rendering (`groups`); equal files under other
        # names or paths are only known equal once read, here. Document rows are few, so this stays small.
        self.sent_documents: dict[tuple, tuple[list[str], Chunk, str, list]] = {}
        self.prices: dict[str, tuple[float, float] | None] = {}
        self.sent_hashes: dict[str, str] = {}  # custom_id -> sha256 of its line as sent, when escalated
        # Input tokens of everything but the prompt (system, examples, per-message overhead).
        self.fixed_tokens = estimate_input_tokens(request_params(settings, "", settings.model))
        self.root = media.resolve_root(settings, prompt.project_dir) if settings.attachments else None

    def write(self, reader) -> None:
        try:
            with open(self.spool.verdicts, "w", newline="") as verdicts:
                out = csv.writer(verdicts)
                out.writerow(VERDICT_COLUMNS)
                for record_batch in reader:
                    data = record_batch.to_pydict()
                    names = list(data)
                    self.pending = []
                    for values in zip(*data.values()):
                        self.row(dict(zip(names, values)))
                    out.writerows(self.pending)  # one call per Arrow batch
        finally:
            for handle in self.files.values():
                handle.close()
            if self.spool.uploads is not None:
                self.spool.uploads.close()

    def verdict(self, ordinal: int, custom_id: str, request_hash: str, reason: str, include: bool,
                part: int = 1, parts: int = 1, max_tokens: Any = "", dedup_of: str = "", chunk: Chunk | None = None,
                cost: float = 0.0, offset: Any = "", length: Any = "", error: str = "",
                cut: tuple[str, int, int] | None = None, sent_hash: str = "") -> None:
        """One verdict row; `cut`: a cut document's part (its own request hash, first and last page);
        `sent_hash`: the sha256 of the line as sent, where its max_tokens is not the setting's."""
        self.pending.append((ordinal, custom_id, part, parts, request_hash, max_tokens, dedup_of, reason,
                             "" if chunk is None else chunk.index, include, "" if chunk is None else chunk.lane,
                             cost, offset, length, error, *(cut or ("", "", "")), sent_hash))

    def row(self, row: dict[str, Any]) -> None:
        ordinal, key_id, reason = row["__cb_ordinal"], row["__cb_custom_id"], row["__cb_reason"]
        leader = row["__cb_leader"] if self.settings.dedupe else key_id
        shared = self.groups.get(leader) if leader != key_id else None
        fast = row.get("__cb_params") if shared is None else None
        values: dict[str, Any] | None = None
        base: dict[str, Any] | None = None
        attached: media.RowMedia | None = None
        cut: list[tuple[dict[str, Any], tuple[str, int, int], int]] = []  # a cut document's (params, part, tokens)
        if shared is not None:
            ids, chunk, request_hash, shared_cut = shared
        elif fast is not None:
            if is_blank(row["__cb_prompt"]):
                return self.empty(ordinal, key_id, row)
            request_hash = row["__cb_request_hash"]
        else:
            values = {c: row[c] for c in self.prompt.columns}
            try:
                text = self.prompt.render(values)
            except RowTemplateError as exc:
                # One row's failure does not hold back the others: it is recorded as a failure with error_type
                # template_error, and rendered again when the row or the template changes.
                message = exc.for_key(row["__cb_key_json"])
                if not self.spool.n_template_errors:
                    logger.warning(message.splitlines()[0])
                self.spool.n_template_errors += 1
                self.verdict(ordinal, key_id, "template_error:" + row["__cb_input_hash"], "template_error", False,
                             error=message)
                return
            if self.settings.attachments:
                try:
                    attached = media.row_media(row, self.settings, self.root, row["__cb_key_json"],
                                               len(text.encode("utf-8")))
                    if attached.cut is not None:
                        cut = self.cut_requests(row, text, attached)
                except media.AttachmentProblem as exc:
                    self.verdict(ordinal, key_id, f"{exc.kind}:{row['__cb_input_hash']}", exc.kind, False,
                                 error=str(exc))
                    return
                if attached.uploads:
                    if self.spool.uploads is None:
                        self.spool.uploads = uploads.Stash(self.spool.directory)
                    self.spool.uploads.add(ordinal, attached.uploads)
            if is_blank(text) and not (attached and attached.blocks):
                return self.empty(ordinal, key_id, row)
            base = request_params(self.settings, text, row["__cb_model"])
            if attached and attached.blocks:
                # One user message: the attachments in declared order, then the question (documents first
                # is what Anthropic recommends).
                text_block = [{"type": "text", "text": text}] if not is_blank(text) else []
                base["messages"][-1]["content"] = attached.blocks + text_block
            request_hash = hash_request(base)
            if cut:
                # The key's request is its parts': a changed page changes it.
                request_hash = hashlib.sha256("".join(c[1][0] for c in cut).encode()).hexdigest()
        if request_hash == row.get("__cb_erased_request_hash"):
            # The key was erased by `forget` and its request is the one it had (a touched file): not sent.
            self.verdict(ordinal, key_id, request_hash, "erased", False)
            return
        if reason == "maybe_changed":
            if request_hash != row["__cb_prev_request_hash"]:
                if held_as_sent(request_hash, row):
                    self.verdict(ordinal, key_id, row["__cb_prev_request_hash"], "unchanged", False)
                    return
                reason = "changed"
            elif row["__cb_would_retry"]:
                reason = "retry"
            else:
                self.verdict(ordinal, key_id, request_hash, "unchanged", False)
                return
        max_tokens = row["__cb_max_tokens"] or self.settings.max_tokens
        same_request = (request_hash, max_tokens, row["__cb_rerun"], row["__cb_split_tokens"],
                        row.get("__cb_split_parts"))
        if shared is None and attached is not None and self.settings.dedupe:
            # The identical rendered request (proved by its sha256) is already a line of this run: share it.
            shared = self.sent_documents.get(same_request)
            if shared is not None:
                ids, chunk, _, shared_cut = shared
        if shared is not None:
            for part, sent_id in enumerate(ids, start=1):
                follower = key_id if len(ids) == 1 else part_custom_id(key_id, part)
                self.verdict(ordinal, follower, request_hash, reason, True, part, len(ids), max_tokens, sent_id,
                             chunk, cut=shared_cut[part - 1] if shared_cut else None,
                             sent_hash=self.sent_hashes.get(sent_id, ""))
            self.spool.n_deduplicated += 1
            return
        lane = "sync" if row["__cb_rerun"] else "batch"
        if fast is not None and max_tokens == self.settings.max_tokens:
            # The request JSON built by SQL is this row's line as it is (same max_tokens, never split).
            line = b'{"custom_id":"' + key_id.encode() + b'","params":' + fast.encode("utf-8") + b"}"
            estimate = self.fixed_tokens + text_tokens(row["__cb_prompt"])
            chunk, offset, size, cost = self.append(lane, line, row["__cb_model"], estimate, max_tokens,
                                                    row["__cb_key_json"])
            ids, metas = [key_id], [None]
            self.verdict(ordinal, key_id, request_hash, reason, True, 1, 1, max_tokens, "", chunk, cost, offset, size)
        else:
            if base is None:
                values = {c: row[c] for c in self.prompt.columns}
                base = request_params(self.settings, row["__cb_prompt"], row["__cb_model"])
            if cut:
                requests = [({**params, "max_tokens": max_tokens}, meta, tokens) for params, meta, tokens in cut]
            else:
                media_tokens = attached.tokens if attached else 0
                split = self.parts(row, values, base, max_tokens)
                # A part of a split prompt carries its own request hash, as a cut document's does: a part
                # answered before is reused by it, so a retry sends only the parts still unanswered.
                requests = [(params, (hash_request(params), None, None) if len(split) > 1 else None, media_tokens)
                            for params in split]
            ids, chunk, metas = [], None, [meta for _, meta, _ in requests]
            for part, (params, meta, media_tokens) in enumerate(requests, start=1):
                custom_id = key_id if len(requests) == 1 else part_custom_id(key_id, part)
                chunk, offset, size, cost = self.emit(lane, custom_id, params, row["__cb_key_json"], media_tokens)
                ids.append(custom_id)
                sent_hash = ""
                if len(requests) == 1 and not cut and max_tokens != self.settings.max_tokens:
                    sent_hash = self.sent_hashes[custom_id] = hash_request(params)
                self.verdict(ordinal, custom_id, request_hash, reason, True, part, len(requests), max_tokens, "",
                             chunk, cost, offset, size, cut=meta, sent_hash=sent_hash)
        if self.settings.dedupe and row["__cb_group_size"] > 1 and leader not in self.groups:
            # The first row of the group that sends a line: its leader, or, when the leader sends none
            # (its answer is held), the next row that does; the others share it.
            self.groups[leader] = (ids, chunk, request_hash, metas)
        if self.settings.dedupe and attached is not None:
            self.sent_documents[same_request] = (ids, chunk, request_hash, metas)

    def empty(self, ordinal: int, key_id: str, row: dict[str, Any]) -> None:
        """A blank prompt is not sent (the API refuses it): the row becomes a failure with error_type empty_prompt,
        rendered again when the row or the template changes, as a template error is."""
        self.verdict(ordinal, key_id, "empty_prompt:" + row["__cb_input_hash"], "empty_prompt", False,
                     error=empty_prompt_message(row["__cb_key_json"]))

    def cut_requests(self, row: dict[str, Any], text: str,
                     attached: media.RowMedia) -> list[tuple[dict[str, Any], tuple[str, int, int], int]]:
        """A cut document's requests, in page order: (params, (part hash, first, last page), media tokens).
        Each part's prompt starts with a note of its pages (parts.pages_note)."""
        out = []
        for part in media.document_parts(attached, row["__cb_key_json"], len(text.encode("utf-8"))):
            note = pages_note(part.first, part.last, attached.cut.pages)
            params = request_params(self.settings, note if is_blank(text) else f"{note}\n\n{text}", row["__cb_model"])
            params["messages"][-1]["content"] = part.blocks + [{"type": "text", "text": params["messages"][-1]["content"]}]
            out.append((params, (hash_request(params), part.first, part.last), part.tokens))
        return out

    def parts(self, row: dict[str, Any], values: dict[str, Any], base: dict[str, Any], max_tokens: int) -> list[dict]:
        """The request(s) for one row: one, or several when the prompt is too long and may be split."""
        column = self.settings.split_column
        # the estimate only when a split is possible: emit() estimates every line it writes anyway
        n = 1 if column is None else split_count(estimate_input_tokens(base), row["__cb_split_tokens"],
                                                 row.get("__cb_split_parts"), self.settings.context_tokens)
        if n < 2:
            return [{**base, "max_tokens": max_tokens}]
        text = "" if values.get(column) is None else str(values[column])
        return [{**request_params(self.settings, self.prompt.render({**values, column: piece}), row["__cb_model"]),
                 "max_tokens": max_tokens} for piece in split_text(text, n)]

    def emit(self, lane: str, custom_id: str, params: dict[str, Any], key_json: str,
             media_tokens: int = 0) -> tuple[Chunk, int, int, float]:
        """Append one request line; return its chunk, offset, size and estimated list-price cost
        (`media_tokens`: the attachments' estimate, which the text estimate does not see)."""
        line = json.dumps({"custom_id": custom_id, "params": params}, ensure_ascii=False,
                          separators=(",", ":"), default=str).encode("utf-8")
        return self.append(lane, line, params["model"], estimate_input_tokens(params) + media_tokens,
                           params["max_tokens"], key_json)

    def append(self, lane: str, line: bytes, model: str, input_tokens: int, max_tokens: int,
               key_json: str) -> tuple[Chunk, int, int, float]:
        size = len(line) + 1  # the comma or newline that follows it
        if size > self.limit_bytes:
            raise request_too_large(key_json, size, self.settings.max_batch_bytes)
        if lane not in self.files:
            self.files[lane] = open(self.spool.lane_path(lane), "wb")
            self.offsets[lane] = 0
        chunk = self.current.get(lane)
        if chunk is None or chunk.n >= self.limit_requests or chunk.n_bytes + size > self.limit_bytes:
            chunk = Chunk(index=len(self.spool.chunks), lane=lane, path=self.spool.lane_path(lane),
                          offset=self.offsets[lane], model=model)
            self.spool.chunks.append(chunk)
            self.current[lane] = chunk
        offset = self.offsets[lane]
        self.files[lane].write(line)
        self.files[lane].write(b"\n")
        chunk.n += 1
        chunk.n_bytes += size
        chunk.length += size
        self.offsets[lane] += size
        self.spool.n_lines += 1
        if model not in self.prices:
            self.prices[model] = list_price(model, self.settings.prices)
        price = self.prices[model]
        cost = 0.0
        if price is None:
            self.spool.unpriced_models.add(model)
        else:
            cost = (input_tokens * price[0] + max_tokens * price[1]) / 1e6
        return chunk, offset, size, cost
