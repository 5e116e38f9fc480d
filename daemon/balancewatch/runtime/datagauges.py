"""The platform-data fallback counts as a Prometheus counter, read at scrape time.

``store.platform_data`` counts each account value it could not use (a locale,
time zone or currency the billing platform wrote that nothing knows), once per
account, field and value in the process, as it warns. This collector exports
those counts; it reads memory only, so a scrape never waits on the database.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric

from balancewatch.core.metrics import Metrics
from balancewatch.store.platform_data import FALLBACKS, FallbackCounts

NAME = "balancewatch_platform_data_fallbacks"
HELP = (
    "Account values written by the platform (locale, timezone, currency) that balancewatch could not use "
    "and replaced by the configured default, counted once per account, field and value."
)


class FallbackCollector:
    """Exports ``counts`` as ``balancewatch_platform_data_fallbacks_total{field}``."""

    def __init__(self, counts: FallbackCounts = FALLBACKS) -> None:
        self.counts = counts

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(NAME, HELP, labels=["field"])

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(NAME, HELP, labels=["field"])
        for field, count in sorted(self.counts.snapshot().items()):
            family.add_metric([field], count)
        yield family


def register(metrics: Metrics, counts: FallbackCounts = FALLBACKS) -> FallbackCollector:
    """Add the fallback counter to ``metrics`` and return its collector."""
    collector = FallbackCollector(counts)
    metrics.register(collector)
    return collector
