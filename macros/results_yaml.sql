{#-
  Prints a ready properties YAML block for a batch model's results table: every column described,
  the package's health tests and `unique`/`not_null` on custom_id. Copy it next to the model.

      dbt -q run-operation dbt_claude_batch.results_yaml --args '{model_name: ticket_triage}'
      dbt -q run-operation dbt_claude_batch.results_yaml \
          --args '{model_name: ticket_extraction, key_columns: [ticket_id], output_columns: {category: VARCHAR}}'

  `key_columns` default to the ones recorded in state for `<schema>.<model_name>` (`schema` defaults to
  the target's, `state_schema` to the var `claude_batch_state_schema` or `dbt_claude_batch`);
  `output_columns` (a mapping of name to type, or a list of names) default to those of the built
  table. Once the table is built, its columns are the ones listed, in its order. Returns the YAML text.
-#}
{% macro results_yaml(model_name, key_columns=none, output_columns=none, schema=none, state_schema=none) -%}
  {{ return(adapter.dispatch('results_yaml', 'dbt_claude_batch')(model_name, key_columns, output_columns, schema,
                                                                  state_schema)) }}
{%- endmacro %}

{% macro default__results_yaml(model_name, key_columns, output_columns, schema, state_schema) -%}
  {%- if not execute -%}
    {{ return('') }}
  {%- endif -%}
  {%- set schema = schema or target.schema -%}
  {%- set state_schema = state_schema or var('claude_batch_state_schema', 'dbt_claude_batch') -%}
  {%- set q = "'" -%}
  {%- if key_columns is none -%}
    {%- set model_id = schema ~ '.' ~ model_name -%}
    {%- set has_state = run_query(
        "select count(*) from information_schema.tables where table_catalog = current_database() "
        ~ "and table_schema = " ~ q ~ state_schema | replace(q, q ~ q) ~ q ~ " and table_name = 'models'") -%}
    {%- set found = run_query(
        "select key_columns from " ~ adapter.quote(state_schema) ~ ".models where model_id = "
        ~ q ~ model_id | replace(q, q ~ q) ~ q).rows if has_state.rows[0][0] else [] -%}
    {%- if not found -%}
      {{ exceptions.raise_compiler_error(
          "dbt_claude_batch.results_yaml: no state for model " ~ model_id ~ " in schema " ~ state_schema
          ~ ": run the model once, or pass key_columns (and output_columns).") }}
    {%- endif -%}
    {%- set key_columns = fromjson(found[0][0]) -%}
  {%- elif key_columns is string -%}
    {%- set key_columns = [key_columns] -%}
  {%- endif -%}

  {#- the built table, when there is one: its columns are the ones to describe, in its order -#}
  {%- set built = run_query(
      "select column_name, data_type from information_schema.columns where table_catalog = current_database() "
      ~ "and table_schema = " ~ q ~ schema | replace(q, q ~ q) ~ q ~ " and table_name = "
      ~ q ~ model_name | replace(q, q ~ q) ~ q ~ " order by ordinal_position") -%}
  {%- set built_names = built.columns[0].values() | list -%}
  {%- set flattened = [] -%}
  {%- if output_columns is mapping -%}
    {%- for name, type in output_columns.items() -%}{%- do flattened.append([name, type]) -%}{%- endfor -%}
  {%- elif output_columns is string -%}
    {%- do flattened.append([output_columns, none]) -%}
  {%- elif output_columns is not none -%}
    {%- for name in output_columns -%}{%- do flattened.append([name, none]) -%}{%- endfor -%}
  {%- elif 'output_json' in built_names and 'stop_reason' in built_names -%}
    {#- the flattened output_columns sit between output_json and stop_reason -#}
    {%- for row in built.rows[built_names.index('output_json') + 1:built_names.index('stop_reason')] -%}
      {%- do flattened.append([row[0], row[1]]) -%}
    {%- endfor -%}
  {%- endif -%}

  {%- set columns = [] -%}
  {%- for key in key_columns -%}
    {%- do columns.append({'name': key, 'description':
        "Key column of the source (setting `key`), with its type in the source: one row per key.",
        'data_tests': ['not_null']}) -%}
  {%- endfor -%}
  {%- do columns.append({'name': 'custom_id', 'description':
      "The key as the requests' custom_id (the key's text, or a sanitized text with a hash suffix); joins "
      ~ "to `" ~ model_name ~ "__failures`, `__keys` and the state.", 'data_tests': ['unique', 'not_null']}) -%}
  {%- do columns.append({'name': 'output_text', 'description':
      "The answer: the text blocks of Claude's message joined; for a split prompt the parts' answers, joined by a "
      ~ "blank line (`split_join: concat`) or as a JSON array (`json_array`)."}) -%}
  {%- do columns.append({'name': 'output_json', 'description':
      "The answer parsed as JSON and valid for `output_schema` (a DuckDB JSON value); null without "
      ~ "`output_schema`."}) -%}
  {%- for name, type in flattened -%}
    {%- do columns.append({'name': name, 'description':
        "Top-level field `" ~ name ~ "` of output_json" ~ (", as " ~ type if type else "")
        ~ " (setting `output_columns`); null when the field is absent or does not convert."}) -%}
  {%- endfor -%}
  {%- set described = [
      ['stop_reason', "Why Claude stopped (`end_turn`, `stop_sequence`, `tool_use`, ...); an answer cut off at "
                      ~ "max_tokens is a failure of kind `truncated`, never a result."],
      ['answered_model', "The model that answered, as the API named it (e.g. `claude-haiku-4-5-20251001`); "
                         ~ "the distinct models joined by commas for a split prompt."],
      ['input_tokens', "Input tokens billed without cache (summed over the parts of a split prompt)."],
      ['output_tokens', "Output tokens."],
      ['cache_creation_input_tokens', "Input tokens written to the prompt cache (`prompt_caching`)."],
      ['cache_read_input_tokens', "Input tokens read from the prompt cache."],
      ['cost_usd', "USD this answer cost: batch prices for batch results, list prices for synchronous ones; 0 "
                   ~ "for an answer shared by de-duplication or reused from state. Answers later replaced are "
                   ~ "not in this table; the `all_spend` source has the bill, every attempt included."],
      ['service_tier', "`batch` (Message Batches API) or `standard` (synchronous Messages API)."],
      ['batch_id', "The batch that answered: `msgbatch_...`, `sync_...` for a synchronous pass, `reuse_...` "
                   ~ "for an answer taken from state."],
      ['attempt', "The key's attempt this answer belongs to (1 = its first request; more after a failure or "
                  ~ "a changed row)."],
      ['request_hash', "sha256 of the rendered request: equal hashes, identical requests."],
      ['completed_at', "When the batch (or synchronous pass) that answered ended, UTC."],
      ['harvest_seq', "Order in which the answer was recorded in state; each incremental run reads only "
                      ~ "answers newer than the table's highest value."],
      ['parts', "How many parts the prompt was split into (`split_column`); 1 when not split."],
      ['part_pages', "For a PDF cut over max_pages_per_request: each part's number, custom_id, first and last "
                     ~ "page and stop reason, in page order; null when the row was not cut."],
      ['shared_from', "The custom_id whose identical request answered this row (de-duplication), or for an "
                      ~ "answer reused from state the custom_id it was bought for; null when bought for this row."],
      ['newer_request_in_flight', "True while a newer request for this key is in flight (a retry, or a changed "
                                  ~ "row or template): this answer is about to be replaced."],
  ] -%}
  {%- for name, description in described -%}
    {%- do columns.append({'name': name, 'description': description}) -%}
  {%- endfor -%}
  {%- if built_names -%}
    {#- a table built by another version: describe what it has, and flag what this macro does not know -#}
    {%- set by_name = {} -%}
    {%- for c in columns -%}{%- do by_name.update({c['name']: c}) -%}{%- endfor -%}
    {%- set columns = [] -%}
    {%- for name in built_names -%}
      {%- do columns.append(by_name.get(name) or {'name': name, 'description': "(not described: a column this "
                                                  ~ "version of dbt_claude_batch.results_yaml does not know)"}) -%}
    {%- endfor -%}
  {%- endif -%}

  {%- set doc = {'version': 2, 'models': [{
      'name': model_name,
      'description': "Claude's answers, one row per key of the source: the latest successful answer of each "
                     ~ "key (dbt-claude-batch results table). Failures are in `" ~ model_name ~ "__failures`, "
                     ~ "batches in `" ~ model_name ~ "__batches`, every source key's status in `" ~ model_name
                     ~ "__keys`.",
      'data_tests': [
          'dbt_claude_batch.no_key_dropped',
          {'dbt_claude_batch.failure_ratio': {'arguments': {'max_ratio': 0.1}}},
          'dbt_claude_batch.batches_reconciled',
          'dbt_claude_batch.no_failure_needs_you',
          'dbt_claude_batch.failure_ratio_window'],
      'columns': columns}]} -%}
  {%- set text = toyaml(doc) -%}
  {{ print(text) }}
  {{ return(text) }}
{%- endmacro %}
