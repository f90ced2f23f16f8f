"""Validation of batch create bodies (HTTP 400 at create) and of Messages params.

A batch create only checks the envelope (count, custom_id pattern and uniqueness, params is an
object). Problems inside `params` surface when the batch is processed, as `errored` results with
`invalid_request_error`, exactly like the real API; the synchronous /v1/messages reports the same
problems as HTTP errors.
"""

from __future__ import annotations

import re

from . import media, pricing, tokens

MAX_REQUESTS = 100_000
MAX_BATCH_BYTES = 256 * 1024 * 1024
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
VERSION_NEW = "2026-10-21"
VERSION_OLD = "2023-06-01"
KNOWN_VERSIONS = (VERSION_NEW, VERSION_OLD)
SAMPLING_PARAMS = ("temperature", "top_p", "top_k")
# The body fields of a Messages request in SDK 2.14, beta ones included (the emulator does not track
# beta headers); any other key is refused as the real API refuses it. SAMPLING_PARAMS are judged below.
MESSAGES_PARAMS = frozenset((
    "model", "max_tokens", "messages", "system", "metadata", "stop_sequences", "stream", "tools",
    "tool_choice", "thinking", "output_config", "service_tier", "speed", "cache_control", "container",
    "diagnostics", "inference_geo", "user_profile_id", "workspace_id", "billing_policy", "compaction",
    "context_management", "fallback_credit_token", "fallbacks", "mcp_servers", "thread", *SAMPLING_PARAMS))
EMPTY_TEXT = "messages: text content blocks must be non-empty"
BLANK_TEXT = "messages: text content blocks must contain non-whitespace text"


class ParamsError(Exception):
    """A request the API refuses: `kind` is the error type, `status` the HTTP status."""

    def __init__(self, message: str, kind: str = "invalid_request_error", status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.status = status


def check_create_body(body: object) -> list[dict]:
    """The `requests` list of a create body, or ParamsError (HTTP 400)."""
    if not isinstance(body, dict):
        raise ParamsError("body: Input should be a valid dictionary")
    reqs = body.get("requests")
    if not isinstance(reqs, list):
        raise ParamsError("requests: Field required")
    if not reqs:
        raise ParamsError("requests: List should have at least 1 item after validation, not 0")
    if len(reqs) > MAX_REQUESTS:
        raise ParamsError(
            f"requests: List should have at most {MAX_REQUESTS} items after validation, not {len(reqs)}")
    seen: set[str] = set()
    for i, item in enumerate(reqs):
        if not isinstance(item, dict):
            raise ParamsError(f"requests.{i}: Input should be a valid dictionary")
        cid = item.get("custom_id")
        if not isinstance(cid, str):
            raise ParamsError(f"requests.{i}.custom_id: Field required")
        if not CUSTOM_ID.match(cid):
            raise ParamsError(
                f"requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
        if cid in seen:
            raise ParamsError(f"requests.{i}.custom_id: Duplicate custom_id '{cid}' in batch; "
                              "custom_id values must be unique within a batch")
        seen.add(cid)
        if not isinstance(item.get("params"), dict):
            raise ParamsError(f"requests.{i}.params: Field required")
    return reqs


def check_params(params: dict, version: str, in_batch: bool, files=None,
                 count_only: bool = False) -> tuple[dict, int]:
    """Validate Messages params; return them with their media blocks read (media.annotate) and the
    input token count, or raise ParamsError. `files` resolves file sources; `count_only` (for
    count_tokens) lets a prompt over the context limit through."""
    model = params.get("model")
    if not isinstance(model, str) or not model:
        raise ParamsError("model: Field required")
    if "max_tokens" not in params:
        raise ParamsError("max_tokens: Field required")
    max_tokens = params["max_tokens"]
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise ParamsError("max_tokens: Input should be greater than or equal to 1")
    messages = params.get("messages")
    if not isinstance(messages, list):
        raise ParamsError("messages: Field required")
    if not messages:
        raise ParamsError("messages: at least one message is required")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise ParamsError(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        content = message.get("content")
        if not isinstance(content, (str, list)):
            raise ParamsError(f"messages.{i}.content: Field required")
        if isinstance(content, list) and not content:
            raise ParamsError(f"messages.{i}: all messages must have non-empty content")
        if i < len(messages) - 1 or message.get("role") == "user":  # a final assistant turn may be empty
            _check_text(content)
    if messages[0].get("role") != "user":
        raise ParamsError("messages: first message must use the \"user\" role")
    for name in params:
        if name not in MESSAGES_PARAMS:
            raise ParamsError(f"{name}: Extra inputs are not permitted")
    if params.get("stream") is True:
        message = ("stream: Streaming is not supported in the Message Batches API"
                   if in_batch else "stream: the emulator does not stream; send stream=false")
        raise ParamsError(message)
    if version == VERSION_NEW:
        for name in SAMPLING_PARAMS:
            if name in params:
                raise ParamsError(f"{name}: Extra inputs are not permitted "
                                  f"(`{name}` is not supported by anthropic-version {VERSION_NEW})")
    stops = params.get("stop_sequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)):
        raise ParamsError("stop_sequences: Input should be a valid list of strings")
    fmt = (params.get("output_config") or {}).get("format") if isinstance(params.get("output_config"), dict) else None
    if fmt is not None:
        if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
            raise ParamsError("output_config.format: expected {\"type\": \"json_schema\", \"schema\": {...}}")
    if pricing.base_model(model) is None:
        raise ParamsError(f"model: {model}", kind="not_found_error", status=404)
    try:
        prepared = media.annotate(params, files)
    except media.ParamsError as e:
        raise ParamsError(e.message)
    n = tokens.input_tokens(prepared)
    if n > pricing.CONTEXT_LIMIT and not count_only:
        raise ParamsError(f"prompt is too long: {n} tokens > {pricing.CONTEXT_LIMIT} maximum")
    return prepared, n


def _check_text(content: str | list) -> None:
    """Refuse empty or whitespace-only text, as a string or in any text block."""
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
    for block in blocks:
        if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
            if not block["text"]:
                raise ParamsError(EMPTY_TEXT)
            if not block["text"].strip():
                raise ParamsError(BLANK_TEXT)
