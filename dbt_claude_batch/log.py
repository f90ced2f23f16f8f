"""The `dbt_claude_batch` logger: dbt's adapter logger, so messages reach the console and logs/dbt.log."""

from dbt.adapters.events.logging import AdapterLogger

logger = AdapterLogger("dbt_claude_batch")
