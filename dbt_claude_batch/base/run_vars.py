"""The dbt vars a batch model reads: `--vars` on the command line over `vars:` in dbt_project.yml.

Python models cannot call `var()`, so these come from dbt's invocation flags and the project file:
top-level `vars:` and those under the project's own name count (dbt's scoping); `--vars` wins.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Sequence

from dbt_claude_batch.base.errors import ConfigError
from dbt_claude_batch.base.identifiers import literal

VAR_CANCEL = "claude_batch_cancel"
VAR_RESUBMIT_CANCELED = "claude_batch_resubmit_canceled"
VAR_SAMPLE = "claude_batch_sample"
VAR_RERUN_KEYS = "claude_batch_rerun_keys"
VAR_STATE_SCHEMA = "claude_batch_state_schema"  # read by the package's sources and macros, not here
VAR_COMPARE = "claude_batch_compare"
VAR_PLAN = "claude_batch_plan"
VAR_ALLOW_REBUY = "claude_batch_allow_rebuy"
VAR_COMPARE_VIA = "claude_batch_compare_via"
VAR_GONE_BATCHES = "claude_batch_gone_batches"
COMPARE_ROUTES = ("sync", "batch")
KNOWN_VARS = (VAR_CANCEL, VAR_RESUBMIT_CANCELED, VAR_SAMPLE, VAR_RERUN_KEYS, VAR_STATE_SCHEMA, VAR_COMPARE,
              VAR_PLAN, VAR_ALLOW_REBUY, VAR_COMPARE_VIA, VAR_GONE_BATCHES)


@dataclass(frozen=True)
class RunVars:
    cancel: bool = False
    resubmit_canceled: bool = False
    sample_size: int = 0
    rerun_keys: tuple = ()
    compare_size: int = 0
    plan: bool = False
    allow_rebuy: bool = False
    compare_via: str = "sync"
    gone_batches: tuple = ()

    @classmethod
    def from_dbt(cls, identifier: str) -> "RunVars":
        return cls.parse({**_project_vars(), **_cli_vars()}, identifier)

    @classmethod
    def parse(cls, values: dict[str, Any], identifier: str) -> "RunVars":
        _refuse_unknown(values)
        sample = values.get(VAR_SAMPLE) or 0
        if isinstance(sample, bool) or not isinstance(sample, int) or sample < 0:
            raise ConfigError(f"Var `{VAR_SAMPLE}` must be a number of rows, e.g. --vars '{{{VAR_SAMPLE}: 20}}'.")
        compare = values.get(VAR_COMPARE) or 0
        if isinstance(compare, bool) or not isinstance(compare, int) or compare < 0:
            raise ConfigError(f"Var `{VAR_COMPARE}` must be a number of keys to compare, e.g. --vars "
                              f"'{{{VAR_COMPARE}: 50}}'; nothing was sent.")
        if compare and sample:
            raise ConfigError(f"Vars `{VAR_SAMPLE}` and `{VAR_COMPARE}` cannot be given together: run one, then "
                              "the other; nothing was sent.")
        via = values.get(VAR_COMPARE_VIA) or "sync"
        if via not in COMPARE_ROUTES:
            raise ConfigError(f"Var `{VAR_COMPARE_VIA}` is {via!r}: set it to sync (full price, answers now) or batch "
                              "(half price, collected by a later run); nothing was sent.")
        keys = values.get(VAR_RERUN_KEYS) or ()
        if isinstance(keys, dict):  # {model_name: [keys]}: only for the models named
            keys = keys.get(identifier) or ()
        if not isinstance(keys, (list, tuple)):
            keys = (keys,)
        gone = values.get(VAR_GONE_BATCHES) or ()
        if isinstance(gone, str):
            gone = (gone,)
        if not isinstance(gone, (list, tuple)) or not all(isinstance(b, str) for b in gone):
            raise ConfigError(f"Var `{VAR_GONE_BATCHES}` must list batch ids, e.g. --vars "
                              f"'{{{VAR_GONE_BATCHES}: [msgbatch_01...]}}'; nothing was sent.")
        return cls(
            cancel=_names_model(values.get(VAR_CANCEL), identifier),
            resubmit_canceled=_names_model(values.get(VAR_RESUBMIT_CANCELED), identifier),
            sample_size=sample,
            rerun_keys=tuple(keys),
            compare_size=compare,
            plan=_names_model(values.get(VAR_PLAN), identifier),
            allow_rebuy=_names_model(values.get(VAR_ALLOW_REBUY), identifier),
            compare_via=via,
            gone_batches=tuple(gone),
        )

    def any(self) -> bool:
        """True when a var asks this run for something beyond the usual."""
        return bool(self.cancel or self.resubmit_canceled or self.sample_size or self.rerun_keys or self.compare_size
                    or self.plan or self.allow_rebuy or self.gone_batches)

    def missing_rerun_keys(self, cursor, staged: str, key: Sequence[str]) -> list:
        """Keys named in `claude_batch_rerun_keys` that the source does not have (to warn about)."""
        missing = []
        for item in self.rerun_keys:
            one = RunVars(rerun_keys=(item,)).rerun_filter(key)
            if not cursor.execute(f"select count(*) from {staged} st where {one}").fetchall()[0][0]:
                missing.append(item)
        return missing

    def rerun_filter(self, key: Sequence[str]) -> str | None:
        """SQL over the staged table selecting the keys to re-run now (by their values as text)."""
        if not self.rerun_keys:
            return None
        clauses = []
        for item in self.rerun_keys:
            values = list(item) if isinstance(item, (list, tuple)) else [item]
            if len(values) != len(key):
                raise ConfigError(
                    f"Var `{VAR_RERUN_KEYS}` item {item!r} must give {len(key)} value(s), one per key column "
                    f"({', '.join(key)})."
                )
            parts = [
                f"json_extract_string(st.__cb_key_json, {literal('$.' + column)}) = {literal(str(value))}"
                for column, value in zip(key, values)
            ]
            clauses.append("(" + " and ".join(parts) + ")")
        return "(" + " or ".join(clauses) + ")"


def _refuse_unknown(values: dict[str, Any]) -> None:
    """A misspelt var of this package would be ignored silently (a cancel that cancels nothing): refuse it."""
    unknown = sorted(k for k in values if isinstance(k, str) and k.startswith("claude_batch_") and k not in KNOWN_VARS)
    if not unknown:
        return
    name = unknown[0]
    close = difflib.get_close_matches(name, KNOWN_VARS, n=1, cutoff=0.6)
    hint = f"did you mean `{close[0]}`? Fix" if close else f"the known ones are {', '.join(KNOWN_VARS)}: fix or remove"
    raise ConfigError(f"Unknown var `{name}`: {hint} it in --vars or the `vars:` of dbt_project.yml; nothing was "
                      f"submitted.\nKnown vars: {', '.join(KNOWN_VARS)}")


def _names_model(value: Any, identifier: str) -> bool:
    """A var that is true for every batch model, or names this one (string or list)."""
    if value is True or (isinstance(value, str) and value.lower() in ("true", "all", "*")):
        return True
    if isinstance(value, str):
        return value == identifier
    if isinstance(value, (list, tuple)):
        return identifier in value
    return False


def _project_vars() -> dict:
    """`vars:` of the dbt project being run: global ones, then those scoped to the project itself."""
    try:
        import yaml
        from dbt.flags import get_flags

        project_dir = getattr(get_flags(), "PROJECT_DIR", None) or "."
        with open(f"{project_dir}/dbt_project.yml", encoding="utf-8") as handle:
            project = yaml.safe_load(handle) or {}
    except Exception:  # noqa: BLE001 - outside a dbt invocation, or no project file: no project vars
        return {}
    return project_vars(project)


def project_vars(project: dict) -> dict:
    """The `claude_batch_` vars of a parsed dbt_project.yml: global ones, then those scoped to the project
    (whose own name, say `claude_batch_demo`, is a scope and not a var)."""
    found = project.get("vars") or {}
    if not isinstance(found, dict):
        return {}
    name = project.get("name")
    scoped = found.get(name) if isinstance(found.get(name), dict) else {}
    return {**{k: v for k, v in found.items() if str(k).startswith("claude_batch_") and k != name},
            **{k: v for k, v in scoped.items() if str(k).startswith("claude_batch_")}}


def _cli_vars() -> dict:
    try:
        from dbt.flags import get_flags

        return dict(getattr(get_flags(), "VARS", None) or {})
    except Exception:  # noqa: BLE001 - outside a dbt invocation there are simply no vars
        return {}
