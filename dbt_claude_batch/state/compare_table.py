"""The `<model>__compare` table next to a model: what a comparison run writes, and the summary people read.

One row per (comparison run, key, field): a prompt edit's answer for a sampled key against the answer
held under the old request. The run (run/compare.py) appends to it; the `compare` command and the
run's log line read the summary here, with one query, so both say the same thing.
"""

from __future__ import annotations

from typing import Any

from dbt_claude_batch.base.identifiers import literal, quote

SUFFIX = "__compare"

# Columns after the key columns, in table order, with their types.
COLUMNS = (
    ("compare_id", "varchar"), ("compared_at", "timestamp"), ("via", "varchar"), ("custom_id", "varchar"),
    ("key_json", "varchar"), ("stratum", "varchar"), ("request_changed", "boolean"),
    ("old_request_hash", "varchar"), ("new_request_hash", "varchar"), ("result_type", "varchar"),
    ("error_type", "varchar"), ("error_message", "varchar"), ("field_no", "integer"), ("field", "varchar"),
    ("old_value", "varchar"), ("new_value", "varchar"), ("exact_match", "boolean"),
    ("normalised_match", "boolean"), ("old_output", "varchar"), ("new_output", "varchar"),
    ("input_tokens", "bigint"), ("output_tokens", "bigint"), ("cost_usd", "double"),
    ("held_keys", "bigint"), ("sampled_keys", "bigint"), ("changed_keys", "bigint"),
    ("sample_cost_usd", "double"), ("estimated_full_rerun_usd", "double"), ("estimate_basis", "varchar"),
)


def create_sql(relation: str, key_types: dict[str, str]) -> str:
    """The table, if it is not there yet: the key columns first, then `COLUMNS`."""
    columns = [f"{quote(name)} {ctype}" for name, ctype in key_types.items()]
    columns += [f"{name} {ctype}" for name, ctype in COLUMNS]
    return f"create table if not exists {relation} ({', '.join(columns)})"


def latest_compare_id(con, relation: str) -> str | None:
    """The newest comparison run in the table."""
    rows = con.execute(f"select compare_id from {relation} order by compared_at desc, compare_id limit 1").fetchall()
    return rows[0][0] if rows else None


def summary(con, relation: str, compare_id: str, changed_limit: int = 20) -> dict[str, Any]:
    """One comparison run: its counts and costs, agreement per field over the keys answered anew, and
    up to `changed_limit` rows whose new value differs (old and new side by side)."""
    run = f"from {relation} where compare_id = {literal(compare_id)}"
    head = con.execute(
        f"""select any_value(compared_at)::varchar, any_value(via), any_value(held_keys), any_value(sampled_keys),
                   any_value(changed_keys),
                   count(distinct custom_id) filter (where request_changed and result_type = 'succeeded'),
                   count(distinct custom_id) filter (where request_changed and result_type <> 'succeeded'),
                   any_value(sample_cost_usd), any_value(estimated_full_rerun_usd), any_value(estimate_basis)
            {run}"""
    ).fetchall()[0]
    fields = con.execute(
        f"""select field, count(*), count(*) filter (where exact_match), count(*) filter (where normalised_match)
            {run} and request_changed and result_type = 'succeeded' group by field order by min(field_no), field"""
    ).fetchall()
    changed = con.execute(
        f"""select key_json, field, old_value, new_value, normalised_match
            {run} and request_changed and result_type = 'succeeded' and not exact_match
            order by custom_id, field_no limit {int(changed_limit)}"""
    ).fetchall()
    failed = con.execute(
        f"""select distinct key_json, result_type, error_type, error_message
            {run} and request_changed and result_type <> 'succeeded' order by key_json limit {int(changed_limit)}"""
    ).fetchall()
    return {
        "compare_id": compare_id, "compared_at": head[0], "via": head[1], "held_keys": head[2],
        "sampled_keys": head[3], "changed_keys": head[4], "answered": head[5], "failed": head[6],
        "sample_cost_usd": head[7], "estimated_full_rerun_usd": head[8], "estimate_basis": head[9],
        "fields": [{"field": f, "compared": n, "exact": e, "normalised": m,
                    "exact_rate": e / n if n else None, "normalised_rate": m / n if n else None}
                   for f, n, e, m in fields],
        "changed_rows": [{"key": k, "field": f, "old": o, "new": n, "normalised_match": m}
                         for k, f, o, n, m in changed],
        "failed_rows": [{"key": k, "result_type": r, "error_type": t, "error_message": m} for k, r, t, m in failed],
    }


def summary_text(doc: dict[str, Any]) -> str:
    """The summary as a few readable lines."""
    lines = [
        f"comparison {doc['compare_id']} ({doc['via']}, {doc['compared_at']}): {doc['sampled_keys']} of "
        f"{doc['held_keys']} keys with held answers sampled, {doc['changed_keys']} with a changed request, "
        f"{doc['answered']} answered anew" + (f", {doc['failed']} failed" if doc["failed"] else ""),
    ]
    for f in doc["fields"]:
        lines.append(f"  {f['field']}: {f['exact']}/{f['compared']} exact ({_pct(f['exact_rate'])}), "
                     f"{f['normalised']}/{f['compared']} normalised ({_pct(f['normalised_rate'])})")
    lines.append(f"  the sample cost ${doc['sample_cost_usd'] or 0:.6f}; re-running every changed key would cost "
                 f"about ${doc['estimated_full_rerun_usd'] or 0:.4f} ({doc['estimate_basis']})")
    if doc["changed_rows"]:
        lines.append("  changed (old -> new):")
        lines += [f"    {r['key']} {r['field']}: {_short(r['old'])!r} -> {_short(r['new'])!r}"
                  + (" (same normalised)" if r["normalised_match"] else "") for r in doc["changed_rows"]]
    for r in doc["failed_rows"]:
        lines.append(f"    {r['key']}: {r['result_type']} {r['error_type'] or ''} {_short(r['error_message'])}")
    return "\n".join(lines)


def _pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate:.0%}"


def _short(text: str | None, limit: int = 80) -> str | None:
    return text if text is None or len(text) <= limit else text[:limit - 1] + "…"
