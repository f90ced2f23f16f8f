-- Cleaned support tickets: trimmed text, lower-cased email. One row per ticket.
select
    ticket_id,
    created_at,
    lower(trim(customer_email)) as customer_email,
    trim(channel) as channel,
    trim(subject) as subject,
    trim(body) as body,
    trim(priority) as priority
from {{ ref('tickets') }}
