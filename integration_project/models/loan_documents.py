# Extracts fields from the loan files listed by stg_loan_documents: each row's PDF or scan is sent with
# the prompt as a document or image block, and the answer is JSON flattened into typed columns.
# Settings live in dbt_project.yml under `meta: claude_batch:`; the prompt is prompts/loan_document.j2.
from dbt_claude_batch import batch_model


def model(dbt, session):
    dbt.config(materialized="incremental", unique_key="document_id", incremental_strategy="delete+insert")
    return batch_model(
        dbt,
        session,
        source=dbt.ref("stg_loan_documents"),
        settings=dbt.config.meta_get("claude_batch"),
    )
