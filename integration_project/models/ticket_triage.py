# Classifies every support ticket with Claude through the Message Batches API.
# Settings live in dbt_project.yml under `meta: claude_batch:`; the prompt is prompts/triage.j2.
from dbt_claude_batch import batch_model


def model(dbt, session):
    dbt.config(materialized="incremental", unique_key="ticket_id", incremental_strategy="delete+insert")
    return batch_model(
        dbt,
        session,
        source=dbt.ref("stg_tickets"),
        settings=dbt.config.meta_get("claude_batch"),
    )
