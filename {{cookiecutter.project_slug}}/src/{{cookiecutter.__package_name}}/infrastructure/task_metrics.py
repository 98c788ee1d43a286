"""Counts of the task layer, kept in Redis so that every API process reports the same
numbers on /metrics: submissions (the enqueue script counts them), waits before a start (the
claim script), tries by outcome and duration (the end of each try), live workers."""

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from arq.connections import ArqRedis
from redis.typing import EncodableT

from .dead_letters import DEAD_LETTERS_KEY
from .redis import texts
from .task_history import LUA as HISTORY_LUA
from .task_keys import leases_key

OUTCOMES_KEY = "task:metrics:outcomes"
DURATIONS_KEY = "task:metrics:durations"
SUBMISSIONS_KEY = "task:metrics:submissions"
PICKUPS_KEY = "task:metrics:pickups"
# One sorted set per queue: each worker's id, scored by its last heartbeat (ms).
WORKERS_KEY_PREFIX = "task:workers:"
# What each worker reports of itself with its heartbeat (a hash per worker).
WORKER_INFO_PREFIX = "task:worker:"
DURATION_BUCKETS_S = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, float("inf"))
PICKUP_BUCKETS_S = (0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, float("inf"))


def pickup_lua() -> str:
    """Lua that defines, for the claim script, `count_pickup(pickups_key, queue, waited_ms)`:
    how long a task waited from due to start, counted in the histogram of its queue as
    `Histogram` reads it."""
    limits = ", ".join("math.huge" if b == float("inf") else repr(b) for b in PICKUP_BUCKETS_S)
    names = ", ".join(f"'{bound!r}'" for bound in PICKUP_BUCKETS_S)
    return "local limits, names = {" + limits + "}, {" + names + "}" + PICKUP_COUNT


PICKUP_COUNT = """
local function count_pickup(pickups_key, queue, waited_ms)
    local waited_s = math.max(0, waited_ms) / 1000
    for i, limit in ipairs(limits) do
        if waited_s <= limit then
            redis.call('HINCRBY', pickups_key, queue .. '|le:' .. names[i], 1)
            break
        end
    end
    redis.call('HINCRBYFLOAT', pickups_key, queue .. '|sum', waited_s)
    redis.call('HINCRBY', pickups_key, queue .. '|count', 1)
end
"""

# A try ends: counted (outcome, duration bucket, sum, count); with an event to send, followers
# told; with a task id, its timeline and, once finished, its record kept (task_history.py).
# All in one round trip.
END_SCRIPT = (
    HISTORY_LUA
    + """
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
redis.call('HINCRBYFLOAT', KEYS[2], ARGV[3], ARGV[4])
redis.call('HINCRBY', KEYS[2], ARGV[5], 1)
if ARGV[6] ~= '' then
    redis.call('PUBLISH', ARGV[6], ARGV[7])
end
if ARGV[8] ~= '' then
    try_ended(ARGV[8], ARGV[9], ARGV[10], tonumber(ARGV[11]), tonumber(ARGV[12]),
        tonumber(ARGV[13]))
end
return 0
"""
)
NOT_ENDED = ["", "", "", 0, 0, 0]


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
    submissions: dict[str, int]
    pickups: dict[str, Histogram]  # by queue
    dead_letters: int
    workers: dict[str, int]  # live workers by queue


@dataclass(frozen=True)
class TryOutcome:
    """How one try of a task ended, for /metrics: complete, failed, retried or cancelled."""

    task: str
    outcome: str
    duration_s: float


@dataclass(frozen=True)
class WorkerInfo:
    """A worker process, as its heartbeat describes it."""

    worker_id: str
    queue: str
    host: str
    pid: int
    started_at: float
    beat_at: float
    running: int
    done: int

    def fields(self) -> dict[str, str]:
        return {name: str(value) for name, value in self.__dict__.items() if name != "worker_id"}

    @classmethod
    def load(cls, worker_id: str, raw: dict[bytes, bytes]) -> "WorkerInfo":
        fields = {key.decode(): value.decode() for key, value in raw.items()}
        return cls(
            worker_id=worker_id,
            queue=fields["queue"],
            host=fields["host"],
            pid=int(fields["pid"]),
            started_at=float(fields["started_at"]),
            beat_at=float(fields["beat_at"]),
            running=int(fields["running"]),
            done=int(fields["done"]),
        )


class TaskMetricsStore:
    def __init__(self, redis: ArqRedis) -> None:
        self.redis = redis
        self._end_script = redis.register_script(END_SCRIPT)

    async def count_try(
        self,
        outcome: TryOutcome,
        channel: str,
        payload: bytes,
        ended: list[Any] | None = None,
    ) -> None:
        """Count one try by outcome, and its duration; with a `channel`, publish `payload` on
        it, and with `ended` (`TaskHistory.end_args`) keep it in the task's history, in the
        same round trip."""
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
                *(ended or NOT_ENDED),
            ],
            client=self.redis,
        )

    async def read(self, queues: Sequence[str], *, worker_alive_s: float) -> TaskMetrics:
        """The counts, with the depth of each of `queues` and their workers that sent a
        heartbeat within `worker_alive_s`."""
        alive_since_ms = (time.time() - worker_alive_s) * 1000
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.zcard(queue)
                pipe.zcount(WORKERS_KEY_PREFIX + queue, alive_since_ms, "+inf")
                pipe.zcard(leases_key(queue))
            pipe.hgetall(OUTCOMES_KEY)
            pipe.hgetall(DURATIONS_KEY)
            pipe.hgetall(SUBMISSIONS_KEY)
            pipe.hgetall(PICKUPS_KEY)
            pipe.zcard(DEAD_LETTERS_KEY)
            replies = await pipe.execute()
        per_queue, (outcomes_raw, durations_raw, submissions_raw, pickups_raw, dead) = (
            replies[: 3 * len(queues)],
            replies[3 * len(queues) :],
        )
        outcomes: dict[tuple[str, str], int] = {}
        for field, count in outcomes_raw.items():
            task, outcome = field.decode().split("|")
            outcomes[task, outcome] = int(count)
        return TaskMetrics(
            depths=dict(zip(queues, map(int, per_queue[0::3]), strict=True)),
            in_progress=sum(map(int, per_queue[2::3])),
            outcomes=outcomes,
            durations=_histograms(durations_raw),
            submissions={task.decode(): int(count) for task, count in submissions_raw.items()},
            pickups=_histograms(pickups_raw),
            dead_letters=int(dead),
            workers=dict(zip(queues, map(int, per_queue[1::3]), strict=True)),
        )

    async def worker_beat(self, queue: str, worker: WorkerInfo, *, forget_after_s: float) -> None:
        """Record a heartbeat of `worker`, with what it reports of itself, and forget workers
        silent for `forget_after_s`."""
        now_ms, key = time.time() * 1000, WORKERS_KEY_PREFIX + queue
        info_key = WORKER_INFO_PREFIX + worker.worker_id
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(key, {worker.worker_id: now_ms})
            pipe.zremrangebyscore(key, "-inf", now_ms - forget_after_s * 1000)
            fields: dict[EncodableT, EncodableT] = dict(worker.fields().items())
            pipe.hset(info_key, mapping=fields)
            pipe.pexpire(info_key, int(forget_after_s * 1000))
            await pipe.execute()

    async def worker_gone(self, queue: str, worker_id: str) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(WORKERS_KEY_PREFIX + queue, worker_id)
            pipe.delete(WORKER_INFO_PREFIX + worker_id)
            await pipe.execute()

    async def alive_on(self, queue: str, host: str | None = None, *, alive_s: float) -> bool:
        """Whether a worker of `queue` (on `host`, when given) sent its own heartbeat within
        `alive_s`. Each worker beats for itself, so one that stops never hides another."""
        alive_since_ms = (time.time() - alive_s) * 1000
        ids = await self.redis.zrangebyscore(WORKERS_KEY_PREFIX + queue, alive_since_ms, "+inf")
        if host is None:
            return bool(ids)
        return any(worker_id.startswith(host + ":") for worker_id in texts(ids))

    async def workers(self, queues: Sequence[str], *, alive_s: float) -> list[WorkerInfo]:
        """The workers of `queues` that sent a heartbeat within `alive_s`."""
        alive_since_ms = (time.time() - alive_s) * 1000
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.zrevrangebyscore(WORKERS_KEY_PREFIX + queue, "+inf", alive_since_ms)
            ids = [raw.decode() for reply in await pipe.execute() for raw in reply]
        async with self.redis.pipeline(transaction=False) as pipe:
            for worker_id in ids:
                pipe.hgetall(WORKER_INFO_PREFIX + worker_id)
            infos: list[dict[bytes, bytes]] = await pipe.execute()
        return [
            WorkerInfo.load(worker_id, info)
            for worker_id, info in zip(ids, infos, strict=True)
            if info
        ]


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
