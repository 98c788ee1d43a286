"""The task layer's API: enqueue, look up, abort, retry, report progress.

With the modules it uses here (task_state, dead_letters, task_metrics) and the worker's
(tasks.py, worker_loop.py, worker_tries.py), this is the only place that imports arq: the
rest of the service uses `TaskQueue`, `TaskState` and `report_progress`, so arq could be
replaced here alone.
"""

import asyncio
import math
import time
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Literal, cast
from uuid import uuid4

from arq import Retry as Retry  # the task layer's: raise Retry(defer=seconds) from a task
from arq.connections import ArqRedis, RedisSettings
from arq.constants import (
    abort_jobs_ss,
    expires_extra_ms,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.jobs import deserialize_job, serialize_result
{%- if cookiecutter.__database == "postgres" %}
from sqlalchemy.ext.asyncio import AsyncSession
{%- endif %}

from ..settings import Settings, get_settings
from .dead_letters import (
    DEAD_LETTER_PREFIX,
    DEAD_LETTERS_BY_NAME_PREFIX,
    DEAD_LETTERS_KEY,
    DeadLetter,
    DeadLetterStore,
    parse_dead_letter,
)
from .enqueue_script import (
    ENQUEUE_SCRIPT,
    RATE_KEY_PREFIX,
    QueueFullError,
    RateLimitedError,
    SubmissionRate,
)
from .events import events_channel, task_event
{%- if cookiecutter.__database == "postgres" %}
from .outbox import add_to_outbox
{%- endif %}
from .queue_scripts import ABORT_SCRIPT, RETRY_LETTER_SCRIPT
from .redis import close_redis, create_redis
from .serialization import deserialize, serialize
from .task_context import Meta, current_meta, job_payload
from .task_handle import TaskHandle
from .task_history import TaskHistory
from .task_keys import LETTER_RETRIED_PREFIX, leases_key
from .task_metrics import SUBMISSIONS_KEY, TaskMetrics, TaskMetricsStore
from .task_state import PROGRESS_KEY_PREFIX, TaskState, read_task_state

# Workers listen here to start a task as soon as it is enqueued, instead of polling for it.
WAKE_CHANNEL_PREFIX = "task:wake:"
HEALTH_CHECK_SUFFIX = ":health-check"


class NonRetryableError(Exception):
    """Raise from a task to fail it at once: retrying cannot help (bad input, a broken file)."""


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


class TaskQueue:
    """Enqueue and follow tasks on the queues of the settings, through one shared pool."""

    def __init__(self, pool: ArqRedis, settings: Settings) -> None:
        self.pool = pool
        self.settings = settings
        self.queues = (settings.task_queue, settings.slow_task_queue)
        self.dead_letter_store = DeadLetterStore(pool, settings.task_dead_letter_max)
        self.metrics_store = TaskMetricsStore(pool)
        self.history = TaskHistory(
            pool, keep_s=settings.console_history_s, keep_max=settings.console_history_max
        )
        self._enqueue_script = pool.register_script(ENQUEUE_SCRIPT)
        self._retry_script = pool.register_script(RETRY_LETTER_SCRIPT)
        self._abort_script = pool.register_script(ABORT_SCRIPT)

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
        _max_depth: int | None = None,
        _rate: SubmissionRate | None = None,
        _meta: Meta | None = None,
        **kwargs: Any,
    ) -> str | None:
        """Enqueue `name(ctx, *args, **kwargs)` as arq's `enqueue_job` would, with its options
        (`_job_id`, `_queue_name`, `_defer_until`, `_defer_by`, `_expires`, `_job_try`), and
        wake the queue's workers, all in one round trip (arq takes three, and no wake-up).
        Returns the task id, or None when `_job_id` is taken: by a task still queued or
        running, or by a result still kept. With `_max_depth`, raises QueueFullError when the
        queue already holds that many tasks (waiting, deferred or running); with `_rate`,
        RateLimitedError past it. The caller's context (its request id) travels with the
        task, or `_meta` in its place."""
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
        meta = current_meta() if _meta is None else _meta
        try:
            payload = job_payload(name, args, kwargs, _job_try, enqueued_ms, meta)
        except TypeError as exc:
            raise TypeError(f"Cannot enqueue {name}: {exc}") from exc
        max_depth = _max_depth or 0  # 0: no limit
        rate = _rate or SubmissionRate("", 0, 0)  # 0: no limit
        added = await self._enqueue_script(
            keys=[
                job_key_prefix + task_id,
                result_key_prefix + task_id,
                queue,
                RATE_KEY_PREFIX + rate.submitter,
                SUBMISSIONS_KEY,
                leases_key(queue),
            ],
            args=[
                payload,
                max(1, expires_ms),
                score,
                task_id,
                wake_channel(queue),
                max_depth,
                rate.limit,
                max(1, round(rate.window_s * 1000)),
                name,
            ],
            client=self.pool,
        )
        if isinstance(added, list):
            raise RateLimitedError(max(1, math.ceil(added[1] / 1000)))
        if added == -1:
            raise QueueFullError(queue, max_depth)
        return task_id if added else None

    async def state(self, task_id: str) -> TaskState | None:
        """The task's status, progress, result and times; None for an unknown id."""
        return await read_task_state(self.pool, self.queues, task_id)

    def job(self, task_id: str) -> TaskHandle:
        """The task `task_id`, with arq's `Job` methods: `status()`, `info()`, `result()`."""
        return TaskHandle(task_id, self.state)

    async def abort(self, task_id: str) -> Literal["aborted", "aborting"]:
        """Stop a task that has not finished, in one script (queue_scripts.py). A queued or
        deferred one is taken off its queue and recorded as aborted at once; a running one is
        cancelled by its worker ("aborting")."""
        for _ in range(3):  # again only if its payload changed between the read and the script
            async with self.pool.pipeline(transaction=False) as pipe:
                pipe.get(job_key_prefix + task_id)
                for queue in self.queues:
                    pipe.zscore(queue, task_id)
                job_raw, *scores = await pipe.execute()
            waits_on = [queue for queue, score in zip(self.queues, scores, strict=True) if score]
            result = self._aborted_result(task_id, job_raw, (waits_on or self.queues)[0])
            outcome = await self._abort_script(
                keys=self.abort_keys(task_id),
                args=[
                    task_id,
                    job_raw or b"",
                    result,
                    int(self.settings.worker_keep_result_s * 1000),
                    *(wake_channel(queue) for queue in self.queues),
                ],
                client=self.pool,
            )
            if outcome != b"changed":
                break
        if outcome != b"aborted":
            return "aborting"
        state = await self.state(task_id)
        if state is not None:  # tell its followers; the history keeps it
            await self.history.try_ended(
                task_id, serialize(state.as_event()), events_channel(task_id)
            )
        return "aborted"

    def abort_keys(self, task_id: str) -> list[str]:
        """The keys ABORT_SCRIPT reads and writes for `task_id`."""
        return [
            in_progress_key_prefix + task_id,
            job_key_prefix + task_id,
            result_key_prefix + task_id,
            retry_key_prefix + task_id,
            abort_jobs_ss,
            *self.queues,
        ]

    async def metrics(self) -> TaskMetrics:
        """Queue depths, tasks running, and what the workers recorded of each try."""
        # A worker beats every WORKER_HEALTH_CHECK_INTERVAL_S; one missed beat is allowed.
        alive_s = 2 * self.settings.worker_health_check_interval_s + 1
        return await self.metrics_store.read(self.queues, worker_alive_s=alive_s)

    async def dead_letter(self, task_id: str, traceback: str | None) -> None:
        """Record a task whose stored result is a failure (the newest TASK_DEAD_LETTER_MAX
        are kept)."""
        await self.dead_letter_store.record(task_id, traceback)

    async def dead_letters(self, *, limit: int, offset: int = 0) -> list[DeadLetter]:
        """Tasks that failed for good, the most recent first."""
        return await self.dead_letter_store.newest(limit=limit, offset=offset)

    async def retry(self, task_id: str) -> bool:
        """Enqueue a dead-lettered task again, under the same id, with its arguments, in one
        script that also takes the letter (retry_script.py). False when it is not
        dead-lettered, or another task holds its id now (the letter then stays)."""
        raw = await self.pool.get(DEAD_LETTER_PREFIX + task_id)
        if raw is None:
            return False
        letter = parse_dead_letter(raw)
        enqueued_ms = int(time.time() * 1000)
        payload = job_payload(
            letter.name, tuple(letter.positional_args), letter.args, None, enqueued_ms, {}
        )
        answer = await self._retry_script(
            keys=retry_letter_keys(task_id, letter.name, letter.queue),
            args=[task_id, raw, payload, expires_extra_ms, wake_channel(letter.queue), letter.name],
            client=self.pool,
        )
        return bool(answer == 1)

    async def worker_alive(self, queue: str) -> bool:
        """True while a worker of `queue` has sent its own heartbeat recently (one missed beat
        is allowed)."""
        alive_s = 2 * self.settings.worker_health_check_interval_s + 1
        return await self.metrics_store.alive_on(queue, alive_s=alive_s)

    async def close(self) -> None:
        await close_redis(self.pool)

    def _aborted_result(self, task_id: str, job_raw: bytes | None, queue: str) -> bytes:
        """The result of a task aborted before it started ("" without a readable payload)."""
        if not job_raw:
            return b""
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
        return result or b""


def retry_letter_keys(task_id: str, name: str, queue: str) -> list[str]:
    """The keys RETRY_LETTER_SCRIPT reads and writes for the dead letter of `task_id`."""
    return [
        DEAD_LETTER_PREFIX + task_id,
        DEAD_LETTERS_KEY,
        DEAD_LETTERS_BY_NAME_PREFIX + name,
        job_key_prefix + task_id,
        result_key_prefix + task_id,
        PROGRESS_KEY_PREFIX + task_id,
        queue,
        LETTER_RETRIED_PREFIX + task_id,
        SUBMISSIONS_KEY,
    ]


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


_process_queue: TaskQueue | None = None


async def get_task_pool() -> TaskQueue:
    """This process's queue client, opened from the settings on first use: for scripts and
    shells. The API and the workers open their own at start-up and pass it along."""
    global _process_queue  # one client per process, created lazily
    if _process_queue is None:
        _process_queue = open_task_queue(get_settings())
    return _process_queue


{% if cookiecutter.__database == "postgres" -%}
async def enqueue_task(
    name: str, /, *args: Any, session: AsyncSession | None = None, **kwargs: Any
) -> str | None:
    """`await enqueue_task("example_task", message="hi")`; see `TaskQueue.enqueue`. With
    `session`, the task is enqueued when the session's transaction commits, and not at all if
    it rolls back (outbox.py)."""
    if session is not None:
        return add_to_outbox(session, name, *args, **kwargs)
    return await (await get_task_pool()).enqueue(name, *args, **kwargs)
{%- else -%}
async def enqueue_task(name: str, /, *args: Any, **kwargs: Any) -> str | None:
    """`await enqueue_task("example_task", message="hi")` from a script; see `TaskQueue.enqueue`."""
    return await (await get_task_pool()).enqueue(name, *args, **kwargs)
{%- endif %}
