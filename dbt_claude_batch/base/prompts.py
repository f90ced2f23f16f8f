"""Prompt templates and the request body built for each row.

A template is a Jinja2 file rendered in a sandbox with StrictUndefined, over the row's columns. Row
values are passed as data and never parsed as a template, so ``{{ }}`` inside a row is sent verbatim.
A NULL column renders as empty text, with or without filters (a template can still test it:
``{% if x is none %}``).
A prompt that renders *blank* (empty, or only whitespace as Python's ``str.isspace`` has it) is not sent:
the API refuses empty and whitespace-only text, so the row is a failure with error_type ``empty_prompt`` instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import traceback
from pathlib import Path
from typing import Any, Iterable, Mapping

import jinja2
import jinja2.meta
from jinja2.sandbox import SandboxedEnvironment

from dbt_claude_batch.base.errors import RowTemplateError, TemplateError
from dbt_claude_batch.base.identifiers import literal, quote
from dbt_claude_batch.base.settings import Settings
from dbt_claude_batch.base.template_sql import WHITESPACE as _WHITESPACE, compile_template

# Bumped whenever the shape of the request built from the same inputs changes, so every row is resubmitted.
# 2: NULL renders as empty text instead of "None".
REQUEST_FORMAT_VERSION = 2


def _finalize(value: Any) -> Any:
    return "" if value is None else value


class _Null(str):
    """A NULL column inside a template: empty text under every filter, `~`, slice and method (a bare
    ``{{ x }}`` already rendered NULL as '', so those hashes stay), yet ``x is none`` and ``x == none`` hold,
    and ``tojson`` still gives ``null``. Plain None would turn into the text 'None' under a filter."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return other is None or str.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    __hash__ = str.__hash__


_NULL = _Null()


def _is_none(value: Any) -> bool:
    return value is None or isinstance(value, _Null)


_ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False,
                            finalize=_finalize)
_ENV.tests["none"] = _is_none
_TOJSON = _ENV.filters["tojson"]


@jinja2.pass_eval_context
def _tojson(eval_ctx, value: Any, indent: int | None = None) -> Any:
    return _TOJSON(eval_ctx, None if isinstance(value, _Null) else value, indent)


_ENV.filters["tojson"] = _tojson


_EMPTY_PROMPT = ("The prompt for key {key} is empty (it renders to nothing but whitespace: the columns it uses are "
                 "NULL or blank): give the row some text or filter it out in the staging model; it was not sent, "
                 "and is rendered again when the row or the template changes.")


def is_blank(text: str) -> bool:
    """Whether a prompt is empty or only whitespace (the API refuses such text; it is never sent)."""
    return not text.strip()


def blank_sql(expr: str) -> str:
    """`is_blank` as a DuckDB expression over a VARCHAR expression."""
    # A full match of the class stops at the first other character: 20x faster than trim() with a set.
    return f"regexp_full_match({expr}, {literal('[' + _WHITESPACE + ']*')})"


def empty_prompt_message(key_json: str) -> str:
    """The `error_message` of a row whose prompt is blank (a failure with error_type empty_prompt)."""
    return _EMPTY_PROMPT.format(key=key_json)


def empty_prompt_message_sql(key_expr: str) -> str:
    """`empty_prompt_message` as a DuckDB expression over the key's JSON text."""
    before, after = _EMPTY_PROMPT.split("{key}")
    return f"({literal(before)} || {key_expr} || {literal(after)})"


def resolve_template_path(path: str, project_dir: str | None) -> Path:
    """Template paths are relative to the dbt project directory (where dbt_project.yml lives)."""
    candidate = Path(path)
    if candidate.is_absolute():
        return candidate
    return Path(project_dir or os.getcwd()) / candidate


class Prompt:
    """Turns a row into the text of the user message, from a template file or a prompt column."""

    def __init__(self, settings: Settings, project_dir: str | None, column_types: Mapping[str, str] | None = None):
        self.settings = settings
        self.project_dir = project_dir
        self.column_types = dict(column_types or {})  # the source's DuckDB types, for `sql_expression`
        self.source_text: str | None = None
        self._template: jinja2.Template | None = None
        if settings.prompt_template is not None:
            path = resolve_template_path(settings.prompt_template, project_dir)
            try:
                self.source_text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise TemplateError(
                    f"Prompt template {path} cannot be read: check `prompt_template` (paths are relative "
                    f"to the dbt project directory).\n{exc}"
                ) from None
            try:
                ast = _ENV.parse(self.source_text)
                self._template = _ENV.from_string(self.source_text)
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateError(
                    f"Prompt template {path} has a Jinja syntax error on line {exc.lineno}: fix the template.\n"
                    f"{exc.message}"
                ) from None
            self.columns = sorted(jinja2.meta.find_undeclared_variables(ast))
            self.path = path
            self._ast: jinja2.nodes.Template | None = ast
        else:
            self.columns = [settings.prompt_column]
            self.path = None
            self._ast = None

    @property
    def input_columns(self) -> list[str]:
        """The columns a request is made of: the template's, then the attachments' (see `attachments`)."""
        return list(dict.fromkeys([*self.columns, *(a["column"] for a in self.settings.attachments)]))

    def check_columns(self, available: Iterable[str]) -> None:
        """Fail before anything is submitted when the prompt names a column the source lacks."""
        available = list(available)
        absent = [a["column"] for a in self.settings.attachments if a["column"] not in available]
        if absent:
            raise TemplateError(
                f"Setting `attachments` names column(s) {', '.join(absent)} that the source does not have: fix the "
                f"column names in `attachments` or add the column(s) to the staging model; nothing was submitted.\n"
                f"Source columns: {', '.join(available)}"
            )
        missing = [c for c in self.columns if c not in available]
        if not missing:
            return
        if self.path is not None:
            raise TemplateError(
                f"Prompt template {self.path} uses column(s) {', '.join(missing)} that the source does not have: "
                f"fix the template or add the column(s) to the staging model; nothing was submitted.\n"
                f"Source columns: {', '.join(available)}"
            )
        raise TemplateError(
            f"Prompt column {missing[0]!r} is not in the source: fix `prompt_column`; nothing was submitted.\n"
            f"Source columns: {', '.join(available)}"
        )

    def render(self, row: Mapping[str, Any]) -> str:
        """The prompt text for one row; raises RowTemplateError (with the template line) if rendering fails."""
        if self._template is None:
            value = row[self.settings.prompt_column]
            return "" if value is None else str(value)
        try:
            return self._template.render(**{c: _NULL if row[c] is None else row[c] for c in self.columns})
        except Exception as exc:  # noqa: BLE001 - any error a template raises is that row's failure
            frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == "<template>"]
            line = frames[-1].lineno if frames else getattr(exc, "lineno", None)
            raise RowTemplateError(str(self.path), line, f"{type(exc).__name__}: {exc}") from None

    def sql_expression(self) -> str | None:
        """The prompt text as a DuckDB expression over the row's columns, when SQL renders it exactly as
        Jinja does (base/template_sql.py: the shapes and types it compiles; NULL for a row outside its
        guards). Else None (Python renders every row)."""
        if self._ast is not None:
            return compile_template(self._ast, self.column_types)
        column = self.settings.prompt_column
        if self.column_types.get(column, "").upper() not in _EXACT_TYPES:
            return None
        return f"coalesce(cast({quote(column)} as varchar), '')"

    def fingerprint(self) -> str:
        """A digest of everything outside the row that shapes a request."""
        payload = {
            "format": REQUEST_FORMAT_VERSION,
            "template": self.source_text,
            "settings": self.settings.fingerprint_payload(),
        }
        return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


# Types whose text in DuckDB (`cast(x as varchar)`) is exactly Python's `str(x)`.
_EXACT_TYPES = {"VARCHAR", "TEXT", "STRING", "BIGINT", "INTEGER", "SMALLINT", "TINYINT", "HUGEINT", "UBIGINT",
                "UINTEGER", "USMALLINT", "UTINYINT", "UHUGEINT"}


def hash_request(params: dict) -> str:
    """The request hash: sha256 of a request's params as canonical JSON. Equal hashes prove the same
    request (the SQL spool pass computes the same digest in DuckDB); a part of a split prompt or cut
    document has its own."""
    return hashlib.sha256(canonical_json(params).encode("utf-8")).hexdigest()


def request_params(settings: Settings, prompt_text: str, model: str | None,
                   max_tokens: int | None = None) -> dict[str, Any]:
    """The Messages API body for one row.

    With prompt caching, the shared prefix (system prompt, then few-shot examples) carries one
    `cache_control` breakpoint on its last block, identical in every request, as the batch
    documentation advises.
    """
    cache = {"type": "ephemeral", "ttl": settings.cache_ttl} if settings.prompt_caching else None
    messages: list[dict[str, Any]] = []
    for example in settings.few_shot or ():
        messages.append({"role": "user", "content": [{"type": "text", "text": example["user"]}]})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": example["assistant"]}]})
    if cache and messages:
        messages[-1]["content"][-1]["cache_control"] = cache
    messages.append({"role": "user", "content": prompt_text})
    params: dict[str, Any] = {
        "model": model or settings.model,
        "max_tokens": max_tokens or settings.max_tokens,
        "messages": messages,
    }
    if settings.system:
        if cache:
            block: dict[str, Any] = {"type": "text", "text": settings.system}
            if not settings.few_shot:
                block["cache_control"] = cache
            params["system"] = [block]
        else:
            params["system"] = settings.system
    if settings.stop_sequences:
        params["stop_sequences"] = list(settings.stop_sequences)
    if settings.output_schema:
        params["output_config"] = {"format": {"type": "json_schema", "schema": dict(settings.output_schema)}}
    params.update(settings.params)
    return params


_PROMPT_MARK = "\x00dbt_claude_batch prompt\x00"
_MODEL_MARK = "\x00dbt_claude_batch model\x00"
# DuckDB's to_json writes these control characters as \u00XX with upper-case hex, Python with lower
# case: a prompt holding one is rendered by Python instead.
_UPPER_HEX_ESCAPED = "[\x0b\x0e\x0f\x1a-\x1f]"


def params_sql(settings: Settings, prompt_expr: str, model_expr: str) -> str | None:
    """A DuckDB expression for ``canonical_json(request_params(settings, prompt, model))``, byte for byte,
    so its sha256 is the request hash Python computes. NULL for a row SQL cannot build exactly (Python
    renders that row); None when these settings cannot be built in SQL at all."""
    text = canonical_json(request_params(settings, _PROMPT_MARK, _MODEL_MARK))
    marks = {json.dumps(_PROMPT_MARK, ensure_ascii=False): f"to_json({prompt_expr})::varchar",
             json.dumps(_MODEL_MARK, ensure_ascii=False): f"to_json({model_expr})::varchar"}
    if any(text.count(mark) != 1 for mark in marks):
        return None
    pieces, rest = [], text
    while rest:
        found = min(((rest.find(m), m) for m in marks if m in rest), default=None)
        if found is None:
            pieces.append(literal(rest))
            break
        at, mark = found
        pieces += [literal(rest[:at]), marks[mark]]
        rest = rest[at + len(mark):]
    return (f"case when {model_expr} <> '' and not regexp_matches({prompt_expr}, {literal(_UPPER_HEX_ESCAPED)}) "
            f"then {' || '.join(pieces)} end")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
