"""The state as dbt nodes of the package (sources listed, documented, in the catalog and lineage, testable),
and the results YAML macro naming every column of a real results table."""

from __future__ import annotations

import json

import yaml

from dbt_harness import items

from dbt_claude_batch.state.views import STATE_VIEWS

FAST = {"wait_seconds": 60, "poll_interval_seconds": 0.05}
SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "string", "enum": ["alpha", "beta"]}, "score": {"type": "number"}},
    "required": ["label", "score"],
    "additionalProperties": False,
}
SOURCES = [f"source.dbt_claude_batch.dbt_claude_batch.{name}" for name in STATE_VIEWS]
SINGULAR = """-- depends_on: {{ ref('items_batch') }}
select * from {{ source('dbt_claude_batch', 'all_batches') }} where not reconciled
"""


def test_state_sources_are_documented_listed_and_testable_and_results_yaml_names_every_column(project):
    project.load_table("items", items(6))
    project.write("prompts/item.j2", "Labels: alpha, beta\nItem {{ id }}: {{ body }}")
    project.configure(replace=False, output_schema=SCHEMA, output_columns={"label": "VARCHAR", "score": "DOUBLE"},
                      **FAST)
    project.write("tests/state_batches_reconciled.sql", SINGULAR)
    project.run()

    printed = project.dbt("-q", "run-operation", "dbt_claude_batch.results_yaml",
                          "--args", "{model_name: items_batch}").stdout
    (model,) = yaml.safe_load(printed)["models"]
    table = [r[0] for r in project.query(
        "select column_name from information_schema.columns where table_schema = 'main' "
        "and table_name = 'items_batch' order by ordinal_position")]
    assert [c["name"] for c in model["columns"]] == table
    assert table[:3] == ["id", "custom_id", "output_text"] and {"label", "score"} <= set(table)
    assert all(c["description"] and "not described" not in c["description"] for c in model["columns"])
    project.write("models/items_batch.yml", printed)

    listed = project.dbt("-q", "ls", "--resource-type", "source", "--resource-type", "test",
                         "-s", "source:dbt_claude_batch+", "--output", "json", "--output-keys", "unique_id").stdout
    ids = {json.loads(line)["unique_id"] for line in listed.splitlines() if line.startswith("{")}
    assert set(SOURCES) <= ids and any(i.startswith("test.test_project.state_batches_reconciled") for i in ids)

    project.dbt("docs", "generate")
    manifest = json.loads((project.root / "target" / "manifest.json").read_text())
    catalog = json.loads((project.root / "target" / "catalog.json").read_text())
    for uid in SOURCES:
        described = {name: c["description"] for name, c in manifest["sources"][uid]["columns"].items()}
        assert set(catalog["sources"][uid]["columns"]) == set(described), uid
        assert all(described.values()), uid
    assert set(manifest["nodes"]["model.test_project.items_batch"]["columns"]) == set(table)
    (singular,) = [u for u in manifest["nodes"] if u.startswith("test.test_project.state_batches_reconciled")]
    assert set(manifest["parent_map"][singular]) == {SOURCES[STATE_VIEWS.index("all_batches")], "model.test_project.items_batch"}
    health = {n["test_metadata"]["name"] for n in manifest["nodes"].values()
              if n["resource_type"] == "test" and (n.get("test_metadata") or {}).get("namespace") == "dbt_claude_batch"}
    assert health == {"no_key_dropped", "failure_ratio", "batches_reconciled", "no_failure_needs_you",
                      "failure_ratio_window"}
