"""The base layer: what every other layer builds on, and which itself imports nothing of ours.

Settings and dbt vars, keys and custom_ids, prompt templates, the exception tree, the logger, SQL
identifiers, the dbt node config, prices and DuckDB's memory limit. Imports: the standard library and
third-party packages only.
"""
