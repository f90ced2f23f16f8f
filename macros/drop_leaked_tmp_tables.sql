{#-
  dbt-duckdb leaves a real `<model>__dbt_tmp<timestamp>` table behind after every incremental Python
  model run. Wire this as a `transaction: false` post-hook of each batch model to drop them at once:

      +post-hook:
        - sql: "{{ dbt_claude_batch.drop_leaked_tmp_tables(this) }}"
          transaction: false
-#}
{% macro drop_leaked_tmp_tables(relation) -%}
  {{ return(adapter.dispatch('drop_leaked_tmp_tables', 'dbt_claude_batch')(relation)) }}
{%- endmacro %}

{% macro default__drop_leaked_tmp_tables(relation) -%}
  {%- if execute -%}
    {%- set pattern = relation.identifier ~ '__dbt_tmp' -%}
    {%- set query -%}
      select table_name from information_schema.tables
      where table_catalog = '{{ relation.database }}' and table_schema = '{{ relation.schema }}'
        and starts_with(table_name, '{{ pattern }}')
    {%- endset -%}
    {%- set leaked = run_query(query).columns[0].values() -%}
    {%- for name in leaked -%}
      {%- set tmp = api.Relation.create(database=relation.database, schema=relation.schema, identifier=name, type='table') -%}
      {% do adapter.drop_relation(tmp) %}
    {%- endfor -%}
  {%- endif -%}
  select 1
{%- endmacro %}
