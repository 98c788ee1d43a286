"""Prometheus text for `GET /metrics`: queue depths, tasks in progress, outcomes, durations."""

from collections.abc import Iterable

from ..infrastructure.task_metrics import DURATION_BUCKETS_S, TaskMetrics


def _labels(**labels: str) -> str:
    inner = ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items())
    return "{" + inner + "}" if inner else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _bound(bucket_s: float) -> str:
    return "+Inf" if bucket_s == float("inf") else f"{bucket_s:g}"


def render(metrics: TaskMetrics) -> str:
    """The metrics in Prometheus' text exposition format (version 0.0.4)."""
    lines: list[str] = []

    def family(name: str, kind: str, text: str, samples: Iterable[str]) -> None:
        lines.extend([f"# HELP {name} {text}", f"# TYPE {name} {kind}", *samples])

    family(
        "tasks_queue_depth",
        "gauge",
        "Tasks waiting on a queue (queued or deferred).",
        (f"tasks_queue_depth{_labels(queue=q)} {n}" for q, n in sorted(metrics.depths.items())),
    )
    family(
        "tasks_in_progress",
        "gauge",
        "Tasks running now, on all workers.",
        [f"tasks_in_progress {metrics.in_progress}"],
    )
    family(
        "tasks_total",
        "counter",
        "Task tries by outcome: complete, failed, retried or cancelled.",
        (
            f"tasks_total{_labels(task=task, outcome=outcome)} {count}"
            for (task, outcome), count in sorted(metrics.outcomes.items())
        ),
    )
    samples: list[str] = []
    for task, histogram in sorted(metrics.durations.items()):
        cumulative = 0
        for bucket_s in DURATION_BUCKETS_S:
            cumulative += histogram.buckets.get(bucket_s, 0)
            labels = _labels(task=task, le=_bound(bucket_s))
            samples.append(f"tasks_duration_seconds_bucket{labels} {cumulative}")
        samples.append(f"tasks_duration_seconds_sum{_labels(task=task)} {histogram.sum_s}")
        samples.append(f"tasks_duration_seconds_count{_labels(task=task)} {histogram.count}")
    family("tasks_duration_seconds", "histogram", "How long task tries ran.", samples)
    return "\n".join(lines) + "\n"
