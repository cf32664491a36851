"""Prometheus metrics (``notifier_…``), with no personal data in any label.

Counters and the latency histogram live in the process; the delivery-log figures (messages by
channel, rule and status; the due queue) are read from the database at scrape time, so they are
right across restarts and across several daemons sharing one database.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from notifier.app import Notifier


class Metrics:
    """One registry per engine, so two engines in one process (tests) never collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.webhooks = Counter(
            "notifier_webhooks", "Webhooks received, by outcome.", ["outcome"],
            registry=self.registry,
        )  # fmt: skip
        self.sends = Histogram(
            "notifier_send_seconds", "Time a provider took to accept (or refuse) a message.",
            ["channel", "outcome"], registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )  # fmt: skip
        self.reload_errors = Counter(
            "notifier_rules_reload_errors", "Edits of rules or templates that did not load.",
            registry=self.registry,
        )  # fmt: skip

    def watch(self, engine: Notifier) -> None:
        self.registry.register(_LogCollector(engine))


class _LogCollector(Collector):
    def __init__(self, engine: Notifier) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        engine = self.engine
        stats = engine.log.stats(now=engine.clock())
        by_status = GaugeMetricFamily(
            "notifier_notifications", "Delivery log rows by channel, rule and status.",
            labels=["channel", "rule", "status"],
        )  # fmt: skip
        for (channel, rule, status), count in stats.by_status.items():
            by_status.add_metric([channel, rule, status], count)
        yield by_status
        yield GaugeMetricFamily("notifier_due_notifications", "Notifications due now, unsent.",
                                value=stats.due)  # fmt: skip
        yield GaugeMetricFamily(
            "notifier_oldest_due_age_seconds", "How long the oldest due notification has waited.",
            value=stats.oldest_due_age,
        )  # fmt: skip
        yield GaugeMetricFamily("notifier_rules_valid", "1 when the last edit of the rules loaded.",
                                value=0 if engine.rules_error else 1)  # fmt: skip
        if engine.clock_skew is not None:
            yield GaugeMetricFamily(
                "notifier_clock_skew_seconds",
                "How far the database server's clock is ahead of this host's (checked every "
                "10 minutes; PostgreSQL only).",
                value=engine.clock_skew,
            )


def exposition(engine: Notifier) -> bytes:
    return generate_latest(engine.metrics.registry)
