"""Tasks that have not finished, as the console lists them: waiting on a queue (due now, or
deferred) and running; and when each cron job runs next.

Waiting tasks are read from arq's queues (sorted sets scored by when each is due), running
ones from the set the claim script keeps (task_history.py) checked against the queues' lease
sets (task_keys.py): a claimed task leaves its queue for its lease set.
"""

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix
from arq.cron import next_cron

from ..tasks.registry import CronSpec
from .task_history import RUNNING_KEY, arguments_text
from .task_keys import leases_key
from .task_state import UNREADABLE, readable_job

LiveStatus = Literal["queued", "deferred", "in_progress"]
# A list filtered by task name reads at most this many waiting tasks to find its page.
NAME_SCAN_MAX = 10_000
CHUNK = 500


@dataclass(frozen=True)
class LiveTask:
    task_id: str
    name: str
    queue: str
    status: LiveStatus
    tries: int
    enqueued_at: datetime | None
    at: datetime  # when it is due (waiting) or when it started (running)
    args: str


@dataclass(frozen=True)
class LivePage:
    total: int
    tasks: list[LiveTask]
    # With a name filter, only the first NAME_SCAN_MAX tasks were looked at.
    partial: bool = False


@dataclass(frozen=True)
class QueueCounts:
    queued: int
    deferred: int
    running: int


class LiveTasks:
    def __init__(self, redis: ArqRedis, queues: Sequence[str]) -> None:
        self.redis = redis
        self.queues = tuple(queues)

    async def counts(self) -> dict[str, QueueCounts]:
        """Per queue: tasks due and waiting, deferred, and running."""
        now_ms = time.time() * 1000
        running = await self._running()
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue in self.queues:
                pipe.zcount(queue, "-inf", now_ms)
                pipe.zcount(queue, f"({now_ms}", "+inf")
            replies = await pipe.execute()
        counts = {}
        for i, queue in enumerate(self.queues):
            on_queue = sum(1 for _, running_queue, _ in running if running_queue == queue)
            counts[queue] = QueueCounts(int(replies[2 * i]), int(replies[2 * i + 1]), on_queue)
        return counts

    async def page(
        self,
        status: LiveStatus,
        *,
        name: str | None,
        queue: str | None,
        limit: int,
        offset: int,
    ) -> LivePage:
        """Unfinished tasks of `status`: waiting ones the newest first, deferred ones the
        soonest due first, running ones the latest started first."""
        queues = [queue] if queue else list(self.queues)
        if status == "in_progress":
            running = [entry for entry in await self._running() if entry[1] in queues]
            tasks = await self._load(running, status)
            if name:
                tasks = [task for task in tasks if task.name == name]
            return LivePage(len(tasks), tasks[offset : offset + limit])
        now_ms = time.time() * 1000
        if not name:
            entries, total = await self._waiting(queues, status, now_ms, offset + limit)
            tasks = await self._load(entries[offset : offset + limit], status)
            return LivePage(total, tasks)
        entries, total = await self._waiting(queues, status, now_ms, NAME_SCAN_MAX)
        matching: list[tuple[str, str, float]] = []
        for start in range(0, len(entries), CHUNK):
            chunk = entries[start : start + CHUNK]
            jobs = await self.redis.mget([job_key_prefix + task_id for task_id, _, _ in chunk])
            matching += [e for e, job in zip(chunk, jobs, strict=True) if _is_named(job, name)]
        tasks = await self._load(matching[offset : offset + limit], status)
        return LivePage(len(matching), tasks, total > NAME_SCAN_MAX)

    async def task(self, task_id: str) -> LiveTask | None:
        """The task, if it waits or runs on one of the queues."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue in self.queues:
                pipe.zscore(queue, task_id)
                pipe.zscore(leases_key(queue), task_id)
                pipe.zscore(RUNNING_KEY, task_id)
            replies = await pipe.execute()
        for i, queue in enumerate(self.queues):
            waiting, leased, started = replies[3 * i : 3 * i + 3]
            if leased is not None:
                tasks = await self._load([(task_id, queue, started or 0.0)], "in_progress")
                return tasks[0] if tasks else None
            if waiting is not None:
                status: LiveStatus = "deferred" if waiting > time.time() * 1000 else "queued"
                tasks = await self._load([(task_id, queue, waiting)], status)
                return tasks[0] if tasks else None
        return None

    async def _waiting(
        self, queues: Sequence[str], status: LiveStatus, now_ms: float, count: int
    ) -> tuple[list[tuple[str, str, float]], int]:
        """The first `count` tasks of `status` over `queues`, in list order, and how many
        there are in all."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                if status == "deferred":
                    pipe.zrangebyscore(queue, f"({now_ms}", "+inf", 0, count, withscores=True)
                    pipe.zcount(queue, f"({now_ms}", "+inf")
                else:
                    pipe.zrevrangebyscore(queue, now_ms, "-inf", 0, count, withscores=True)
                    pipe.zcount(queue, "-inf", now_ms)
            replies = await pipe.execute()
        entries = [
            (raw.decode(), queue, score)
            for queue, reply in zip(queues, replies[0::2], strict=True)
            for raw, score in reply
        ]
        entries.sort(key=lambda entry: entry[2], reverse=status != "deferred")
        return entries[:count], sum(int(total) for total in replies[1::2])

    async def _running(self) -> list[tuple[str, str, float]]:
        """Running tasks (id, queue, start ms), the latest started first; those whose lease
        ran out (their worker died) are dropped from the set."""
        started = cast(
            list[tuple[bytes, float]],
            await self.redis.zrevrange(RUNNING_KEY, 0, -1, withscores=True),
        )
        if not started:
            return []
        ids = [raw.decode() for raw, _ in started]
        async with self.redis.pipeline(transaction=False) as pipe:
            for task_id in ids:
                pipe.exists(in_progress_key_prefix + task_id)
                for queue in self.queues:
                    pipe.zscore(leases_key(queue), task_id)
            replies = await pipe.execute()
        width = 1 + len(self.queues)
        running, gone = [], []
        for i, (task_id, (_, started_ms)) in enumerate(zip(ids, started, strict=True)):
            held, *scores = replies[i * width : (i + 1) * width]
            on = [q for q, score in zip(self.queues, scores, strict=True) if score is not None]
            if held and on:
                running.append((task_id, on[0], float(started_ms)))
            else:
                gone.append(task_id)
        if gone:
            await self.redis.zrem(RUNNING_KEY, *gone)
        return running

    async def _load(
        self, entries: Sequence[tuple[str, str, float]], status: LiveStatus
    ) -> list[LiveTask]:
        if not entries:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for task_id, _, _ in entries:
                pipe.get(job_key_prefix + task_id)
                pipe.get(retry_key_prefix + task_id)
            replies = await pipe.execute()
        tasks = []
        for (task_id, queue, score), job_raw, tries_raw in zip(
            entries, replies[0::2], replies[1::2], strict=True
        ):
            if job_raw is None:
                continue  # finished since the queue was read
            name, args, enqueued_at = _job_fields(job_raw)
            tasks.append(
                LiveTask(
                    task_id=task_id,
                    name=name,
                    queue=queue,
                    status=status,
                    tries=int(tries_raw or 0),
                    enqueued_at=enqueued_at,
                    at=datetime.fromtimestamp(score / 1000, UTC),
                    args=args,
                )
            )
        return tasks


def _is_named(job_raw: bytes | str | None, name: str) -> bool:
    """Whether the job payload runs task `name` (arq keeps the function's name under "f")."""
    if job_raw is None:
        return False
    try:
        payload = json.loads(job_raw)
    except ValueError:
        return False
    return isinstance(payload, dict) and payload.get("f") == name


def _job_fields(job_raw: bytes) -> tuple[str, str, datetime | None]:
    job = readable_job(job_raw)
    if job is None:
        return UNREADABLE, "", None
    return job.function, arguments_text(job.args, job.kwargs), job.enqueue_time


def next_run(spec: CronSpec, now: datetime) -> datetime:
    """When the cron job of `spec` fires next after `now`, as the worker computes it."""
    options: dict[str, Any] = {
        "hour": set(spec.hour) if spec.hour else None,
        "minute": set(spec.minute) if spec.minute else None,
        "weekday": set(spec.weekday) if spec.weekday else None,
    }
    return next_cron(now, **options)
