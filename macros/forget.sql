{#-
  Erase one key of a batch model from state and from the tables next to it (results, __compare, __sample): its requests, answers,
  failures, stored prompts, held answers and run notes that name it (the statements of dbt_claude_batch/state/erasure.py's
  ERASURE and SCRUB, kept identical by a unit test; outcomes keep their usage for the bill), and record the erasure in `erased` (no content).

      dbt run-operation dbt_claude_batch.forget --args '{model: ticket_labels, key: {ticket_id: 42}}'

  A composite key gives every column: key: {tenant: acme, ticket_id: 42}. Refused while the key has a
  request in flight. DuckDB keeps deleted bytes in the file's free blocks until it reuses them: to leave
  no byte of the key in the file, run `dbt-claude-batch forget` instead (it also rewrites the file).
-#}
{% macro forget(model, key, schema=none, state_schema='dbt_claude_batch', missing_ok=false) -%}
  {{ return(adapter.dispatch('forget', 'dbt_claude_batch')(model, key, schema, state_schema, missing_ok)) }}
{%- endmacro %}

{% macro default__forget(model, key, schema, state_schema, missing_ok=false) -%}
  {%- set erasure = [
    ('outcomes', 'exists (select 1 from {s}.requests r join {s}.submissions x using (submission_id) where r.model_id = {model} and coalesce(r.key_custom_id, r.custom_id) in ({keys}) and x.batch_id = t.batch_id and r.custom_id = t.custom_id)'),
    ('answers', 't.model_id = {model} and t.custom_id in ({keys})'),
    ('input_aliases', 't.model_id = {model} and t.custom_id in ({keys})'),
    ('prompts', 't.model_id = {model} and t.key_custom_id in ({keys})'),
    ('compare_requests', 't.model_id = {model} and t.custom_id in ({keys})'),
    ('imported_answers', 't.request_hash in (select r.request_hash from {s}.requests r where r.model_id = {model} and coalesce(r.key_custom_id, r.custom_id) in ({keys}))'),
    ('runs', 't.model_id = {model} and (({key_note}) or exists (select 1 from {s}.requests r where r.model_id = {model} and coalesce(r.key_custom_id, r.custom_id) in ({keys}) and contains(t.note, r.key_json)))'),
    ('requests', 't.model_id = {model} and coalesce(t.key_custom_id, t.custom_id) in ({keys})')
  ] -%}
  {%- set scrub = {'outcomes': "custom_id = 'erased-' || left(sha256(t.custom_id), 32), output_text = null, error_message = null, message = null, output_json = null, stop_reason = null, shared_from = null", 'runs': "note = '(this note named a key since erased by forget)'"} -%}
  {%- set model_id = (schema or target.schema) ~ '.' ~ model -%}
  {%- set id_literal = "'" ~ (model_id | replace("'", "''")) ~ "'" -%}
  {%- set st = adapter.quote(state_schema) -%}
  {%- set cols_sql -%}
    select key_columns, coalesce(key_types, '{}') from {{ st }}.models where model_id = {{ id_literal }}
  {%- endset -%}
  {%- set model_row = run_query(cols_sql) -%}
  {%- set found = model_row.columns[0].values() -%}
  {%- if found | length == 0 -%}
    {{ exceptions.raise_compiler_error("No batch model " ~ model_id ~ " in state schema " ~ state_schema
        ~ ": check the model name (and `schema` or `state_schema`); nothing was erased.") }}
  {%- endif -%}
  {%- set columns = fromjson(found[0]) -%}
  {#- an earlier key (before a key change): what the model still holds under it, as erasure.forget finds it -#}
  {%- set earlier = key is mapping and (key.keys() | list | sort) != (columns | sort) -%}
  {%- set shape_items = [] -%}
  {%- for c in (key.keys() | list if key is mapping else []) -%}
    {%- do shape_items.append("'" ~ (c | string | replace("'", "''")) ~ "'") -%}
  {%- endfor -%}
  {%- set shape = "list_sort(json_keys(key_json)) = list_sort([" ~ (shape_items | join(', ') or 'null') ~ "])" -%}
  {%- if key is not mapping or (earlier and run_query("select count(*) from " ~ st ~ ".requests where model_id = "
      ~ id_literal ~ " and " ~ shape).columns[0].values()[0] == 0) -%}
    {{ exceptions.raise_compiler_error("The key given is not the key of " ~ model_id ~ " (" ~ columns | join(', ')
        ~ "), nor one it had before: pass key: {column: value, ...} with every key column; nothing was erased.") }}
  {%- endif -%}
  {%- set conds = [] -%}
  {%- set result_conds = [] -%}
  {%- set note_conds = [] -%}
  {%- set types = fromjson(model_row.columns[1].values()[0]) -%}
  {%- for c, v in key.items() -%}
    {%- set text = "'" ~ (v | string | replace("'", "''")) ~ "'" -%}
    {#- the value as its column's type writes it (07 is the BIGINT 7), as erasure._as_typed gives it -#}
    {%- set kind = none if earlier else types.get(c) -%}
    {%- if kind and (kind | upper) not in ['VARCHAR', 'TEXT', 'STRING'] -%}
      {%- set written = run_query("select try_cast(" ~ text ~ " as " ~ kind ~ ")::varchar").columns[0].values()[0] -%}
      {%- if written is none -%}
        {{ exceptions.raise_compiler_error("key " ~ c ~ "=" ~ (v | string) ~ " is not a " ~ kind ~ ", the type of key column "
            ~ c ~ ": give its value as the source holds it; nothing was erased.") }}
      {%- endif -%}
      {%- set text = "'" ~ (written | replace("'", "''")) ~ "'" -%}
    {%- endif -%}
    {%- do conds.append("json_extract_string(key_json, '$.\"" ~ (c | replace("'", "''")) ~ "\"') = " ~ text) -%}
    {%- do result_conds.append("cast(" ~ adapter.quote(c) ~ " as varchar) = " ~ text) -%}
    {#- what erasure.note_names_key_sql gives: the column and its value as a key_json names them -#}
    {%- set pair = "to_json('" ~ (c | string | replace("'", "''")) ~ "') || ':' || " -%}
    {%- set ors = [] -%}
    {%- for form in [pair ~ text, pair ~ "to_json(" ~ text ~ ")"] -%}
      {%- for end in [",", "}"] -%}
        {%- do ors.append("contains(t.note, " ~ form ~ " || '" ~ end ~ "')") -%}
      {%- endfor -%}
    {%- endfor -%}
    {%- do note_conds.append("(" ~ ors | join(" or ") ~ ")") -%}
  {%- endfor -%}
  {%- if earlier -%}
    {%- do conds.append(shape) -%}
  {%- endif -%}
  {%- set keyed = conds | join(' and ') -%}
  {%- do run_query("create or replace temp table cb_forget as select distinct coalesce(key_custom_id, custom_id) "
      ~ "as custom_id from " ~ st ~ ".requests where model_id = " ~ id_literal ~ " and " ~ keyed
      ~ " union select custom_id from " ~ st ~ ".answers where model_id = " ~ id_literal ~ " and " ~ keyed) -%}
  {%- set keys = "select custom_id from cb_forget" -%}
  {%- set results_sql -%}
    select table_name from information_schema.tables where table_catalog = current_database()
      and table_schema = '{{ (schema or target.schema) | replace("'", "''") }}' and table_type = 'BASE TABLE'
      and (table_name in ('{{ model | replace("'", "''") }}', '{{ model | replace("'", "''") }}__compare', '{{ model | replace("'", "''") }}__sample')
           or starts_with(table_name, '{{ model | replace("'", "''") }}__dbt_tmp'))
  {%- endset -%}
  {#- the results tables hold the current key's rows only -#}
  {%- set results_tables = [] if earlier else run_query(results_sql).columns[0].values() -%}
  {%- if not missing_ok and run_query("select count(*) from cb_forget").columns[0].values()[0] == 0 -%}
    {%- set held = [run_query("select count(*) from " ~ st ~ ".runs t where t.model_id = " ~ id_literal ~ " and "
        ~ note_conds | join(" and ")).columns[0].values()[0]] -%}
    {%- for table in results_tables -%}
      {%- do held.append(run_query("select count(*) from " ~ adapter.quote(schema or target.schema) ~ "."
          ~ adapter.quote(table) ~ " where " ~ result_conds | join(' and ')).columns[0].values()[0]) -%}
    {%- endfor -%}
    {%- if held | sum == 0 -%}
      {%- do run_query("drop table if exists cb_forget") -%}
      {{ exceptions.raise_compiler_error("Nothing is held for key " ~ tojson(key) ~ " of " ~ model_id ~ ": no request, "
          ~ "answer, results row or run note has it. Check the value (key columns: " ~ columns | join(', ') ~ "); a key never "
          ~ "sent has nothing to erase. Pass missing_ok: true when that is expected; nothing was erased.") }}
    {%- endif -%}
  {%- endif -%}
  {%- set flying_sql -%}
    select count(*) from {{ st }}.requests r join {{ st }}.submissions s using (submission_id)
    left join {{ st }}.batches b on b.batch_id = s.batch_id
    where r.model_id = {{ id_literal }} and s.status in ('creating', 'in_doubt', 'submitted')
      and b.harvested_at is null and coalesce(r.key_custom_id, r.custom_id) in ({{ keys }})
  {%- endset -%}
  {%- if run_query(flying_sql).columns[0].values()[0] > 0 -%}
    {{ exceptions.raise_compiler_error("Key " ~ tojson(key) ~ " of " ~ model_id ~ " has a request in flight: wait "
        ~ "for its batch to end, run dbt once to harvest it, then run forget again; nothing was erased.") }}
  {%- endif -%}
  {%- do run_query("insert into " ~ st ~ ".erased (model_id, key_hash, input_hash, row_digest, request_hash, erased_at) "
      ~ "select " ~ id_literal ~ ", sha256(coalesce(key_custom_id, custom_id)), arg_max(input_hash, attempt), "
      ~ "arg_max((components->>'text') || '|' || coalesce(components->>'attachments', ''), attempt), "
      ~ "arg_max(request_hash, attempt), now()::timestamp from "
      ~ st ~ ".requests where model_id = " ~ id_literal ~ " and coalesce(key_custom_id, custom_id) in (" ~ keys
      ~ ") group by coalesce(key_custom_id, custom_id)") -%}
  {#- other keys' rows that name the key's custom_ids (or its parts') as the answer they share, as erasure.REFERENCES -#}
  {%- set references = [('answers', 'shared_from'), ('outcomes', 'shared_from'), ('requests', 'dedup_of')] -%}
  {%- set ids = "select r.custom_id from " ~ st ~ ".requests r where r.model_id = " ~ id_literal
      ~ " and coalesce(r.key_custom_id, r.custom_id) in (" ~ keys ~ ") union " ~ keys -%}
  {%- if not earlier and model in results_tables -%}
    {%- set has_reference = run_query("select count(*) from information_schema.columns where table_catalog = "
        ~ "current_database() and table_schema = '" ~ ((schema or target.schema) | replace("'", "''"))
        ~ "' and table_name = '" ~ (model | replace("'", "''")) ~ "' and column_name = 'shared_from'").columns[0].values()[0] -%}
    {%- if has_reference > 0 -%}
      {%- do run_query("update " ~ adapter.quote(schema or target.schema) ~ "." ~ adapter.quote(model)
          ~ " set shared_from = 'erased-' || left(sha256(shared_from), 32) where shared_from in (" ~ ids ~ ")") -%}
    {%- endif -%}
  {%- endif -%}
  {%- for table, column in references -%}
    {%- do run_query("update " ~ st ~ "." ~ table ~ " t set " ~ column ~ " = 'erased-' || left(sha256(t." ~ column
        ~ "), 32) where t.model_id = " ~ id_literal ~ " and t." ~ column ~ " in (" ~ ids ~ ")") -%}
  {%- endfor -%}
  {%- for table, pred in erasure -%}
    {%- set where = pred | replace("{s}", st) | replace("{model}", id_literal) | replace("{keys}", keys)
        | replace("{key_note}", note_conds | join(" and ")) -%}
    {%- if table in scrub -%}
      {%- do run_query("update " ~ st ~ "." ~ table ~ " t set " ~ scrub[table] ~ " where " ~ where) -%}
    {%- else -%}
      {%- do run_query("delete from " ~ st ~ "." ~ table ~ " t where " ~ where) -%}
    {%- endif -%}
  {%- endfor -%}
  {%- for table in results_tables -%}
    {%- do run_query("delete from " ~ adapter.quote(schema or target.schema) ~ "." ~ adapter.quote(table)
        ~ " where " ~ result_conds | join(' and ')) -%}
  {%- endfor -%}
  {%- do run_query("update " ~ st ~ ".models set quiet_digest = null, results_gap = null where model_id = " ~ id_literal) -%}
  {%- do run_query("drop table if exists cb_forget") -%}
  {{ log("dbt_claude_batch: erased key " ~ tojson(key) ~ " of " ~ model_id ~ " (recorded in " ~ state_schema
         ~ ".erased, no content)", info=true) }}
{%- endmacro %}
