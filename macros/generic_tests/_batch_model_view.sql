{#-
  The view `<model>__<suffix>` that every run of a batch model writes next to it (`__keys`,
  `__failures`, `__batches`), for the package's generic tests: a relation, or a subquery applying
  the test's `where` config to the view's rows (unless `apply_where` is false). Fails with a clear
  message when the view does not exist (the model never ran with this version of dbt-claude-batch);
  returns none then in a `--empty` build, where each test selects no row (`_not_built`).
-#}
{% macro _batch_model_view(model, suffix, test_name, apply_where=true) -%}
  {%- if not execute -%}
    {{ return(model) }}
  {%- endif -%}
  {%- set relation = model if model is not string else dbt_claude_batch._tested_model() -%}
  {%- set view = api.Relation.create(database=relation.database, schema=relation.schema,
                                      identifier=relation.identifier ~ '__' ~ suffix, type='view') -%}
  {%- set exists_sql -%}
    select count(*) from information_schema.tables
    where table_catalog = '{{ view.database | replace("'", "''") }}' and table_schema = '{{ view.schema | replace("'", "''") }}'
      and table_name = '{{ view.identifier | replace("'", "''") }}'
  {%- endset -%}
  {%- if run_query(exists_sql).columns[0].values()[0] == 0 -%}
    {%- if flags.EMPTY -%}
      {#- `dbt build --empty` (CI): the model wrote no state and no views, so there is nothing to test. -#}
      {{ return(none) }}
    {%- endif -%}
    {{ exceptions.raise_compiler_error(
        "dbt_claude_batch." ~ test_name ~ ": " ~ view ~ " does not exist. It is written by every run of the batch "
        ~ "model " ~ relation.identifier ~ ": run the model first (dbt build runs it before its tests); this test "
        ~ "applies to batch models only.") }}
  {%- endif -%}
  {%- set where = config.get('where') if apply_where else none -%}
  {%- if where -%}
    {{ return('(select * from ' ~ view ~ ' where ' ~ where ~ ') dbt_subquery') }}
  {%- endif -%}
  {{ return(view) }}
{%- endmacro %}

{#- With a `where` config dbt hands the test a subquery, not the model: the model is the test's own node's. -#}
{% macro _tested_model() -%}
  {%- set node = graph.nodes[model.attached_node or model.depends_on.nodes[0]] -%}
  {{ return(api.Relation.create(database=node.database, schema=node.schema, identifier=node.alias)) }}
{%- endmacro %}

{#- A test's query in a `--empty` build whose model wrote no views: no row, so the test passes. -#}
{% macro _not_built() -%}
  select 1 as not_built_by_an_empty_build where false
{%- endmacro %}
