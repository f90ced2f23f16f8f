"""The Files API: uploads kept in the state directory, listed, retrieved, deleted, and read by file sources.

Layout in the state directory: `files/index.json` (every file ever uploaded, in upload order, with
its sha256 and `deleted_at`, so the ledger can say what was uploaded and deleted) and
`files/<id>.bin` (the bytes, removed on delete). The MIME type of an upload comes from its bytes'
magic number (PDF, PNG, JPEG, GIF, WebP), else from the part's Content-Type, else from the file
name, else `application/octet-stream`. Uploaded files are not downloadable (`downloadable: false`),
as on the real API where only files a tool generated can be downloaded.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
import re
import secrets
import string
from pathlib import Path

from . import pagination
from .clock import rfc3339
from .formats import sniff
from .validation import ParamsError

MAX_UPLOAD_BYTES = 500 * 1024 * 1024
_ALNUM = string.ascii_letters + string.digits
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?')
_PARAM = re.compile(r'(\w+)="((?:\\.|[^"\\])*)"')


class NotFound(Exception):
    pass


def new_file_id() -> str:
    return "file_" + "".join(secrets.choice(_ALNUM) for _ in range(24))


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, str | None, bytes]]:
    """multipart/form-data parts by name: (filename, content type, bytes)."""
    m = _BOUNDARY.search(content_type or "")
    if not content_type.startswith("multipart/form-data") or m is None:
        raise ParamsError("Content-Type must be multipart/form-data with a boundary")
    delimiter = b"--" + m.group(1).encode("latin-1")
    parts: dict[str, tuple[str | None, str | None, bytes]] = {}
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.partition(b"\r\n\r\n")
        if data.endswith(b"\r\n"):
            data = data[:-2]
        headers = {}
        for line in head.decode("utf-8", errors="replace").split("\r\n"):
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        params = dict(_PARAM.findall(headers.get("content-disposition", "")))
        if "name" in params:
            parts[params["name"]] = (params.get("filename"), headers.get("content-type"), data)
    return parts


def mime_type(data: bytes, part_type: str | None, filename: str | None) -> str:
    found = sniff(data)
    if found:
        return found
    if part_type and part_type.split(";")[0].strip() not in ("", "application/octet-stream"):
        return part_type.split(";")[0].strip()
    guessed = mimetypes.guess_type(filename or "")[0]
    return guessed or "application/octet-stream"


class Files:
    def __init__(self, root: str | os.PathLike) -> None:
        self.dir = Path(root) / "files"
        self.dir.mkdir(parents=True, exist_ok=True)
        index = self.dir / "index.json"
        self.records: list[dict] = json.loads(index.read_text("utf-8")) if index.exists() else []
        self.by_id = {r["id"]: r for r in self.records}

    def _save(self) -> None:
        tmp = self.dir / "index.json.tmp"
        tmp.write_text(json.dumps(self.records, separators=(",", ":")), "utf-8")
        os.replace(tmp, self.dir / "index.json")

    def _live(self, file_id: str) -> dict:
        record = self.by_id.get(file_id)
        if record is None or record["deleted_at"] is not None:
            raise NotFound(f"File not found: {file_id}")
        return record

    @staticmethod
    def view(record: dict) -> dict:
        """The FileMetadata object."""
        return {"id": record["id"], "type": "file", "filename": record["filename"],
                "mime_type": record["mime_type"], "size_bytes": record["size_bytes"],
                "created_at": rfc3339(record["created_at"]), "downloadable": False}

    def upload(self, content_type: str, body: bytes, now: float) -> dict:
        parts = parse_multipart(content_type, body)
        if "file" not in parts:
            raise ParamsError("file: Field required")
        filename, part_type, data = parts["file"]
        record = {"id": new_file_id(), "filename": filename or "upload", "size_bytes": len(data),
                  "mime_type": mime_type(data, part_type, filename),
                  "sha256": hashlib.sha256(data).hexdigest(), "created_at": now, "deleted_at": None}
        tmp = self.dir / (record["id"] + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, self.dir / (record["id"] + ".bin"))
        self.records.append(record)
        self.by_id[record["id"]] = record
        self._save()
        return self.view(record)

    def get(self, file_id: str) -> dict:
        return self.view(self._live(file_id))

    def delete(self, file_id: str, now: float) -> dict:
        record = self._live(file_id)
        record["deleted_at"] = now
        (self.dir / (file_id + ".bin")).unlink(missing_ok=True)
        self._save()
        return {"id": file_id, "type": "file_deleted"}

    def download(self, file_id: str) -> None:
        self._live(file_id)
        raise ParamsError(f"File {file_id} is not downloadable: only files created by a tool can be downloaded")

    def listing(self, query: dict[str, list[str]]) -> dict:
        """A page of live files, newest first: `data`, `has_more`, `first_id`, `last_id`, `next_page`."""
        live = [r for r in reversed(self.records) if r["deleted_at"] is None]
        wanted = query.get("ids[]", []) + query.get("ids", [])
        if wanted:
            data = [self.view(r) for r in live if r["id"] in set(wanted)]
            return {**pagination.envelope(data, False), "next_page": None}
        page = (query.get("page") or [None])[-1]
        if page:
            if not page.startswith("page_"):
                raise ParamsError(f"page: Invalid page cursor '{page}'")
            query = {**query, "after_id": [page[len("page_"):]]}
        limit, after_id, before_id = pagination.page_args(query)
        ids = [r["id"] for r in live]
        chosen, has_more = pagination.select(ids, limit, after_id, before_id, "file")
        data = [self.view(r) for r in live[chosen]]
        body = pagination.envelope(data, has_more)
        body["next_page"] = f"page_{body['last_id']}" if has_more and before_id is None else None
        return body

    def resolve(self, file_id: str) -> tuple[str, bytes] | None:
        """(MIME type, bytes) of a live file, for a file source; None if unknown or deleted."""
        record = self.by_id.get(file_id)
        if record is None or record["deleted_at"] is not None:
            return None
        return record["mime_type"], (self.dir / (file_id + ".bin")).read_bytes()

    def ledger(self) -> list[dict]:
        """Every upload in order, with its sha256 and when (if ever) it was deleted."""
        return [{"id": r["id"], "filename": r["filename"], "mime_type": r["mime_type"],
                 "size_bytes": r["size_bytes"], "sha256": r["sha256"], "created_at": rfc3339(r["created_at"]),
                 "deleted_at": rfc3339(r["deleted_at"])} for r in self.records]
