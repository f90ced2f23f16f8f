{#-
  Every harvested batch of the batch model reconciled: its request counts, the requests submitted and
  the lines of its results file agree (`reconciled` in the model's `__batches` view). Fails with one
  row per batch that did not, `reconcile_note` saying how. The keys of such a batch are resubmitted
  as `missing` by themselves; to accept a past batch, narrow the test with `where`, e.g.
  `config: {where: "harvested_at > '2026-03-01'"}`.

      data_tests:
        - dbt_claude_batch.batches_reconciled
-#}
{% test batches_reconciled(model) %}
  {{ return(adapter.dispatch('test_batches_reconciled', 'dbt_claude_batch')(model)) }}
{% endtest %}

{% macro default__test_batches_reconciled(model) %}
  {%- set view = dbt_claude_batch._batch_model_view(model, 'batches', 'batches_reconciled') -%}
  {%- if view is none -%}{{ return(dbt_claude_batch._not_built()) }}{%- endif %}
  select * from {{ view }}
  where harvested_at is not null and not coalesce(reconciled, false)
{% endmacro %}
