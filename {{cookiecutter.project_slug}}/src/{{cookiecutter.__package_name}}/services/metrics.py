"""`GET /metrics`: the task layer's numbers, kept in Redis, as prometheus-client renders them.

A collector over one snapshot (`TaskMetrics`, read once per scrape): every API process
reports the same numbers, whichever the scraper reaches.
"""

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from ..infrastructure.task_metrics import Histogram, TaskMetrics


class Snapshot(Collector):
    """The metric families of one `TaskMetrics`."""

    def __init__(self, metrics: TaskMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        depth = GaugeMetricFamily(
            "tasks_queue_depth", "Tasks waiting on a queue (queued or deferred).", labels=["queue"]
        )
        for queue, count in sorted(m.depths.items()):
            depth.add_metric([queue], count)
        yield depth
        yield GaugeMetricFamily(
            "tasks_in_progress", "Tasks running now, on all workers.", value=m.in_progress
        )
        workers = GaugeMetricFamily(
            "tasks_workers_alive",
            "Workers of a queue that sent a heartbeat within two heartbeat intervals.",
            labels=["queue"],
        )
        for queue, count in sorted(m.workers.items()):
            workers.add_metric([queue], count)
        yield workers
        submitted = CounterMetricFamily(
            "tasks_submitted", "Tasks enqueued, by task.", labels=["task"]
        )
        for task, count in sorted(m.submissions.items()):
            submitted.add_metric([task], count)
        yield submitted
        tries = CounterMetricFamily(
            "tasks",
            "Task tries by outcome: complete, failed, retried or cancelled.",
            labels=["task", "outcome"],
        )
        for (task, outcome), count in sorted(m.outcomes.items()):
            tries.add_metric([task, outcome], count)
        yield tries
        yield histogram("tasks_duration_seconds", "How long task tries ran.", "task", m.durations)
        yield histogram(
            "tasks_pickup_latency_seconds",
            "How long tasks waited from due (enqueued, or deferred until) to their start.",
            "queue",
            m.pickups,
        )
        yield GaugeMetricFamily(
            "tasks_dead_letters",
            "Tasks that failed for good and are kept for inspection and retry.",
            value=m.dead_letters,
        )


def histogram(
    name: str, documentation: str, label: str, by_label: dict[str, Histogram]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=[label])
    for value, counts in sorted(by_label.items()):
        cumulative, buckets = 0, []
        for bound in sorted(counts.buckets):
            cumulative += counts.buckets[bound]
            buckets.append(("+Inf" if bound == float("inf") else f"{bound:g}", cumulative))
        if not buckets or buckets[-1][0] != "+Inf":
            buckets.append(("+Inf", counts.count))
        family.add_metric([value], buckets, counts.sum_s)
    return family


def render(metrics: TaskMetrics) -> bytes:
    """The text exposition format, by prometheus-client."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Snapshot(metrics))
    return generate_latest(registry)
