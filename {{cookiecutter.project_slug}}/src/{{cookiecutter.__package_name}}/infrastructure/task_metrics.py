"""Counts of the workers' tries, kept in Redis so that every API process reports the same
numbers on /metrics."""

from collections.abc import Sequence
from dataclasses import dataclass

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix

OUTCOMES_KEY = "task:metrics:outcomes"
DURATIONS_KEY = "task:metrics:durations"
DURATION_BUCKETS_S = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, float("inf"))

# A try ends: counted (outcome, duration bucket, sum, count) and, with an event to send,
# followers told, in one round trip.
END_SCRIPT = """
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
redis.call('HINCRBYFLOAT', KEYS[2], ARGV[3], ARGV[4])
redis.call('HINCRBY', KEYS[2], ARGV[5], 1)
if ARGV[6] ~= '' then
    redis.call('PUBLISH', ARGV[6], ARGV[7])
end
return 0
"""


@dataclass(frozen=True)
class Histogram:
    buckets: dict[float, int]
    sum_s: float
    count: int


@dataclass(frozen=True)
class TaskMetrics:
    """Queue depths, tasks running, and what the workers recorded of each try."""

    depths: dict[str, int]
    in_progress: int
    outcomes: dict[tuple[str, str], int]
    durations: dict[str, Histogram]


@dataclass(frozen=True)
class TryOutcome:
    """How one try of a task ended, for /metrics: complete, failed, retried or cancelled."""

    task: str
    outcome: str
    duration_s: float


class TaskMetricsStore:
    def __init__(self, redis: ArqRedis) -> None:
        self.redis = redis
        self._end_script = redis.register_script(END_SCRIPT)

    async def count_try(self, outcome: TryOutcome, channel: str, payload: bytes) -> None:
        """Count one try by outcome, and its duration; with a `channel`, publish `payload` on
        it in the same round trip."""
        task, duration_s = outcome.task, outcome.duration_s
        bucket_s = next(bound for bound in DURATION_BUCKETS_S if duration_s <= bound)
        await self._end_script(
            keys=[OUTCOMES_KEY, DURATIONS_KEY],
            args=[
                f"{task}|{outcome.outcome}",
                f"{task}|le:{bucket_s!r}",
                f"{task}|sum",
                duration_s,
                f"{task}|count",
                channel,
                payload,
            ],
            client=self.redis,
        )

    async def read(self, queues: Sequence[str]) -> TaskMetrics:
        """The counts, with the depth of each of `queues`."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.zcard(queue)
            pipe.hgetall(OUTCOMES_KEY)
            pipe.hgetall(DURATIONS_KEY)
            *depths, outcomes_raw, durations_raw = await pipe.execute()
        in_progress = 0
        async for _ in self.redis.scan_iter(match=in_progress_key_prefix + "*", count=1_000):
            in_progress += 1
        outcomes: dict[tuple[str, str], int] = {}
        for field, count in outcomes_raw.items():
            task, outcome = field.decode().split("|")
            outcomes[task, outcome] = int(count)
        return TaskMetrics(
            depths=dict(zip(queues, map(int, depths), strict=True)),
            in_progress=in_progress,
            outcomes=outcomes,
            durations=_histograms(durations_raw),
        )


def _histograms(raw: dict[bytes, bytes]) -> dict[str, Histogram]:
    fields: dict[str, dict[str, str]] = {}
    for field, value in raw.items():
        task, name = field.decode().split("|", 1)
        fields.setdefault(task, {})[name] = value.decode()
    return {
        task: Histogram(
            buckets={
                float(name.removeprefix("le:")): int(value)
                for name, value in values.items()
                if name.startswith("le:")
            },
            sum_s=float(values.get("sum", 0)),
            count=int(values.get("count", 0)),
        )
        for task, values in fields.items()
    }
