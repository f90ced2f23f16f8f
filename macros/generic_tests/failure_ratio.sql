{#-
  The share of the source's keys whose latest attempt failed is at most `max_ratio` (default 0.1),
  counted over the keys whose latest attempt finished (result or failure; in flight and never
  submitted ones are left out, and so are keys cancelled on purpose with `claude_batch_cancel`). `kinds` narrows the failures counted to these failure kinds
  (`errored`, `expired`, `canceled`, `missing`, `truncated`, `invalid_output`, `refused`) or error
  types (`api_error`, `overloaded_error`, `invalid_request_error`, `template_error`, `empty_prompt`, `attachment_error`,
  `attachment_missing`, ...).
  Over the ratio it returns the failed keys (with `n_failed`, `n_finished`, `failure_ratio`), so
  `warn_if` / `error_if` can also set absolute limits; at or under it, nothing.

      data_tests:
        - dbt_claude_batch.failure_ratio:
            arguments: {max_ratio: 0.05, kinds: [invalid_request_error, refused]}
-#}
{% test failure_ratio(model, max_ratio=0.1, kinds=none) %}
  {{ return(adapter.dispatch('test_failure_ratio', 'dbt_claude_batch')(model, max_ratio, kinds)) }}
{% endtest %}

{% macro default__test_failure_ratio(model, max_ratio, kinds) %}
  {%- if max_ratio is not number or max_ratio < 0 or max_ratio > 1 -%}
    {{ exceptions.raise_compiler_error("dbt_claude_batch.failure_ratio: max_ratio must be a number from 0 to 1; got "
                                       ~ max_ratio) }}
  {%- endif -%}
  {%- if kinds is string -%}{%- set kinds = [kinds] -%}{%- endif -%}
  {%- set listed = [] -%}
  {%- for k in kinds or [] -%}
    {%- do listed.append("'" ~ (k | string | replace("'", "''")) ~ "'") -%}
  {%- endfor -%}
  {%- set view = dbt_claude_batch._batch_model_view(model, 'keys', 'failure_ratio') -%}
  {%- if view is none -%}{{ return(dbt_claude_batch._not_built()) }}{%- endif %}
  with cb_finished as (
      select * from {{ view }}
      {#- keys cancelled on purpose (claude_batch_cancel) wait for the user, like no_failure_needs_you says #}
      where status in ('result', 'failure') and not coalesce(canceled_by_user, false)),
  cb_failed as (
      select * from cb_finished where status = 'failure'
      {%- if listed %} and (kind in ({{ listed | join(', ') }}) or error_type in ({{ listed | join(', ') }})){% endif %}),
  cb_ratio as (
      select (select count(*) from cb_failed) as n_failed, (select count(*) from cb_finished) as n_finished)
  select f.*, r.n_failed, r.n_finished, r.n_failed / r.n_finished as failure_ratio
  from cb_failed f cross join cb_ratio r
  where r.n_failed > {{ max_ratio }} * r.n_finished
{% endmacro %}
