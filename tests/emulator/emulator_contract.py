"""Helpers for the emulator contract tests: schema validation of everything the emulator sends.

`checked_client(emu)` returns a real anthropic.Anthropic whose HTTP transport validates every
JSON response body (and every JSONL results line) against the schema the API description gives
for that route and status (tests/data/openapi-subset.json). Violations are collected in
`client.schema_violations`; the `api` fixture asserts none at teardown.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx2
import jsonschema

SUBSET = json.loads((Path(__file__).resolve().parents[1] / "data" / "openapi-subset.json").read_text("utf-8"))
RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
BATCH_TIMES = ("created_at", "expires_at", "ended_at", "cancel_initiated_at", "archived_at")
MODEL_TIMES = ("created_at", "deprecated_at", "retires_at")


def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = {"$ref": f"#/components/schemas/{name}", "components": SUBSET["components"]}
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


VALIDATORS = {name: validator(name) for name in SUBSET["x-roots"]}


def problems(name: str, body: object) -> list[str]:
    """Schema violations of `body` against component `name` (plus RFC 3339 Z timestamps)."""
    if name == "ErrorResponse" and isinstance(body, dict) and \
            (body.get("error") or {}).get("type") == "request_too_large":
        # The description's error union lacks request_too_large (the API does send it for 413):
        # check the envelope against an equivalent error type instead.
        body = {**body, "error": {**body["error"], "type": "invalid_request_error"}}
    found = [f"{name}: {e.message} at {list(e.absolute_path)}" for e in VALIDATORS[name].iter_errors(body)]
    timed = {"MessageBatch": ([body], BATCH_TIMES), "ModelInfo": ([body], MODEL_TIMES),
             "ListResponse_MessageBatch_": (body.get("data", []), BATCH_TIMES),
             "ListResponse_ModelInfo_": (body.get("data", []), MODEL_TIMES),
             "BetaFileMetadataSchema": ([body], ("created_at",)),
             "BetaFileListResponse": (body.get("data", []), ("created_at",))}
    objects, fields = timed.get(name, ([], ()))
    for obj in objects:
        for field in fields:
            value = obj.get(field)
            if value is not None and not RFC3339_Z.match(value):
                found.append(f"{name}.{field}: {value!r} is not RFC 3339 with Z")
    return found


def schema_for(method: str, path: str, status: int) -> str | None:
    if status >= 400:
        return "ErrorResponse"
    if path.startswith("/_emulator/"):
        return None
    if path == "/v1/messages":
        return "Message"
    if path == "/v1/messages/count_tokens":
        return "CountMessageTokensResponse"
    if path == "/v1/models":
        return "ListResponse_ModelInfo_"
    if path.startswith("/v1/models/"):
        return "ModelInfo"
    if path == "/v1/messages/batches":
        return "MessageBatch" if method == "POST" else "ListResponse_MessageBatch_"
    if path.endswith("/results"):
        return "MessageBatchIndividualResponse"
    if path.startswith("/v1/messages/batches/"):
        return "DeleteMessageBatchResponse" if method == "DELETE" else "MessageBatch"
    if path == "/v1/files":
        return "BetaFileMetadataSchema" if method == "POST" else "BetaFileListResponse"
    if path.startswith("/v1/files/") and not path.endswith("/content"):
        return "BetaFileDeleteResponse" if method == "DELETE" else "BetaFileMetadataSchema"
    return None


def check_body(method: str, path: str, status: int, content: bytes) -> list[str]:
    name = schema_for(method, path, status)
    if name is None:
        return []
    if name == "MessageBatchIndividualResponse":
        found = []
        if content and not content.endswith(b"\n"):
            found.append("results: last line is not newline-terminated")
        for n, line in enumerate(content.split(b"\n")[:-1] if content else []):
            if not line.strip():
                found.append(f"results line {n}: blank line")
                continue
            found.extend(problems(name, json.loads(line)))
        return found
    return problems(name, json.loads(content))


class SchemaCheckingTransport(httpx2.BaseTransport):
    def __init__(self, violations: list[str]) -> None:
        self.inner = httpx2.HTTPTransport()
        self.violations = violations
        self.checked = 0

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        response = self.inner.handle_request(request)
        if "request-id" not in response.headers:
            self.violations.append(f"{request.method} {request.url.path}: no request-id header")
        response.read()
        self.checked += 1
        for problem in check_body(request.method, request.url.path, response.status_code, response.content):
            self.violations.append(f"{request.method} {request.url.path} -> {response.status_code}: {problem}")
        return response

    def close(self) -> None:
        self.inner.close()


def checked_client(emu, **kw):
    violations: list[str] = []
    transport = SchemaCheckingTransport(violations)
    client = emu.client(http_client=httpx2.Client(transport=transport), **kw)
    client.schema_violations = violations
    client.schema_transport = transport
    return client


def request(custom_id: str, text: str, model: str = "claude-haiku-4-5", max_tokens: int = 64, **params) -> dict:
    return {"custom_id": custom_id,
            "params": {"model": model, "max_tokens": max_tokens,
                       "messages": [{"role": "user", "content": text}], **params}}


def retrieve_ended(client, batch_id: str, accesses: int = 2):
    """Retrieve until the batch has ended, at most `accesses` times (with processing delay 0 a
    fresh batch shows in_progress on its first access and ended on the second)."""
    for _ in range(accesses):
        batch = client.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
    raise AssertionError(f"{batch_id} is still {batch.processing_status} after {accesses} retrieves")


def raw_results(client, batch_id: str) -> bytes:
    with client.messages.batches.with_streaming_response.results(batch_id) as response:
        return b"".join(response.iter_bytes())


def lines_by_id(raw: bytes) -> dict[str, dict]:
    out = {}
    for line in raw.decode("utf-8").splitlines():
        obj = json.loads(line)
        out[obj["custom_id"]] = obj["result"]
    return out


def announce_oversized(emulator, path: str, limit: int, opening: bytes) -> tuple[bytes, bytes]:
    """POST to `path` announcing a body one byte over `limit` and sending only `opening`: (status line
    and headers, body) of the answer, which must come without the body being read."""
    import socket

    host, port = emulator.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall((f"POST {path} HTTP/1.1\r\nHost: {host}\r\nx-api-key: k\r\n"
                      f"anthropic-version: 2023-06-01\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {limit + 1}\r\n\r\n").encode() + opening)
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body
