"""The observe layer: what people type and read.

`cli` (the `dbt-claude-batch` console script, which may start the emulator), `status`, live counts
and the HTML `report`, all reading state through `state.inspect`. Imports: state, api and base, and
the emulator; never the run layer.
"""
