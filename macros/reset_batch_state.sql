{#-
  Forget everything dbt-claude-batch knows about one batch model, so its next run submits every row
  again (and pays for it again). `--full-refresh` does not do this: it rebuilds the results table from
  the stored results for free.

      dbt run-operation dbt_claude_batch.reset_batch_state --args '{model: ticket_triage}'

  Refuses while the model has batches in flight (cancel them first with
  `dbt run -s <model> --vars '{claude_batch_cancel: true}'`, or pass `force: true`), and fails when the
  model has no state (a misspelt name), listing the models that do.
-#}
{% macro reset_batch_state(model, schema=none, state_schema='dbt_claude_batch', force=false) -%}
  {{ return(adapter.dispatch('reset_batch_state', 'dbt_claude_batch')(model, schema, state_schema, force)) }}
{%- endmacro %}

{% macro default__reset_batch_state(model, schema, state_schema, force) -%}
  {#- A model's state is keyed by schema.identifier, without the catalog (see python_model.py). -#}
  {%- set model_id = (schema or target.schema) ~ '.' ~ model -%}
  {%- set id_literal = "'" ~ (model_id | replace("'", "''")) ~ "'" -%}
  {%- set st = adapter.quote(state_schema) -%}
  {%- set known_sql -%}
    select string_agg(model_id, ', ' order by model_id) from {{ st }}.models
  {%- endset -%}
  {%- set has_sql -%}
    select (select count(*) from {{ st }}.models where model_id = {{ id_literal }})
         + (select count(*) from {{ st }}.requests where model_id = {{ id_literal }})
  {%- endset -%}
  {%- set schema_sql -%}
    select count(*) from information_schema.tables where table_schema = '{{ state_schema | replace("'", "''") }}'
      and table_name in ('models', 'requests') and table_catalog = current_database()
  {%- endset -%}
  {%- set has_tables = run_query(schema_sql).columns[0].values()[0] == 2 -%}
  {%- if not has_tables or run_query(has_sql).columns[0].values()[0] == 0 -%}
    {{ exceptions.raise_compiler_error(
        "No state for model " ~ model_id ~ " in " ~ state_schema ~ ": check the model name (and `schema` or "
        ~ "`state_schema` if they are not the defaults); nothing was reset. Models with state: "
        ~ ((run_query(known_sql).columns[0].values()[0] if has_tables else none) or "none")) }}
  {%- endif -%}
  {%- set in_flight_sql -%}
    select count(*) from {{ st }}.batches where model_id = {{ id_literal }} and harvested_at is null
  {%- endset -%}
  {%- set in_flight = run_query(in_flight_sql).columns[0].values()[0] -%}
  {%- if in_flight > 0 and not force -%}
    {{ exceptions.raise_compiler_error(
        model_id ~ " has " ~ in_flight ~ " batch(es) in flight: cancel them first (dbt run -s " ~ model
        ~ " --vars '{claude_batch_cancel: true}') or pass force: true to abandon their results.") }}
  {%- endif -%}
  {%- do run_query("delete from " ~ st ~ ".foreign_batches where submission_id in (select submission_id from "
                   ~ st ~ ".submissions where model_id = " ~ id_literal ~ ")") -%}
  {%- set present_sql -%}
    select table_name from information_schema.tables where table_schema = '{{ state_schema | replace("'", "''") }}'
      and table_catalog = current_database()
  {%- endset -%}
  {%- set present = run_query(present_sql).columns[0].values() -%}
  {#- `answers` is absent from state an older version wrote and no run has upgraded yet. -#}
  {#- `upload_uses`: its files are deleted by the next run of any model once no other model uses them. -#}
  {%- for table in ['answers', 'outcomes', 'requests', 'batches', 'submissions', 'input_aliases', 'upload_uses', 'runs',
                  'prompts', 'daily_spend', 'models'] -%}
    {%- if table in present -%}
      {%- do run_query("delete from " ~ st ~ "." ~ table ~ " where model_id = " ~ id_literal) -%}
    {%- endif -%}
  {%- endfor -%}
  {{ log("dbt_claude_batch: forgot all state of " ~ model_id ~ "; its next run submits every row again", info=true) }}
{%- endmacro %}
