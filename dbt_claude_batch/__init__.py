"""Run Claude over warehouse tables from dbt through Anthropic's Message Batches API."""

__version__ = "0.1.0"
