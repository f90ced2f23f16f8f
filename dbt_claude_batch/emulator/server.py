"""The HTTP front: routing, auth and version headers, error bodies, faults, the control API."""

from __future__ import annotations

import json
import re
import secrets
import string
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from . import batches, files, media, models, pagination, processing, validation
from .clock import rfc3339
from .scenarios import ERROR_TYPES, ScenarioError

_ALNUM = string.ascii_letters + string.digits
_ID = r"(?P<id>[^/]+)"
# (method, regex, route name for scenarios, route template for the ledger)
ROUTES = [
    ("POST", r"/v1/messages/batches", "create", "POST /v1/messages/batches"),
    ("GET", r"/v1/messages/batches", "list", "GET /v1/messages/batches"),
    ("GET", rf"/v1/messages/batches/{_ID}", "retrieve", "GET /v1/messages/batches/{message_batch_id}"),
    ("DELETE", rf"/v1/messages/batches/{_ID}", "delete", "DELETE /v1/messages/batches/{message_batch_id}"),
    ("POST", rf"/v1/messages/batches/{_ID}/cancel", "cancel",
     "POST /v1/messages/batches/{message_batch_id}/cancel"),
    ("GET", rf"/v1/messages/batches/{_ID}/results", "results",
     "GET /v1/messages/batches/{message_batch_id}/results"),
    ("POST", r"/v1/messages/count_tokens", "count_tokens", "POST /v1/messages/count_tokens"),
    ("POST", r"/v1/messages", "messages", "POST /v1/messages"),
    ("POST", r"/v1/files", "upload_file", "POST /v1/files"),
    ("GET", r"/v1/files", "list_files", "GET /v1/files"),
    ("GET", rf"/v1/files/{_ID}", "retrieve_file", "GET /v1/files/{file_id}"),
    ("DELETE", rf"/v1/files/{_ID}", "delete_file", "DELETE /v1/files/{file_id}"),
    ("GET", rf"/v1/files/{_ID}/content", "download_file", "GET /v1/files/{file_id}/content"),
    ("GET", r"/v1/models", "list_models", "GET /v1/models"),
    ("GET", rf"/v1/models/{_ID}", "retrieve_model", "GET /v1/models/{model_id}"),
]
SPEND_LIMIT_MESSAGE = ("Your workspace has reached its spend limit; requests are refused until the limit "
                       "is raised or the period resets (emulator scenario spend_limit)")
QUEUE_LIMIT_MESSAGE = ("Number of batch requests in the processing queue would exceed the limit of {limit} "
                       "for your workspace (queued: {queued}, in this request: {requested}); retry after "
                       "queued batches have ended (emulator scenario queue_limit)")
# The real API's words when the prepaid balance is used up (a 400, not a 402).
CREDIT_BALANCE_MESSAGE = ("Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing "
                          "to upgrade or purchase credits.")
ROUTES = [(m, re.compile(p + r"/?$"), name, template) for m, p, name, template in ROUTES]
# Bodies refused with 413 on their Content-Length before being read (a batch create: state.max_batch_bytes).
BODY_LIMITS = {"messages": (media.MAX_REQUEST_BYTES, "a Messages request"),
               "count_tokens": (media.MAX_REQUEST_BYTES, "a Messages request"),
               "upload_file": (files.MAX_UPLOAD_BYTES, "a file upload")}


class Reply(Exception):
    """An API error to send: status, error type, message, extra headers."""

    def __init__(self, status: int, kind: str, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.headers = status, kind, message, headers or {}


def new_request_id() -> str:
    return "req_" + "".join(secrets.choice(_ALNUM) for _ in range(24))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "dbt-claude-batch-emulator"
    state = None  # set by make_server

    def log_message(self, fmt: str, *args) -> None:
        sys.stderr.write("emulator: %s %s\n" % (self.address_string(), fmt % args))

    # responses -------------------------------------------------------------------------
    def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", self.request_id)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.status = status

    def _send_error(self, err: Reply) -> None:
        self._send(err.status, {"type": "error", "error": {"type": err.kind, "message": err.message},
                                "request_id": self.request_id}, err.headers)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _json(self, raw: bytes) -> object:
        try:
            return json.loads(raw) if raw else {}
        except ValueError as e:
            raise Reply(400, "invalid_request_error", f"Request body is not valid JSON: {e}")

    # dispatch --------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        self.request_id = new_request_id()
        self.status = None
        url = urlsplit(self.path)
        if url.path.startswith("/_emulator/"):
            return self._control(method, url)
        template = f"{method} {url.path}"
        try:
            for m, pattern, name, tmpl in ROUTES:
                match = pattern.match(url.path)
                if match and m == method:
                    template = tmpl
                    path_id = match.groupdict().get("id")
                    self._api(name, unquote(path_id) if path_id is not None else None, url)
                    break
            else:
                self._body()
                raise Reply(404, "not_found_error", f"Not found: {method} {url.path}")
        except Reply as err:
            self._send_error(err)
        except Exception:
            traceback.print_exc(file=sys.stderr)
            self._send_error(Reply(500, "api_error", "Internal server error (emulator)"))
        finally:
            state = self.state
            state.ledger.count_call(template, self.status if self.status is not None else "lost")
            state.save_if_dirty()

    def _api(self, name: str, path_id: str | None, url) -> None:
        state = self.state
        length = int(self.headers.get("Content-Length") or 0)
        limit = BODY_LIMITS.get(name, (None, ""))
        if name == "create":
            limit = (state.max_batch_bytes, "a message batch")
        if limit[0] is not None and length > limit[0]:
            self.close_connection = True  # the body is not read
            raise Reply(413, "request_too_large",
                        f"Request exceeds the maximum allowed number of bytes ({limit[0]}) for {limit[1]}")
        raw = self._body()
        if name == "create" and state.scenarios.drop_create("before") is not None:
            # Lost on the way in: the API never sees it, so nothing is created or answered.
            state.ledger.record_dropped_create("before", None)
            self.close_connection = True
            self.status = "dropped"
            return
        fault = state.scenarios.http_error(name)
        if fault is not None:
            headers = {}
            if fault.get("retry_after") is not None:
                headers["retry-after"] = str(fault["retry_after"])
            kind = ERROR_TYPES.get(fault["status"], "api_error")
            raise Reply(fault["status"], kind, f"Injected {fault['status']} {kind} (emulator scenario)", headers)
        key = self.headers.get("x-api-key")
        auth = self.headers.get("Authorization") or ""
        if not key and not (auth.startswith("Bearer ") and auth[7:].strip()):
            raise Reply(401, "authentication_error", "x-api-key header or Authorization: Bearer is required")
        version = self.headers.get("anthropic-version")
        if version not in validation.KNOWN_VERSIONS:
            raise Reply(400, "invalid_request_error",
                        "anthropic-version: header is required" if not version
                        else f"anthropic-version: unknown version '{version}'")
        if state.scenarios.spend_limit(name) is not None:
            # No retry-after: the real API sends none, as waiting seconds cannot lift the limit.
            raise Reply(429, "rate_limit_error", SPEND_LIMIT_MESSAGE)
        if state.scenarios.credit_balance_too_low(name) is not None:
            raise Reply(400, "invalid_request_error", CREDIT_BALANCE_MESSAGE)
        try:
            with state.lock:
                getattr(self, "_route_" + name)(raw, path_id, url, version)
            held = getattr(self, "_held_answer", None)
            if held is not None:  # slow_create: answered late, without holding up other calls
                self._held_answer = None
                seconds, answer, released = held
                try:
                    released.wait(seconds)
                finally:
                    with state.lock:
                        state.held.discard(released)
                self._send(200, answer)
        except validation.ParamsError as e:
            raise Reply(e.status, e.kind, e.message)
        except batches.NotFound as e:
            raise Reply(404, "not_found_error", f"Not found: {e}")
        except files.NotFound as e:
            raise Reply(404, "not_found_error", str(e))

    # API routes (called with state.lock held) ------------------------------------------
    def _route_create(self, raw, batch_id, url, version) -> None:
        reqs = validation.check_create_body(self._json(raw))
        state = self.state
        if state.scenarios.queue_limit() is not None:
            # Checked under state.lock, so two concurrent creates cannot both slip under the limit.
            queued, _ = batches.queue_size(state)
            refusal = state.scenarios.queue_refusal(queued, len(reqs))
            if refusal is not None:
                limit = refusal["max_requests"]
                state.ledger.record_queue_refusal(queued, len(reqs), limit)
                retry_after = refusal["retry_after"]
                raise Reply(429, "rate_limit_error",
                            QUEUE_LIMIT_MESSAGE.format(limit=limit, queued=queued, requested=len(reqs)),
                            {"retry-after": str(int(retry_after)) if float(retry_after).is_integer()
                             else str(retry_after)})
        record = batches.create(self.state, raw, reqs, version)
        if self.state.scenarios.drop_create("after") is not None:
            self.state.ledger.record_dropped_create("after", record["id"])
            self.close_connection = True  # persisted, but the client never hears back
            return
        slow = self.state.scenarios.slow_create()
        if slow is not None:
            # Registered with the batch, under the lock: a release that sees the batch sees its answer.
            released = threading.Event()
            self.state.held.add(released)
            self._held_answer = (float(slow["seconds"]), batches.view(self.state, record), released)
            return
        self._send(200, batches.view(self.state, record))

    def _route_retrieve(self, raw, batch_id, url, version) -> None:
        self._send(200, batches.view(self.state, batches.get(self.state, batch_id)))

    def _route_list(self, raw, batch_id, url, version) -> None:
        limit, after_id, before_id = pagination.page_args(parse_qs(url.query))
        self._send(200, batches.listing(self.state, limit, after_id, before_id))

    def _route_cancel(self, raw, batch_id, url, version) -> None:
        self._send(200, batches.view(self.state, batches.cancel(self.state, batch_id)))

    def _route_delete(self, raw, batch_id, url, version) -> None:
        self._send(200, batches.delete(self.state, batch_id))

    def _route_messages(self, raw, batch_id, url, version) -> None:
        status, body = processing.run_message(self.state, self._json(raw), version)
        if status != 200:
            raise Reply(status, body["type"], body["message"])
        self._send(200, body)

    def _route_count_tokens(self, raw, batch_id, url, version) -> None:
        status, body = processing.count_tokens(self.state, self._json(raw))
        if status != 200:
            raise Reply(status, body["type"], body["message"])
        self._send(200, body)

    def _route_upload_file(self, raw, path_id, url, version) -> None:
        self._send(200, self.state.files.upload(self.headers.get("Content-Type") or "", raw,
                                                self.state.clock.now()))

    def _route_list_files(self, raw, path_id, url, version) -> None:
        self._send(200, self.state.files.listing(parse_qs(url.query)))

    def _route_retrieve_file(self, raw, file_id, url, version) -> None:
        self._send(200, self.state.files.get(file_id))

    def _route_delete_file(self, raw, file_id, url, version) -> None:
        self._send(200, self.state.files.delete(file_id, self.state.clock.now()))

    def _route_download_file(self, raw, file_id, url, version) -> None:
        self.state.files.download(file_id)

    def _route_list_models(self, raw, path_id, url, version) -> None:
        self._send(200, models.listing(parse_qs(url.query)))

    def _route_retrieve_model(self, raw, model_id, url, version) -> None:
        self._send(200, models.get(model_id))

    def _route_results(self, raw, batch_id, url, version) -> None:
        path = batches.results_path(self.state, batch_id)
        cut = self.state.scenarios.fire("cut_download")
        f = open(path, "rb")  # opened under the lock: an archive later cannot pull it away
        with f:
            size = path.stat().st_size
            self.send_response(200)
            self.send_header("Content-Type", "application/x-jsonl")
            self.send_header("Content-Length", str(size))
            self.send_header("request-id", self.request_id)
            self.end_headers()
            self.state.lock.release()  # stream without blocking everyone else
            try:
                if cut is not None:
                    self.wfile.write(f.read(cut["after_bytes"]))
                    self.wfile.flush()
                    self.close_connection = True
                    self.status = "cut"
                else:
                    self.connection.sendfile(f)
                    self.status = 200
            finally:
                self.state.lock.acquire()

    # control API (no auth) -------------------------------------------------------------
    def _control(self, method: str, url) -> None:
        state = self.state
        raw = self._body()
        path = url.path.rstrip("/")
        try:
            body = self._json(raw)
            if path == "/_emulator/health" and method == "GET":
                return self._send(200, {"status": "ok"})
            if path == "/_emulator/clock":
                if method == "POST":
                    state.clock.advance(float(body.get("advance_seconds", 0)))
                    state.save()
                now = state.clock.now()
                return self._send(200, {"now": rfc3339(now), "epoch_seconds": now,
                                        "time_factor": state.clock.time_factor})
            if path == "/_emulator/config":
                if method == "POST":
                    state.configure(body.get("processing_delay"), body.get("time_factor"))
                return self._send(200, state.config())
            if path == "/_emulator/scenarios":
                if method == "POST":
                    state.scenarios.replace(body.get("scenarios", []))
                elif method == "DELETE":
                    state.scenarios.replace([])
                state.save_if_dirty()
                return self._send(200, {"scenarios": state.scenarios.listing()})
            if path == "/_emulator/scenarios/add" and method == "POST":
                state.scenarios.add(body)
                state.save()
                return self._send(200, {"scenarios": state.scenarios.listing()})
            if path == "/_emulator/release" and method == "POST":
                with state.lock:
                    waiting = list(state.held)
                for event in waiting:
                    event.set()
                return self._send(200, {"released": len(waiting)})
            if path == "/_emulator/queue" and method == "GET":
                with state.lock:
                    return self._send(200, batches.queue_view(state))
            if path == "/_emulator/ledger" and method == "GET":
                with_requests = parse_qs(url.query).get("requests", ["true"])[-1].lower() != "false"
                with state.lock:
                    return self._send(200, batches.ledger_view(state, with_requests))
            raise Reply(404, "not_found_error", f"Not found: {method} {url.path}")
        except Reply as err:
            self._send_error(err)
        except (ScenarioError, ValueError, TypeError, AttributeError) as e:
            self._send_error(Reply(400, "invalid_request_error", str(e)))


class EmulatorHTTPServer(ThreadingHTTPServer):
    request_queue_size = 128
    daemon_threads = True
    block_on_close = False


def make_server(state, port: int) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"state": state})
    server = EmulatorHTTPServer(("127.0.0.1", port), handler)
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    return server
