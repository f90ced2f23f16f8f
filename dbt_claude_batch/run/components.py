"""The digests of a request's parts (template, system prompt, params, model, row text, attachments),
recorded with each request so that a plan can say which part of a changed row changed.
"""

from __future__ import annotations

import hashlib
import json
from typing import Mapping

from dbt_claude_batch.base.identifiers import literal
from dbt_claude_batch.state.state import State

COMPONENTS = {"template": "template", "system": "system prompt", "params": "params", "model": "model",
              "text": "prompt text", "attachments": "attachment content"}


def shared_components(source_text: str | None, payload: Mapping, version: int) -> dict[str, str]:
    """Digests of a request's parts outside the row: the template's text, the system prompt and few-shot
    examples, and every other setting that shapes a request (`payload`: Settings.fingerprint_payload())."""
    def digest(value) -> str:
        return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]

    params = {k: v for k, v in payload.items() if k not in ("model", "system", "few_shot")}
    return {"template": digest(source_text), "system": digest([payload.get("system"), payload.get("few_shot")]),
            "params": digest([version, params])}


COMPONENTS_MACRO = "cb_components"


def components_sql(alias: str) -> str:
    """The JSON object of a staged row's component digests (keys of COMPONENTS), for the requests table.

    Staged rows carry only their own digests (text, attachments; the model is a column): the parts
    shared by every row live once, in a temp macro, instead of in each of millions of staged rows.
    """
    return f"{COMPONENTS_MACRO}({alias}.__cb_model, {alias}.__cb_text_digest, {alias}.__cb_attach_digest)"


def define_components(state: State, shared: Mapping[str, str]) -> None:
    """Define the temp macro `components_sql` calls, with this run's shared digests (`shared_components`)."""
    state.run(
        f"create or replace temp macro {COMPONENTS_MACRO}(model, text_digest, attach_digest) as "
        f"json_object('template', {literal(shared.get('template', ''))}, 'system', {literal(shared.get('system', ''))}, "
        f"'params', {literal(shared.get('params', ''))}, 'model', model, 'text', text_digest, "
        "'attachments', attach_digest)"
    )
