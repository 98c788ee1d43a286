"""The task layer's API: enqueue, look up, abort, report progress.

With `tasks.py` (the worker), this is the only module that imports arq: the rest of the service
uses `TaskQueue`, `TaskState` and `report_progress`, so arq could be replaced here alone.
"""

import asyncio
import json
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal, cast
from uuid import uuid4

from arq.connections import ArqRedis, RedisSettings
from arq.constants import (
    abort_jobs_ss,
    expires_extra_ms,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.jobs import (
    SerializationError,
    deserialize_job,
    deserialize_result,
    serialize_job,
    serialize_result,
)
from redis.exceptions import WatchError

from ..settings import Settings, get_settings
from .events import TaskEvent, events_channel, task_event
from .redis import close_redis, create_redis

TaskStatus = Literal["queued", "deferred", "in_progress", "complete", "failed", "aborted"]
FINISHED: frozenset[TaskStatus] = frozenset({"complete", "failed", "aborted"})
PROGRESS_KEY_PREFIX = "task:progress:"
# Workers listen here to start a task as soon as it is enqueued, instead of polling for it.
WAKE_CHANNEL_PREFIX = "task:wake:"
HEALTH_CHECK_SUFFIX = ":health-check"
UNREADABLE = "<unreadable>"
CLAIM_MS = 5_000
# Tasks that failed for good: a sorted set of their ids by the time they failed, and one JSON
# record each (name, arguments, error, traceback, tries, times).
DEAD_LETTERS_KEY = "task:dead-letters"
DEAD_LETTER_PREFIX = "task:dead-letter:"
OUTCOMES_KEY = "task:metrics:outcomes"
DURATIONS_KEY = "task:metrics:durations"
DURATION_BUCKETS_S = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, float("inf"))


# Enqueue as arq does (the job, then its id on the queue, unless the id is taken by a job or a
# result), and wake the workers of the queue, atomically.
ENQUEUE_SCRIPT = """
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then
    return 0
end
redis.call('PSETEX', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
redis.call('PUBLISH', ARGV[5], '')
return 1
"""


# A try ends: counted for /metrics (outcome, duration bucket, sum, count) and, with an event
# to send, followers told.
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


class NonRetryableError(Exception):
    """Raise from a task to fail it at once: retrying cannot help (bad input, a broken file)."""


class TaskError(Exception):
    """A task's failure as stored with its result: the exception's type name and message."""


def serialize(value: Any) -> bytes:
    """JSON for job arguments and results: a poisoned Redis cannot make a worker run code."""
    return json.dumps(value, default=_encode, separators=(",", ":")).encode()


def deserialize(data: bytes) -> Any:
    return json.loads(data, object_hook=_decode)


def _encode(value: object) -> object:
    if isinstance(value, BaseException):
        return {"__error__": type(value).__name__, "message": str(value)}
    raise TypeError(
        f"{type(value).__name__} is not a JSON value: task arguments and results must be "
        "dicts, lists, strings, numbers, booleans or None"
    )


def _decode(obj: dict[str, Any]) -> object:
    if set(obj) == {"__error__", "message"}:
        if obj["__error__"] == "CancelledError":
            return asyncio.CancelledError(obj["message"])
        name, message = obj["__error__"], obj["message"]
        return TaskError(f"{name}: {message}" if message else name)
    return obj


def queue_redis_settings(settings: Settings) -> RedisSettings:
    """arq's connection settings: the server of REDIS_URL (or the sentinels' master), on the
    queue's own database."""
    redis_settings = replace(
        RedisSettings.from_dsn(settings.redis_queue_url),
        conn_timeout=max(1, round(settings.redis_connect_timeout_s)),
        max_connections=settings.redis_max_connections,
    )
    if not settings.redis_sentinels:
        return redis_settings
    return replace(
        redis_settings,
        host=settings.redis_sentinel_hosts,
        sentinel=True,
        sentinel_master=settings.redis_sentinel_master,
    )


@dataclass(frozen=True)
class TaskState:
    """What `GET /api/v1/tasks/{task_id}` reports."""

    task_id: str
    name: str
    status: TaskStatus
    progress: int | None
    result: Any
    error: str | None
    tries: int
    enqueued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def as_event(self) -> TaskEvent:
        """The state as an event: named after the status once finished, with the result or
        error; "state" before that."""
        if self.finished:
            data = {"result": self.result, "error": self.error, "tries": self.tries}
            return task_event(self.task_id, self.status, self.progress, self.status, data)
        return task_event(self.task_id, self.status, self.progress, "state", {"tries": self.tries})


@dataclass(frozen=True)
class DeadLetter:
    """A task that failed for good, as `GET /api/v1/tasks?status=failed` lists it."""

    task_id: str
    name: str
    args: dict[str, Any]
    positional_args: list[Any]
    error: str
    traceback: str | None
    tries: int
    queue: str
    enqueued_at: datetime
    failed_at: datetime


@dataclass(frozen=True)
class Histogram:
    buckets: dict[float, int]
    sum_s: float
    count: int


@dataclass(frozen=True)
class TaskMetrics:
    """Counts kept in Redis, so that every API process reports the same numbers."""

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


class TaskQueue:
    """Enqueue and follow tasks on the queues of the settings, through one shared pool."""

    def __init__(self, pool: ArqRedis, settings: Settings) -> None:
        self.pool = pool
        self.settings = settings
        self.queues = (settings.task_queue, settings.slow_task_queue)
        self._enqueue_script = pool.register_script(ENQUEUE_SCRIPT)
        self._end_script = pool.register_script(END_SCRIPT)

    async def enqueue(
        self,
        name: str,
        /,
        *args: Any,
        _job_id: str | None = None,
        _queue_name: str | None = None,
        _defer_until: datetime | None = None,
        _defer_by: float | timedelta | None = None,
        _expires: float | timedelta | None = None,
        _job_try: int | None = None,
        **kwargs: Any,
    ) -> str | None:
        """Enqueue `name(ctx, *args, **kwargs)` as arq's `enqueue_job` would, with its options
        (`_job_id`, `_queue_name`, `_defer_until`, `_defer_by`, `_expires`, `_job_try`), and
        wake the queue's workers, all in one round trip (arq takes three, and no wake-up).
        Returns the task id, or None when `_job_id` is taken: by a task still queued or
        running, or by a result still kept."""
        if _defer_until is not None and _defer_by is not None:
            raise ValueError("Pass _defer_until or _defer_by, not both.")
        queue = _queue_name or self.queues[0]
        task_id = _job_id or uuid4().hex
        enqueued_ms = int(time.time() * 1000)
        if _defer_until is not None:
            score = int(_defer_until.timestamp() * 1000)
        else:
            score = enqueued_ms + _milliseconds(_defer_by)
        expires_ms = _milliseconds(_expires) or score - enqueued_ms + expires_extra_ms
        try:
            payload = serialize_job(name, args, kwargs, _job_try, enqueued_ms, serializer=serialize)
        except SerializationError as exc:
            raise TypeError(f"Cannot enqueue {name}: {exc.__cause__}") from exc
        added = await self._enqueue_script(
            keys=[job_key_prefix + task_id, result_key_prefix + task_id, queue],
            args=[payload, max(1, expires_ms), score, task_id, wake_channel(queue)],
            client=self.pool,
        )
        return task_id if added else None

    async def state(self, task_id: str) -> TaskState | None:
        """The task's status, progress, result and times; None for an unknown id."""
        async with self.pool.pipeline(transaction=True) as pipe:
            pipe.get(result_key_prefix + task_id)
            pipe.exists(in_progress_key_prefix + task_id)
            pipe.get(job_key_prefix + task_id)
            pipe.get(retry_key_prefix + task_id)
            pipe.get(PROGRESS_KEY_PREFIX + task_id)
            for queue in self.queues:
                pipe.zscore(queue, task_id)
            result_raw, running, job_raw, tries_raw, progress_raw, *scores = await pipe.execute()
        progress = deserialize(progress_raw)["progress"] if progress_raw else None
        if result_raw:
            result = deserialize_result(result_raw, deserializer=deserialize)
            failure = None if result.success else result.result
            status: TaskStatus = "complete"
            if isinstance(failure, asyncio.CancelledError):
                status = "aborted"
            elif failure is not None:
                status = "failed"
            return TaskState(
                task_id=task_id,
                name=result.function,
                status=status,
                progress=progress,
                result=result.result if result.success else None,
                error=None if failure is None else str(failure) or status,
                tries=result.job_try,
                enqueued_at=result.enqueue_time,
                started_at=result.start_time,
                finished_at=result.finish_time,
            )
        if not job_raw:
            return None
        try:
            job = deserialize_job(job_raw, deserializer=deserialize)
            name, enqueued_at = job.function, job.enqueue_time
        except SerializationError:  # not written by this service: a worker will fail it
            name, enqueued_at = UNREADABLE, None
        score = next((score for score in scores if score is not None), None)
        if running:
            status = "in_progress"
        elif score is not None and score > time.time() * 1000:
            status = "deferred"
        else:
            status = "queued"
        return TaskState(
            task_id=task_id,
            name=name,
            status=status,
            progress=progress,
            result=None,
            error=None,
            tries=int(tries_raw or 0),
            enqueued_at=enqueued_at,
            started_at=None,
            finished_at=None,
        )

    async def abort(self, task_id: str) -> Literal["aborted", "aborting"]:
        """Stop a task that has not finished. A queued or deferred one is taken off its queue
        and recorded as aborted at once; a running one is cancelled by its worker ("aborting")."""
        in_progress_key = in_progress_key_prefix + task_id
        async with self.pool.pipeline(transaction=True) as pipe:
            await pipe.watch(in_progress_key)
            job_raw = await pipe.get(job_key_prefix + task_id)
            if job_raw and not await pipe.exists(in_progress_key):
                # Claim the task the way a worker would (workers WATCH this key before they
                # start a task), so that no worker starts it while it is taken off its queue.
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.psetex(in_progress_key, CLAIM_MS, b"aborted")
                for queue in self.queues:
                    pipe.zrem(queue, task_id)
                try:
                    _, *removed = await pipe.execute()
                except WatchError:
                    removed = []  # a worker started it just now: cancel it below
                if any(removed):
                    queue = self.queues[removed.index(1)]
                    await self._record_aborted(task_id, job_raw, queue)
                    return "aborted"
        async with self.pool.pipeline(transaction=False) as pipe:
            pipe.zadd(abort_jobs_ss, {task_id: int(time.time() * 1000)})
            for queue in self.queues:  # the worker running it cancels it on its next pass
                pipe.publish(wake_channel(queue), b"")
            await pipe.execute()
        return "aborting"

    async def metrics(self) -> TaskMetrics:
        """Queue depths, tasks running, and what the workers recorded of each try."""
        async with self.pool.pipeline(transaction=False) as pipe:
            for queue in self.queues:
                pipe.zcard(queue)
            pipe.hgetall(OUTCOMES_KEY)
            pipe.hgetall(DURATIONS_KEY)
            *depths, outcomes_raw, durations_raw = await pipe.execute()
        in_progress = 0
        async for _ in self.pool.scan_iter(match=in_progress_key_prefix + "*", count=1_000):
            in_progress += 1
        outcomes: dict[tuple[str, str], int] = {}
        for field, count in outcomes_raw.items():
            task, outcome = field.decode().split("|")
            outcomes[task, outcome] = int(count)
        return TaskMetrics(
            depths=dict(zip(self.queues, map(int, depths), strict=True)),
            in_progress=in_progress,
            outcomes=outcomes,
            durations=_histograms(durations_raw),
        )

    async def dead_letter(self, task_id: str, traceback: str | None) -> None:
        """Record a task whose stored result is a failure, keeping the newest
        TASK_DEAD_LETTER_MAX records."""
        result_raw = await self.pool.get(result_key_prefix + task_id)
        if not result_raw:
            return
        result = deserialize_result(result_raw, deserializer=deserialize)
        record = {
            "task_id": task_id,
            "name": result.function,
            "args": result.kwargs,
            "positional_args": list(result.args),
            "error": str(result.result),
            "traceback": traceback,
            "tries": result.job_try,
            "queue": result.queue_name,
            "enqueued_at": result.enqueue_time.isoformat(),
            "failed_at": result.finish_time.isoformat(),
        }
        keep = self.settings.task_dead_letter_max
        async with self.pool.pipeline(transaction=True) as pipe:
            pipe.set(DEAD_LETTER_PREFIX + task_id, serialize(record))
            # Ordered by when it was recorded, to the microsecond: tries that fail within one
            # millisecond (arq's resolution) still list newest first.
            pipe.zadd(DEAD_LETTERS_KEY, {task_id: time.time()})
            pipe.zrange(DEAD_LETTERS_KEY, 0, -keep - 1)
            *_, overflow = await pipe.execute()
        if overflow:
            async with self.pool.pipeline(transaction=True) as pipe:
                pipe.zrem(DEAD_LETTERS_KEY, *overflow)
                pipe.delete(*(DEAD_LETTER_PREFIX + old.decode() for old in overflow))
                await pipe.execute()

    async def dead_letters(self, *, limit: int, offset: int = 0) -> list[DeadLetter]:
        """Tasks that failed for good, the most recent first."""
        ids = await self.pool.zrevrange(DEAD_LETTERS_KEY, offset, offset + limit - 1)
        if not ids:
            return []
        records = await self.pool.mget([DEAD_LETTER_PREFIX + task_id.decode() for task_id in ids])
        return [_dead_letter(deserialize(raw)) for raw in records if raw]

    async def retry(self, task_id: str) -> bool:
        """Enqueue a dead-lettered task again, under the same id, with its arguments;
        False when it is not dead-lettered."""
        raw = await self.pool.get(DEAD_LETTER_PREFIX + task_id)
        if not raw:
            return False
        letter = _dead_letter(deserialize(raw))
        async with self.pool.pipeline(transaction=True) as pipe:
            pipe.zrem(DEAD_LETTERS_KEY, task_id)
            pipe.delete(DEAD_LETTER_PREFIX + task_id)
            pipe.delete(result_key_prefix + task_id, PROGRESS_KEY_PREFIX + task_id)
            removed, *_ = await pipe.execute()
        if not removed:
            return False  # another retry took it first
        enqueued = await self.enqueue(
            letter.name,
            *letter.positional_args,
            _job_id=task_id,
            _queue_name=letter.queue,
            **letter.args,
        )
        return enqueued is not None

    async def count_try(self, outcome: TryOutcome, channel: str, payload: bytes) -> None:
        """Count one try by outcome, and its duration, for /metrics; with a `channel`, publish
        `payload` on it in the same round trip."""
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
            client=self.pool,
        )

    async def worker_alive(self, queue: str) -> bool:
        """True while a worker of `queue` has written its heartbeat recently."""
        return bool(await self.pool.exists(queue + HEALTH_CHECK_SUFFIX))

    async def close(self) -> None:
        await close_redis(self.pool)

    async def _record_aborted(self, task_id: str, job_raw: bytes, queue: str) -> None:
        job = deserialize_job(job_raw, deserializer=deserialize)
        now_ms = int(time.time() * 1000)
        result = serialize_result(
            job.function,
            job.args,
            job.kwargs,
            job.job_try or 0,
            int(job.enqueue_time.timestamp() * 1000),
            False,
            asyncio.CancelledError("aborted before it started"),
            now_ms,
            now_ms,
            f"{task_id}:{job.function}",
            queue,
            task_id,
            serializer=serialize,
        )
        assert result is not None
        keep_ms = int(self.settings.worker_keep_result_s * 1000)
        async with self.pool.pipeline(transaction=True) as pipe:
            pipe.psetex(result_key_prefix + task_id, keep_ms, result)
            pipe.delete(job_key_prefix + task_id, retry_key_prefix + task_id)
            await pipe.execute()
        state = await self.state(task_id)
        if state is not None:
            await publish_event(self.pool, state.as_event())


def _dead_letter(record: dict[str, Any]) -> DeadLetter:
    return DeadLetter(
        **{
            **record,
            "enqueued_at": datetime.fromisoformat(record["enqueued_at"]),
            "failed_at": datetime.fromisoformat(record["failed_at"]),
        }
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


def open_queue_pool(settings: Settings, *, patient: bool = False) -> ArqRedis:
    """arq's client on the queue database, with the JSON serializer; see `create_redis` for
    `patient`. It connects on first use."""
    pool = cast(
        ArqRedis,
        create_redis(
            settings, queue=True, decode_responses=False, redis_class=ArqRedis, patient=patient
        ),
    )
    pool.job_serializer = serialize
    pool.job_deserializer = deserialize
    pool.default_queue_name = settings.task_queue
    return pool


def open_task_queue(settings: Settings) -> TaskQueue:
    """A queue client on the queue database; it connects on first use, so a process starts
    (and reports itself unready) while Redis is down."""
    return TaskQueue(open_queue_pool(settings), settings)


def _milliseconds(duration: float | timedelta | None) -> int:
    if isinstance(duration, timedelta):
        return round(duration.total_seconds() * 1000)
    return round((duration or 0) * 1000)


def wake_channel(queue: str) -> str:
    return WAKE_CHANNEL_PREFIX + queue


async def publish_event(redis: ArqRedis, event: TaskEvent) -> None:
    await redis.publish(events_channel(event["task_id"]), serialize(event))


async def report_progress(
    ctx: dict[str, Any], percent: int, *, event: str = "progress", data: object = None
) -> None:
    """From inside a task: store its progress (0-100) where polling sees it, and publish it
    to whoever follows the task's events."""
    task_id: str = ctx["job_id"]
    settings: Settings = ctx["settings"]
    message = task_event(task_id, "in_progress", max(0, min(100, int(percent))), event, data)
    payload = serialize(message)
    ttl_s = int(settings.worker_job_timeout_s + settings.worker_keep_result_s)
    ctx["progress"] = message["progress"]
    redis: ArqRedis = ctx["redis"]
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(PROGRESS_KEY_PREFIX + task_id, payload, ex=ttl_s)
        pipe.publish(events_channel(task_id), payload)
        await pipe.execute()


async def task_ended(ctx: dict[str, Any], outcome: TryOutcome | None) -> None:
    """A try ended and arq has stored its outcome: count it, dead-letter a task that failed
    for good, and tell followers what the task is now (finished, or waiting for its next try).
    A completed try takes one round trip: its event is built from what the worker knows."""
    tasks: TaskQueue = ctx["tasks"]
    task_id: str = ctx["job_id"]
    complete = outcome is not None and outcome.outcome == "complete"
    if outcome is not None:
        channel, payload = "", b""
        if complete:
            data = {"result": ctx["task_result"], "error": None, "tries": ctx["job_try"]}
            event = task_event(task_id, "complete", ctx.get("progress"), "complete", data)
            channel, payload = events_channel(task_id), serialize(event)
        await tasks.count_try(outcome, channel, payload)
    if complete:
        return
    state = await tasks.state(task_id)
    if state is not None and state.status == "failed":
        await tasks.dead_letter(state.task_id, ctx.get("failure_traceback"))
    if state is not None:
        event = state.as_event()
        if not state.finished:
            event["event"] = "retrying"
        await publish_event(tasks.pool, event)


_process_queue: TaskQueue | None = None


async def get_task_pool() -> TaskQueue:
    """This process's queue client, opened from the settings on first use: for scripts and
    shells. The API and the workers open their own at start-up and pass it along."""
    global _process_queue  # one client per process, created lazily
    if _process_queue is None:
        _process_queue = open_task_queue(get_settings())
    return _process_queue


async def enqueue_task(name: str, /, *args: Any, **kwargs: Any) -> str | None:
    """`await enqueue_task("example_task", message="hi")` from a script; see `TaskQueue.enqueue`."""
    return await (await get_task_pool()).enqueue(name, *args, **kwargs)
