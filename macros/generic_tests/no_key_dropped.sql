{#-
  Every key of the batch model's current source has a row in the results table, a failure, or a
  request in flight: none was silently left out. Fails with one row per key that has none of them:
  never submitted (status `none` in the model's `__keys` view: new in the source since the model last
  ran, or dropped), or answered but missing from the results table (a row deleted by hand; the next
  run restores it from state at no cost). `in_results_table` says which. A key erased by `forget` and
  not sent since (status `erased`) is not dropped: it is left out on purpose.

      data_tests:
        - dbt_claude_batch.no_key_dropped
-#}
{% test no_key_dropped(model) %}
  {{ return(adapter.dispatch('test_no_key_dropped', 'dbt_claude_batch')(model)) }}
{% endtest %}

{% macro default__test_no_key_dropped(model) %}
  {#- The results table itself, not state: a row deleted from it is a key dropped. -#}
  {%- set results = model if model is not string else dbt_claude_batch._tested_model() -%}
  {%- set view = dbt_claude_batch._batch_model_view(model, 'keys', 'no_key_dropped') -%}
  {%- if view is none -%}{{ return(dbt_claude_batch._not_built()) }}{%- endif %}
  select k.*, false as in_results_table
  from (select * from {{ view }}) k
  where k.status not in ('failure', 'in_flight', 'erased')
    and not exists (select 1 from {{ results }} r where r.custom_id = k.custom_id)
{% endmacro %}
