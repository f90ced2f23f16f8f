{#-
  Every key of the batch model's current source has a result, a failure, or a request in flight:
  none was silently left out. Fails with one row per key never submitted (status `none` in the
  model's `__keys` view: new in the source since the model last ran, or dropped).

      data_tests:
        - dbt_claude_batch.no_key_dropped
-#}
{% test no_key_dropped(model) %}
  {{ return(adapter.dispatch('test_no_key_dropped', 'dbt_claude_batch')(model)) }}
{% endtest %}

{% macro default__test_no_key_dropped(model) %}
  select * from {{ dbt_claude_batch._batch_model_view(model, 'keys', 'no_key_dropped') }}
  where status = 'none'
{% endmacro %}
