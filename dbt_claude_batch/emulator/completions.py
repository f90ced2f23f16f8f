"""Deterministic fake answers that depend on the request's content.

The answer is computed from the LAST user message's text (string content, or its text blocks
joined with newlines) and the system prompt:
  * a line `Labels: a, b, c` (case-insensitive prefix) in the user text or the system prompt makes
    the answer the first label, in list order, that occurs as a whole word (case-insensitive) in
    the user text with the Labels line removed; if none occurs, the LAST label;
  * a label may carry synonyms in parentheses, `Labels: billing (invoice, charge), bug (error,
    crash), feature_request (feature, would love), other`: the label matches if its name or any
    synonym occurs as a whole word or phrase (case-insensitive, multi-word synonyms allowed), and the
    answer is the label name only. Labels without parentheses behave as above;
  * otherwise the answer is `digest:` + the first 16 hex chars of sha256(user text, UTF-8);
  * directives in the user text: `[[emulator:words=N]]` answers N deterministic words,
    `[[emulator:refuse]]` refuses (stop_reason "refusal"), `[[emulator:bad_json]]` returns text
    that is not JSON when a json_schema output format is requested;
  * `output_config.format = {"type": "json_schema", "schema": ...}` wraps the answer in JSON that
    is valid for the schema (strings carry the answer, enums pick the matching value);
  * image and document blocks in the last user message (read by media.annotate) name themselves
    after the answer, in order: `<answer> | pdf:<pages>p:<sha12> image:<w>x<h>:<sha12> text:<words>`;
    label matching also reads the documents' text (PDF text, text documents);
  * `stop_sequences` cut before the first occurrence; `max_tokens` truncates to max_tokens*4 bytes.
"""

from __future__ import annotations

import hashlib
import json
import re

from . import tokens

WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
         "india", "juliet", "kilo", "lima", "mike", "november", "oscar", "papa")
_LABELS = re.compile(r"^\s*labels\s*:(.*)$", re.IGNORECASE | re.MULTILINE)
_WORDS_DIRECTIVE = re.compile(r"\[\[emulator:words=(\d+)\]\]")
REFUSAL_TEXT = "I can't help with that request."
BAD_JSON_TEXT = '{"answer": "this is not valid JSON'
_SYNONYMS = re.compile(r"^(?P<name>[^()]*?)\s*\((?P<synonyms>[^()]*)\)$")


def _split_top_level(spec: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, current = [], 0, []
    for ch in spec:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


def parse_labels(spec: str) -> list[tuple[str, list[str]]]:
    """`billing (invoice, charge), bug, other` -> [("billing", ["invoice", "charge"]), ("bug", []), ...]."""
    labels = []
    for part in _split_top_level(spec):
        part = part.strip()
        if not part:
            continue
        m = _SYNONYMS.match(part)
        if m and m.group("name").strip():
            synonyms = [s.strip() for s in m.group("synonyms").split(",") if s.strip()]
            labels.append((m.group("name").strip(), synonyms))
        else:
            labels.append((part, []))
    return labels


def _labels(text: str) -> tuple[list[tuple[str, list[str]]], str] | None:
    m = _LABELS.search(text)
    if not m:
        return None
    labels = parse_labels(m.group(1))
    return (labels, _LABELS.sub("", text)) if labels else None


def _matches(phrase: str, text: str) -> bool:
    return re.search(r"(?<!\w)" + re.escape(phrase) + r"(?!\w)", text, re.IGNORECASE) is not None


def choose_label(labels: list[tuple[str, list[str]]], text: str) -> str:
    for name, synonyms in labels:
        if any(_matches(phrase, text) for phrase in (name, *synonyms)):
            return name
    return labels[-1][0]


def attachments(params: dict) -> tuple[list[str], str]:
    """The labels of the last user message's media blocks, in order, and their text joined."""
    blocks = tokens.as_blocks(tokens.last_user_content(params))
    read = [b for b in blocks if getattr(b, "media_label", "")]
    return [b.media_label for b in read], "\n".join(b.media_text for b in read if b.media_text)


def base_answer(user_text: str, system_text: str, documents: str = "") -> str:
    """The answer before attachments, formatting, stop sequences and max_tokens; labels are
    matched in the user text and the `documents` text."""
    m = _WORDS_DIRECTIVE.search(user_text)
    if m:
        seed = hashlib.sha256(user_text.encode("utf-8")).digest()
        n = int(m.group(1))
        return " ".join(WORDS[(seed[i % len(seed)] + i) % len(WORDS)] for i in range(n))
    found = _labels(user_text)
    if found is not None:
        labels, rest = found
        return choose_label(labels, rest + "\n" + documents)
    found = _labels(system_text)
    if found is not None:
        return choose_label(found[0], user_text + "\n" + documents)
    return "digest:" + hashlib.sha256(user_text.encode("utf-8")).hexdigest()[:16]


def value_for_schema(schema: object, answer: str, user_text: str, root: dict | None = None,
                     choice: str | None = None) -> object:
    """A minimal value valid for `schema` whose strings carry `answer`; an enum takes `choice`
    (default `answer`) or an option named in `user_text`."""
    root = root if root is not None else (schema if isinstance(schema, dict) else {})
    choice = answer if choice is None else choice
    if not isinstance(schema, dict):
        return answer
    if "$ref" in schema and isinstance(schema["$ref"], str) and schema["$ref"].startswith("#/"):
        target: object = root
        for part in schema["$ref"][2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return value_for_schema(target, answer, user_text, root, choice)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        options = schema["enum"]
        if choice in options:
            return choice
        strings = [o for o in options if isinstance(o, str)]
        for option in strings:
            if option.lower() == choice.lower() or _matches(option, user_text):
                return option
        return options[0]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return value_for_schema(schema[key][0], answer, user_text, root, choice)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties") or {}
        names = list(props) + [r for r in schema.get("required") or [] if r not in props]
        return {name: value_for_schema(props.get(name, {"type": "string"}), answer, user_text, root, choice)
                for name in names}
    if kind == "array":
        count = int(schema.get("minItems") or 0)
        return [value_for_schema(schema.get("items") or {}, answer, user_text, root, choice)
                for _ in range(count)]
    if kind == "integer":
        return int(schema.get("minimum", 0))
    if kind == "number":
        return schema.get("minimum", 0)
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return answer


def _truncate_to_tokens(text: str, limit: int) -> str:
    raw = text.encode("utf-8")[: limit * 4]
    return raw.decode("utf-8", errors="ignore")


def complete(params: dict) -> dict:
    """The generated content: text, stop_reason, stop_sequence, stop_details, output_tokens."""
    user_text = tokens.last_user_text(params)
    system_text = tokens.plain_text(params.get("system"))
    if "[[emulator:refuse]]" in user_text:
        text = REFUSAL_TEXT
        return {"text": text, "stop_reason": "refusal", "stop_sequence": None,
                "stop_details": {"type": "refusal", "category": None,
                                 "explanation": "The emulator refuses requests carrying [[emulator:refuse]]."},
                "output_tokens": tokens.tokens(text)}
    labels, documents = attachments(params)
    choice = base_answer(user_text, system_text, documents)
    answer = choice + " | " + " ".join(labels) if labels else choice
    output_config = params.get("output_config") if isinstance(params.get("output_config"), dict) else {}
    fmt = output_config.get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        if "[[emulator:bad_json]]" in user_text:
            text = BAD_JSON_TEXT
        else:
            text = json.dumps(value_for_schema(fmt.get("schema") or {}, answer, user_text + "\n" + documents,
                                               choice=choice),
                              ensure_ascii=False, separators=(", ", ": "))
    else:
        text = answer
    max_tokens = params["max_tokens"]
    stop_reason, stop_sequence = "end_turn", None
    cut = None
    for seq in params.get("stop_sequences") or []:
        if seq:
            pos = text.find(seq)
            if pos >= 0 and (cut is None or pos < cut[0]):
                cut = (pos, seq)
    if cut is not None and tokens.tokens(text[: cut[0]]) <= max_tokens:
        text, stop_reason, stop_sequence = text[: cut[0]], "stop_sequence", cut[1]
    elif tokens.tokens(text) > max_tokens:
        text, stop_reason = _truncate_to_tokens(text, max_tokens), "max_tokens"
    return {"text": text, "stop_reason": stop_reason, "stop_sequence": stop_sequence,
            "stop_details": None, "output_tokens": tokens.tokens(text)}


def message_id(seed: str) -> str:
    digest = hashlib.sha256(seed.encode("utf-8")).hexdigest()
    return "msg_" + digest[:24]


def build_message(params: dict, usage: dict, msg_id: str) -> dict:
    """A complete Message object (every field the API description requires)."""
    out = complete(params)
    usage = dict(usage)
    usage["output_tokens"] = out["output_tokens"]
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": params["model"],
        "content": [{"type": "text", "text": out["text"], "citations": None}],
        "stop_reason": out["stop_reason"],
        "stop_sequence": out["stop_sequence"],
        "stop_details": out["stop_details"],
        "container": None,
        "usage": usage,
    }
