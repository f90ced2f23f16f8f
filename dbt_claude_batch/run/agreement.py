"""Agreement between a held answer and the answer to an edited prompt, and the stratified choice of keys.

Pure logic, no API and no state: `compare.py` calls it for each sampled key.

- Structured output (`output_schema`): one comparison per top-level field of the schema (`properties`;
  any other top-level field either answer carries joins them), the values compared as canonical JSON
  (`exact`) and, for strings, after normalisation too (`normalised`).
- Text: one comparison, field `text`: exact, and after normalisation.

Normalisation lowercases (casefold), drops punctuation and collapses whitespace, so `Billing.` and
` billing` agree while `billing` and `bug` do not.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Mapping

from dbt_claude_batch.base.identifiers import literal

TEXT_FIELD = "text"
WHOLE_FIELD = "(answer)"  # a structured answer that is not a JSON object is compared whole
# Held answers of up to this many characters (normalised) are their own stratum: labels, scores, short
# extractions, where the sample must reach the rare kinds. Longer answers share one stratum.
SHORT_ANSWER_CHARS = 40
_SPACES = re.compile(r"\s+")


def normalise(text: str | None) -> str | None:
    """`text` casefolded, without punctuation (Unicode category P*), whitespace collapsed and trimmed."""
    if text is None:
        return None
    kept = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text.casefold())
    return _SPACES.sub(" ", kept).strip()


@dataclass(frozen=True)
class FieldAgreement:
    """One field of one key: old and new values as text, and whether they agree exactly and normalised."""

    field: str
    old_value: str | None
    new_value: str | None
    exact: bool
    normalised: bool


def text_agreement(old_text: str | None, new_text: str | None) -> list[FieldAgreement]:
    """The comparison of two plain-text answers, as the one field `text`."""
    return [FieldAgreement(TEXT_FIELD, old_text, new_text, old_text == new_text,
                           normalise(old_text) == normalise(new_text))]


def field_agreement(old_json: str | None, new_text: str | None,
                    schema: Mapping[str, Any] | None) -> list[FieldAgreement]:
    """Per top-level field of a structured answer: the held one (`old_json`, JSON text) against the new
    answer's text. A new answer that is not JSON agrees on nothing; its fields read as null."""
    old, new = _parsed(old_json), _parsed(new_text)
    fields = list((schema or {}).get("properties") or {})
    for value in (old, new):
        if isinstance(value, dict):
            fields += [name for name in value if name not in fields]
    if not fields:  # no object on either side: the answers are compared whole
        fields = [WHOLE_FIELD]
    rows = []
    for name in fields:
        a, b = _field(old, name), _field(new, name)
        exact = a is not _MISSING and b is not _MISSING and _canonical(a) == _canonical(b)
        normalised = exact or (isinstance(a, str) and isinstance(b, str) and normalise(a) == normalise(b))
        rows.append(FieldAgreement(name, _as_text(a), _as_text(b), exact, normalised))
    return rows


_NOT_JSON = object()
_MISSING = object()


def _parsed(text: str | None) -> Any:
    if text is None:
        return _NOT_JSON
    try:
        return json.loads(text)
    except ValueError:
        return _NOT_JSON


def _field(value: Any, name: str) -> Any:
    if name == WHOLE_FIELD:
        return _MISSING if value is _NOT_JSON else value
    if isinstance(value, dict) and name in value:
        return value[name]
    return _MISSING


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _as_text(value: Any) -> str | None:
    """A field's value as the table shows it: strings as they are, other JSON values as JSON, absent as null."""
    if value is _MISSING:
        return None
    return value if isinstance(value, str) else _canonical(value)


def stratum_sql(text_expr: str, stop_reason_expr: str) -> str:
    """SQL for a held answer's kind: its stop reason, and its normalised text when that is short
    (a label, a score); longer answers of one stop reason share one stratum."""
    norm = f"trim(regexp_replace(regexp_replace(lower({text_expr}), '[[:punct:]]', ' ', 'g'), '\\s+', ' ', 'g'))"
    return (f"coalesce({stop_reason_expr}, '') || '|' || "
            f"case when length({norm}) <= {SHORT_ANSWER_CHARS} then {norm} else '(long answer)' end")


def stratified_sample_sql(held_sql: str, size: int, seed: str = "") -> str:
    """`size` rows of `held_sql` (with columns `custom_id` and `stratum`), spread over the strata.

    Within a stratum keys are taken in md5(seed || custom_id) order (a deterministic hash spread, not
    the first keys); across strata, round-robin: every kind of answer is reached before any kind
    gives a second key, so rare kinds are in the sample and common kinds fill the rest in proportion.
    """
    order = f"md5({literal(seed)} || custom_id)"
    return (
        f"select * exclude (__cb_turn, __cb_spread) from ("
        f"select *, row_number() over (partition by stratum order by {order}) as __cb_turn, {order} as __cb_spread "
        f"from ({held_sql})) order by __cb_turn, __cb_spread limit {int(size)}"
    )
