"""Attachments declared `upload: files_api`: each content uploaded once, held while requests need it.

The spool pass (media.py) sends such an attachment as a `file` source whose id is a placeholder naming
its content hash, ``dbt_claude_batch-sha256-<sha256>``, and stashes the bytes once per content in the
run's scratch directory. So the request hash covers the content and not the id an upload gets: the
same bytes under another path, key, model or run make the same request, and a held answer is reused.
Uploads, listings and deletes go through the SDK's `client.files` (the Files API without a beta
header, as SDK 2.14 has it). Only after the budget guard and the model names passed (`dispatch.submit_pending`) are the contents
the sent lines need uploaded, and the placeholders swapped for the ids as each body is read.

State (`uploaded_files`, one row per upload; `upload_uses`, which request hashes use which content):
the uses are recorded, then an intent row, then the upload, whose file name is the placeholder, then
its id. A run that died between the upload and the record leaves the intent open; the next one that
needs the content lists the Files API and adopts a file only by proof (its name carries the content
hash and its size matches); several such files: one is adopted and the others deleted. Never is a
content uploaded while an upload of it is held. A model's use of a content ends once no request of
its with that content is in flight, retryable, or waiting in this run; a held file with no use left
by any model is deleted through the API and recorded (`deleted_at`).
"""

from __future__ import annotations

import csv
import os
import re
import uuid
from typing import Any, Iterable, Mapping

from dbt_claude_batch.base.errors import ApiError
from dbt_claude_batch.base.identifiers import literal
from dbt_claude_batch.base.log import logger
from dbt_claude_batch.run.planning import PENDING, RENDERED as _RENDERED, pending_exists, rendered_is_table
from dbt_claude_batch.state.queries import latest_outcomes_sql, retryable_sql
from dbt_claude_batch.state.state import NEVER_SENT_STATUSES, State, utcnow

PREFIX = "dbt_claude_batch-sha256-"
REFS = "cb_upload_refs"  # temp table: (ordinal, sha256, media_type) of this run's rendered lines
# The placeholder as json.dumps writes it in a request line. A prompt's own quotes are escaped in JSON,
# so no text a row holds can read as this.
_PLACEHOLDER = re.compile(rb'"file_id":"' + PREFIX.encode() + rb'([0-9a-f]{64})"')
_NOT_UPLOADED = {400, 401, 402, 403, 404, 409, 413, 415, 422, 429, 529}


def placeholder(sha256: str) -> str:
    """The file id a request carries until submit, and the name the content is uploaded under."""
    return PREFIX + sha256


def swap(data: bytes, file_ids: Mapping[str, str]) -> bytes:
    """Request lines with every placeholder replaced by its upload's id; a placeholder without one raises."""

    def one(match: re.Match) -> bytes:
        file_id = file_ids.get(match.group(1).decode())
        if file_id is None:
            raise ApiError(f"A request names content {match.group(1).decode()[:12]}... that was not uploaded: this "
                           "is a bug in dbt_claude_batch; nothing was sent with it. Run again, and report it.")
        return b'"file_id":"' + file_id.encode() + b'"'

    return _PLACEHOLDER.sub(one, data)


class Stash:
    """The spool pass's side: each content's bytes once under the scratch directory, and which line uses it."""

    def __init__(self, directory: str):
        self.dir = os.path.join(directory, "uploads")
        os.makedirs(self.dir, exist_ok=True)
        self.refs_path = os.path.join(directory, "upload_refs.csv")
        self._handle = open(self.refs_path, "w", newline="")
        self._refs = csv.writer(self._handle)
        self._refs.writerow(["ordinal", "sha256", "media_type"])
        self._seen: set[str] = set()

    def path(self, sha256: str) -> str:
        return os.path.join(self.dir, sha256)

    def add(self, ordinal: int, uploads: Iterable[tuple[str, str, bytes]]) -> None:
        for sha256, media_type, data in uploads:
            if sha256 not in self._seen:
                tmp = self.path(sha256) + ".tmp"
                with open(tmp, "wb") as handle:
                    handle.write(data)
                os.replace(tmp, self.path(sha256))
                self._seen.add(sha256)
            self._refs.writerow([ordinal, sha256, media_type])

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.close()

    def load(self, state: State) -> None:
        """The refs as the temp table REFS, next to the verdicts."""
        self.close()
        state.run(f"create or replace temp table {REFS} as select * from read_csv(?, header = true, "
                  "columns = {'ordinal': 'bigint', 'sha256': 'varchar', 'media_type': 'varchar'})",
                  [self.refs_path])


def upload_needed(client, state: State, stash: Stash) -> dict[str, str]:
    """Upload (or find held) every content the lines still to send need; return sha256 -> file id.

    Called after the guards: nothing is uploaded for a run that a guard refuses or `--empty` builds."""
    needed = state.run(
        f"select u.sha256, any_value(u.media_type) from {REFS} u join {_RENDERED} r on r.ordinal = u.ordinal "
        "where r.include and r.dedup_of is null group by u.sha256 order by u.sha256")
    if not needed:
        return {}
    now = utcnow()
    # Uses first: from here on no other model's run deletes what these requests are about to name.
    state.run(
        f"insert or ignore into {state.table('upload_uses')} select distinct u.sha256, "
        f"{literal(state.model_id)}, r.request_hash, ? from {REFS} u join {_RENDERED} r on r.ordinal = u.ordinal "
        "where r.include and r.dedup_of is null", [now])
    _forget_vanished(client, state)
    listing: list[Any] | None = None
    ids: dict[str, str] = {}
    n_uploaded = 0
    for sha256, media_type in needed:
        held = _held(state, sha256)
        if held is None and _open_intents(state, sha256, state.model_id):
            if listing is None:
                listing = list(client.files.list(limit=1000))
            held = _settle(client, state, sha256, listing, state.model_id)
        if held is None:
            held = _upload(client, state, sha256, media_type, stash.path(sha256))
            n_uploaded += 1
        ids[sha256] = held
    logger.info(f"{len(ids)} attachment file(s) for the Files API: {n_uploaded} uploaded, "
                f"{len(ids) - n_uploaded} already held")
    return ids


def _forget_vanished(client, state: State) -> None:
    """Held files these lines need that the Files API no longer has (deleted outside this state) are
    recorded as deleted, so they are uploaded again rather than named in requests that would fail."""
    table = state.table("uploaded_files")
    held = [r[0] for r in state.run(f"select file_id from {table} where status = 'held' "
                                    f"and sha256 in (select sha256 from {REFS}) order by file_id")]
    for start in range(0, len(held), 100):  # the most ids one listing takes
        asked = held[start:start + 100]
        live = {f.id for f in client.files.list(ids=asked)}
        for file_id in sorted(set(asked) - live):
            logger.warning(f"uploaded file {file_id} is gone from the Files API (deleted outside dbt_claude_batch?); "
                           "its content is uploaded again")
            state.run(f"update {table} set status = 'deleted', deleted_at = ?, note = ? where file_id = ?",
                      [utcnow(), "gone from the Files API when needed again", file_id])


def _held(state: State, sha256: str) -> str | None:
    rows = state.run(f"select file_id from {state.table('uploaded_files')} where sha256 = ? and status = 'held' "
                     "order by uploaded_at limit 1", [sha256])
    return rows[0][0] if rows else None


def _open_intents(state: State, sha256: str, model_id: str | None = None) -> list[tuple[str, str, int]]:
    """Uploads of a content begun and never recorded (by `model_id`'s runs, or any): (upload_id, sha256, bytes).

    Another model's open intent is left to it: its run may be uploading right now, in another dbt thread."""
    narrow = " and model_id = ?" if model_id else ""
    return state.run(f"select upload_id, sha256, n_bytes from {state.table('uploaded_files')} "
                     f"where status = 'uploading' and sha256 = ?{narrow} order by intent_at",
                     [sha256, model_id] if model_id else [sha256])


def _settle(client, state: State, sha256: str, listing: list[Any], model_id: str | None = None) -> str | None:
    """Adopt by proof the file an unrecorded upload made (its name is the content hash, its size matches, and
    no row records its id); delete any further copy; close the intents (of `model_id`, or of every model).
    Returns the adopted id, or None when none was made."""
    intents = _open_intents(state, sha256, model_id)
    n_bytes = intents[0][2]
    table = state.table("uploaded_files")
    recorded = {r[0] for r in state.run(f"select file_id from {table} where sha256 = ? and file_id is not null",
                                        [sha256])}
    found = [f for f in listing
             if f.filename == placeholder(sha256) and f.size_bytes == n_bytes and f.id not in recorded]
    adopted = found[0].id if found else None
    for i, (upload_id, _, _) in enumerate(intents):
        if i == 0 and adopted is not None:
            state.run(f"update {table} set status = 'held', file_id = ?, uploaded_at = ?, note = ? "
                      "where upload_id = ?", [adopted, utcnow(), "adopted by listing: name and size match", upload_id])
        else:
            state.run(f"update {table} set status = 'abandoned', note = ? where upload_id = ?",
                      ["no file of this content found by listing" if adopted is None else "another copy adopted",
                       upload_id])
    for extra in found[1:]:
        client.files.delete(extra.id)
        logger.info(f"deleted {extra.id}, a second upload of content {sha256[:12]}")
    if adopted is not None:
        logger.info(f"adopted {adopted}, uploaded by an earlier run that stopped before recording it")
    return adopted


def _upload(client, state: State, sha256: str, media_type: str, path: str) -> str:
    import anthropic

    upload_id = str(uuid.uuid4())
    table = state.table("uploaded_files")
    n_bytes = os.path.getsize(path)
    state.run(f"insert into {table} (upload_id, sha256, filename, model_id, n_bytes, media_type, status, intent_at) "
              "values (?, ?, ?, ?, ?, ?, 'uploading', ?)",
              [upload_id, sha256, placeholder(sha256), state.model_id, n_bytes, media_type, utcnow()])
    try:
        with open(path, "rb") as handle:
            # Sent once: a retry after a lost answer could upload the content twice.
            meta = client.with_options(max_retries=0).files.upload(
                file=(placeholder(sha256), handle, media_type))
    except anthropic.APIStatusError as exc:
        if exc.status_code not in _NOT_UPLOADED:
            raise _in_doubt(sha256, f"HTTP {exc.status_code}") from None
        state.run(f"update {table} set status = 'refused', note = ? where upload_id = ?",
                  [f"HTTP {exc.status_code}: {exc.message}"[:500], upload_id])
        raise ApiError(
            f"The Files API refused the upload of an attachment (content {sha256[:12]}..., {n_bytes} bytes, "
            f"{media_type}): HTTP {exc.status_code}: {exc.message}. Fix what it names (or set `upload: inline` "
            "for that attachment) and run again; nothing was submitted.") from None
    except (anthropic.APIConnectionError, anthropic.APITimeoutError) as exc:
        raise _in_doubt(sha256, type(exc).__name__) from None
    state.run(f"update {table} set status = 'held', file_id = ?, uploaded_at = ? where upload_id = ?",
              [meta.id, utcnow(), upload_id])
    return meta.id


def _in_doubt(sha256: str, why: str) -> ApiError:
    return ApiError(
        f"An attachment upload to the Files API got no answer ({why}; content {sha256[:12]}...): run again; the "
        "next run adopts the file if it was made (its name carries the content hash) or uploads it; nothing was "
        "submitted.")


def release_unneeded(api, state: State, max_tokens_cap: int, can_split: bool) -> int:
    """End this model's uses that nothing needs any more; delete held files no model uses; return how many.

    A use is needed while a request of this model with that request hash is in flight (or its create in
    doubt), its key's latest outcome is retryable, or it is a line this run rendered and did not send."""
    uses, files = state.table("upload_uses"), state.table("uploaded_files")
    if not state.run(f"select 1 from {files} where status in ('held', 'uploading') limit 1"):
        state.run(f"drop table if exists {REFS}")
        return 0
    me = literal(state.model_id)
    waiting = ""
    if pending_exists(state) and rendered_is_table(state):
        # Lines this run rendered to send and did not (no room in the queue, a stop): no request of
        # theirs, at the attempt they were rendered for, was recorded.
        waiting = f""" union all select r.request_hash from {_RENDERED} r join {PENDING} p on p.__cb_ordinal = r.ordinal
            where r.include and not exists (select 1 from {state.table('requests')} q
                join {state.table('submissions')} s using (submission_id)
                where q.model_id = {me} and q.custom_id = r.custom_id and q.attempt = p.__cb_attempt
                  and s.status not in {NEVER_SENT_STATUSES})"""
    state.run(f"""delete from {uses} where model_id = {me} and request_hash not in (
        select r.request_hash from {state.table('requests')} r
        join {state.table('submissions')} s using (submission_id)
        left join {state.table('batches')} b on b.batch_id = s.batch_id
        where r.model_id = {me} and s.status in ('creating', 'in_doubt', 'submitted') and b.harvested_at is null
        union all select l.request_hash from ({latest_outcomes_sql(state)}) l
        where {retryable_sql('l', max_tokens_cap, can_split)}{waiting})""")
    state.run(f"drop table if exists {REFS}")
    unused = f"not exists (select 1 from {uses} u where u.sha256 = f.sha256)"
    doomed = state.run(f"select upload_id, file_id from {files} f where status = 'held' and {unused} "
                       "order by uploaded_at")
    orphans = state.run(f"select distinct sha256 from {files} f where status = 'uploading' and {unused}")
    if not doomed and not orphans:
        return 0
    client = api.get()
    if orphans:  # uploads a run died in the middle of, which nothing needs now: adopted, then deleted below
        listing = list(client.files.list(limit=1000))
        for (sha256,) in orphans:
            _settle(client, state, sha256, listing)
        doomed = state.run(f"select upload_id, file_id from {files} f where status = 'held' and {unused} "
                           "order by uploaded_at")
    import anthropic

    n = 0
    for upload_id, file_id in doomed:
        try:
            client.files.delete(file_id)
            note = None
        except anthropic.NotFoundError:
            note = "already gone when deleted"
        except anthropic.APIError as exc:
            logger.warning(f"could not delete uploaded file {file_id} ({type(exc).__name__}); a later run tries again")
            continue
        state.run(f"update {files} set status = 'deleted', deleted_at = ?, note = coalesce(?, note) "
                  "where upload_id = ?", [utcnow(), note, upload_id])
        n += 1
    if n:
        logger.info(f"deleted {n} uploaded attachment file(s) no request needs any more")
    return n
