-- The loan files: one row per file in documents/ (made by scripts/make_documents.py), PDFs in `pdf`,
-- scans in `scan` (file names relative to attachments_root), plus one application whose document has
-- not arrived (both NULL: a text-only request). A table, not a view: glob() reads the folder relative
-- to the directory dbt runs in.
{{ config(materialized='table') }}
select
    parse_filename(file) as document_id,
    case when lower(file) like '%.pdf' then parse_filename(file) end as pdf,
    case when lower(file) not like '%.pdf' then parse_filename(file) end as scan
from glob('documents/*')
union all
select 'loan-application-0007', null, null
order by document_id
