"""Run Claude over warehouse tables from dbt through Anthropic's Message Batches API.

Call `batch_model` from a dbt Python model; see the README for settings and recipes.
"""

from dbt_claude_batch.base.errors import DbtClaudeBatchError

__version__ = "0.1.0"
__all__ = ["batch_model", "DbtClaudeBatchError", "__version__"]


def batch_model(dbt, session, source, settings=None, **kwargs):
    """Run one batch model; see `dbt_claude_batch.run.python_model.batch_model`."""
    from dbt_claude_batch.run.python_model import batch_model as run

    return run(dbt, session, source, settings, **kwargs)
