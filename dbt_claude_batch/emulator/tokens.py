"""Reading a Messages request's text, and the emulator's token estimate.

Token estimate (documented in the README):
    tokens(text) = ceil(len(text.encode("utf-8")) / 4)      (so at least 1 for any non-empty text)
    input_tokens = sum(tokens(each system text block))
                 + sum over messages of (4 + sum(tokens(each content block)))
                 + tokens(json of `tools`) if tools are given
    output_tokens = tokens(answer text)
A string `system` or string message `content` is one block. An image or document block read by
media.annotate counts its media tokens (media.py); any other non-text block (tool_result, ...)
counts as the compact JSON of the block.
"""

from __future__ import annotations

import hashlib
import json

MESSAGE_OVERHEAD = 4


def tokens(text: str) -> int:
    if not text:
        return 0
    return (len(text.encode("utf-8")) + 3) // 4


def canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def params_hash(params: object) -> str:
    """sha256 of the canonical JSON (sort_keys, compact separators) of a request's params."""
    return hashlib.sha256(canonical_json(params).encode("utf-8")).hexdigest()


def as_blocks(content: object) -> list:
    """A system prompt or message content as a list of blocks."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [b for b in content if isinstance(b, dict)]
    return []


def block_text(block: dict) -> str:
    """The text a block contributes to the prompt (text blocks) or its JSON otherwise."""
    if block.get("type") == "text" and isinstance(block.get("text"), str):
        return block["text"]
    stripped = {k: v for k, v in block.items() if k != "cache_control"}
    return canonical_json(stripped)


def block_tokens(block: dict) -> int:
    """Tokens of one block: its media tokens when media.annotate read it, else tokens(block_text)."""
    media_tokens = getattr(block, "media_tokens", None)
    return media_tokens if media_tokens is not None else tokens(block_text(block))


def plain_text(content: object) -> str:
    """Text of the text blocks only, joined with newlines (what the fake model reads)."""
    parts = [b["text"] for b in as_blocks(content)
             if b.get("type") == "text" and isinstance(b.get("text"), str)]
    return "\n".join(parts)


def last_user_content(params: dict) -> object:
    for message in reversed(params.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return message.get("content")
    return None


def last_user_text(params: dict) -> str:
    return plain_text(last_user_content(params))


def prompt_segments(params: dict) -> list[tuple[int, dict]]:
    """Every prompt block in order, with the tokens it adds (message overhead on its first block)."""
    segments: list[tuple[int, dict]] = []
    for block in as_blocks(params.get("system")):
        segments.append((block_tokens(block), block))
    for message in params.get("messages") or []:
        if not isinstance(message, dict):
            continue
        blocks = as_blocks(message.get("content"))
        if not blocks:
            segments.append((MESSAGE_OVERHEAD, {"type": "text", "text": ""}))
            continue
        for i, block in enumerate(blocks):
            segments.append((block_tokens(block) + (MESSAGE_OVERHEAD if i == 0 else 0), block))
    return segments


def input_tokens(params: dict) -> int:
    total = sum(n for n, _ in prompt_segments(params))
    if params.get("tools"):
        total += tokens(canonical_json(params["tools"]))
    return total
