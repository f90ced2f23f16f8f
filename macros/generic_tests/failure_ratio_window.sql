{#-
  Health over time: of the requests the batch model harvested over its window (the last
  `health_window_runs` runs, default 10, or the last `health_window_hours` hours), the share that
  failed for a reason no retry fixes (`invalid_request_error`, `template_error`, `refused`: the
  measure of `max_failure_ratio`, which judges one run) is at most the model's setting
  `max_failure_ratio_window` (default 0.1), or `max_ratio` when given. A run red on its own stays in
  the window after a green retry, and a slow rise over runs each under `max_failure_ratio` adds up.
  Over the limit it returns the model's one `__health` row (counts per kind, ratio, window); at or
  under it, nothing. Reads `<model>__health`, which every run writes with the model's settings.

      data_tests:
        - dbt_claude_batch.failure_ratio_window
        - dbt_claude_batch.failure_ratio_window:
            name: ticket_triage_health_warn     # a second use needs a name of its own
            arguments: {max_ratio: 0.02}
            config: {severity: warn}
-#}
{% test failure_ratio_window(model, max_ratio=none) %}
  {{ return(adapter.dispatch('test_failure_ratio_window', 'dbt_claude_batch')(model, max_ratio)) }}
{% endtest %}

{% macro default__test_failure_ratio_window(model, max_ratio) %}
  {%- if max_ratio is not none and (max_ratio is not number or max_ratio < 0 or max_ratio > 1) -%}
    {{ exceptions.raise_compiler_error("dbt_claude_batch.failure_ratio_window: max_ratio must be a number from 0 to 1; got "
                                       ~ max_ratio) }}
  {%- endif -%}
  {%- set view = dbt_claude_batch._batch_model_view(model, 'health', 'failure_ratio_window') -%}
  {%- if view is none -%}{{ return(dbt_claude_batch._not_built()) }}{%- endif %}
  select * from {{ view }}
  {%- if max_ratio is none %}
  where over_limit
  {%- else %}
  where n_unfixable > {{ max_ratio }} * n_harvested
  {%- endif %}
{% endmacro %}
