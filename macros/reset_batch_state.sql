{#-
  Forget everything dbt-claude-batch knows about one batch model, so its next run submits every row
  again (and pays for it again). `--full-refresh` does not do this: it rebuilds the results table from
  the stored results for free.

      dbt run-operation dbt_claude_batch.reset_batch_state --args '{model: ticket_triage}'

  Refuses while the model has batches in flight (cancel them first with
  `dbt run -s <model> --vars '{claude_batch_cancel: true}'`, or pass `force: true`).
-#}
{% macro reset_batch_state(model, schema=none, state_schema='dbt_claude_batch', force=false) -%}
  {{ return(adapter.dispatch('reset_batch_state', 'dbt_claude_batch')(model, schema, state_schema, force)) }}
{%- endmacro %}

{% macro default__reset_batch_state(model, schema, state_schema, force) -%}
  {%- set model_id = target.database ~ '.' ~ (schema or target.schema) ~ '.' ~ model -%}
  {%- set st = adapter.quote(state_schema) -%}
  {%- set in_flight_sql -%}
    select count(*) from {{ st }}.batches where model_id = '{{ model_id | replace("'", "''") }}' and harvested_at is null
  {%- endset -%}
  {%- set in_flight = run_query(in_flight_sql).columns[0].values()[0] -%}
  {%- if in_flight > 0 and not force -%}
    {{ exceptions.raise_compiler_error(
        model_id ~ " has " ~ in_flight ~ " batch(es) in flight: cancel them first (dbt run -s " ~ model
        ~ " --vars '{claude_batch_cancel: true}') or pass force: true to abandon their results.") }}
  {%- endif -%}
  {%- for table in ['outcomes', 'requests', 'batches', 'submissions', 'input_aliases', 'models'] -%}
    {%- do run_query("delete from " ~ st ~ "." ~ table ~ " where model_id = '" ~ (model_id | replace("'", "''")) ~ "'") -%}
  {%- endfor -%}
  {{ log("dbt_claude_batch: forgot all state of " ~ model_id ~ "; its next run submits every row again", info=true) }}
{%- endmacro %}
