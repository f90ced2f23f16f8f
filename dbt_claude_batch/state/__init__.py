"""The state layer: the tables that must survive a crash, and the one set of queries over them.

State tables and their migrations, run records, the status snapshot, where the DuckDB file is, the
private work directory, and the reads people share (`inspect`, `views`, `queries`: the SQL the run
and the readers both use). Imports: base only.
"""
