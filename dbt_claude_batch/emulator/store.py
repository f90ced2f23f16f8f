"""Persistence in the state directory, so a restarted emulator keeps its batches.

Layout:
  emulator.json                   clock, config, armed scenarios, prompt cache, ledger
  batches/<id>/batch.json         the batch record (small; rewritten on every state change)
  batches/<id>/requests.json      the create body exactly as received (one write, no re-encoding)
  batches/<id>/hashes.json        [[custom_id, params_hash], ...] for the ledger
  batches/<id>/results.jsonl      the results file, written once when the batch ends
Small files are replaced atomically (write to a temp file, then os.replace).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_json(path: Path, value: object) -> None:
    write_atomic(path, json.dumps(value, separators=(",", ":")).encode("utf-8"))


class Store:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.batches_dir = self.root / "batches"
        self.batches_dir.mkdir(parents=True, exist_ok=True)

    # emulator-wide state
    def load_global(self) -> dict:
        path = self.root / "emulator.json"
        if not path.exists():
            return {}
        return json.loads(path.read_text("utf-8"))

    def save_global(self, state: dict) -> None:
        write_json(self.root / "emulator.json", state)

    # batches
    def batch_dir(self, batch_id: str) -> Path:
        return self.batches_dir / batch_id

    def load_batches(self) -> list[dict]:
        records = []
        for d in self.batches_dir.iterdir():
            path = d / "batch.json"
            if path.exists():
                records.append(json.loads(path.read_text("utf-8")))
        records.sort(key=lambda r: r["seq"])
        return records

    def create_batch(self, record: dict, raw_body: bytes, hashes: list) -> None:
        d = self.batch_dir(record["id"])
        d.mkdir(parents=True, exist_ok=True)
        with open(d / "requests.json", "wb") as f:
            f.write(raw_body)
        write_json(d / "hashes.json", hashes)
        self.save_batch(record)

    def save_batch(self, record: dict) -> None:
        write_json(self.batch_dir(record["id"]) / "batch.json", record)

    def load_requests(self, batch_id: str) -> list[dict]:
        with open(self.batch_dir(batch_id) / "requests.json", "rb") as f:
            return json.loads(f.read())["requests"]

    def load_hashes(self, batch_id: str) -> list:
        path = self.batch_dir(batch_id) / "hashes.json"
        return json.loads(path.read_text("utf-8")) if path.exists() else []

    def results_path(self, batch_id: str) -> Path:
        return self.batch_dir(batch_id) / "results.jsonl"

    def write_results(self, batch_id: str, lines: list[bytes]) -> None:
        tmp = self.results_path(batch_id).with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(b"".join(lines))
        os.replace(tmp, self.results_path(batch_id))

    def drop_results(self, batch_id: str) -> None:
        self.results_path(batch_id).unlink(missing_ok=True)

    def drop_request_bodies(self, batch_id: str) -> None:
        """After deletion only the record and hashes stay (the ledger still lists them)."""
        for name in ("requests.json", "results.jsonl"):
            (self.batch_dir(batch_id) / name).unlink(missing_ok=True)

    def wipe(self) -> None:
        shutil.rmtree(self.batches_dir, ignore_errors=True)
        self.batches_dir.mkdir(parents=True, exist_ok=True)
