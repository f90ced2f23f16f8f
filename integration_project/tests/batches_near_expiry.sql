-- Batches of any batch model still in flight 20 hours after creation: the API expires their unfinished
-- requests at 24 h. Reads the package's source over the shared state; runs after the models that write it.
-- depends_on: {{ ref('ticket_triage') }}
-- depends_on: {{ ref('ticket_extraction') }}
{{ config(severity='warn') }}
select dbt_model, batch_id, created_at, expires_at, n_processing
from {{ source('dbt_claude_batch', 'all_batches') }}
where harvested_at is null and kind = 'batch'
  and created_at < (current_timestamp at time zone 'UTC') - interval 20 hour
