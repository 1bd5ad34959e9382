"""Per-minute counts per queue (the meter, written to the database) and /metrics.

`meter` counts in memory and flushes; `selectors` reads the minutes for the cockpit;
`collector` and `views` export depth and totals to Prometheus from the database at scrape.
"""

from .meter import KINDS, meter_count, meter_count_after_commit, meter_flush

__all__ = ["KINDS", "meter_count", "meter_count_after_commit", "meter_flush"]
