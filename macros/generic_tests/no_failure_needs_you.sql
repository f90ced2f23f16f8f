{#-
  No key of the batch model's current source has a latest attempt that failed in a way no run
  retries by itself (`retried_automatically` false in the model's `__failures` view: an invalid
  request, a template error, a refusal, a truncation at `max_tokens_cap`, or `max_attempts` spent).
  Fails with those rows of `__failures`, whose `next_action` says what to do. Requests you canceled
  on purpose (`claude_batch_cancel`) are not counted unless `include_canceled_by_user: true`.

      data_tests:
        - dbt_claude_batch.no_failure_needs_you:
            config: {warn_if: ">0", error_if: ">10"}
-#}
{% test no_failure_needs_you(model, include_canceled_by_user=false) %}
  {{ return(adapter.dispatch('test_no_failure_needs_you', 'dbt_claude_batch')(model, include_canceled_by_user)) }}
{% endtest %}

{% macro default__test_no_failure_needs_you(model, include_canceled_by_user) %}
  {%- set keys = dbt_claude_batch._batch_model_view(model, 'keys', 'no_failure_needs_you', apply_where=false) -%}
  {%- if keys is none -%}{{ return(dbt_claude_batch._not_built()) }}{%- endif %}
  select * from {{ dbt_claude_batch._batch_model_view(model, 'failures', 'no_failure_needs_you') }}
  where not retried_automatically
    {%- if not include_canceled_by_user %} and not (kind = 'canceled' and canceled_by_user){% endif %}
    and custom_id in (select custom_id from {{ keys }})
{% endmacro %}
