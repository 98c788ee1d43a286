"""The worker: `arq {{ cookiecutter.__package_name }}.infrastructure.tasks.WorkerSettings` (default queue and cron
jobs) and `arq {{ cookiecutter.__package_name }}.infrastructure.tasks.SlowWorkerSettings` (the slow queue).

Every arq option we rely on is set here explicitly, from the settings; docs/background-tasks.md
explains each value. Tasks are plain `async def task(ctx, ...)` functions listed in
`tasks/registry.py`; this module wraps them with retries and result checks.
"""

import asyncio
import functools
import logging
import random
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, cast

from arq import Retry
from arq.constants import in_progress_key_prefix
from arq.cron import CronJob, cron
from arq.typing import WorkerCoroutine
from arq.worker import Function, func
from redis.asyncio import Redis

from ..settings import Settings, get_settings
from ..tasks.registry import CRONS, TASKS, CronSpec, TaskSpec
from .cache import Cache
from .queue import (
    NonRetryableError,
    TaskQueue,
    deserialize,
    open_queue_pool,
    queue_redis_settings,
    record_try,
    serialize,
    task_ended,
    task_started,
)
from .redis import UNAVAILABLE_ERRORS, close_redis, close_sentinels, create_redis

logger = logging.getLogger(__name__)
TaskFunction = Callable[..., Awaitable[Any]]


def backoff_s(job_try: int, *, base_s: float, cap_s: float) -> float:
    """Exponential backoff with jitter: between half and all of base * 2^(try-1), capped at
    `cap_s`, so that tasks failing together do not all come back at the same instant."""
    delay_s = min(cap_s, base_s * 2.0 ** (job_try - 1))
    return delay_s / 2 + random.uniform(0, delay_s / 2)  # noqa: S311 - jitter, not a secret


def with_retries(function: TaskFunction, *, max_tries: int) -> TaskFunction:
    """Turn an ordinary exception into a retry with backoff until `max_tries` is reached (arq
    alone retries only on `Retry`), and refuse a result that is not JSON with a clear error."""

    @functools.wraps(function)
    async def run(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        outcome = "failed"
        try:
            result = await function(ctx, *args, **kwargs)
            try:
                serialize(result)
            except TypeError as exc:
                message = f"{function.__name__} returned a bad result: {exc}"
                raise NonRetryableError(message) from exc
            outcome = "complete"
            return result
        except Retry:
            outcome = "retried"
            raise
        except NonRetryableError:
            ctx["failure_traceback"] = traceback_summary()
            raise
        except Exception as exc:
            job_try: int = ctx["job_try"]
            if job_try >= max_tries:
                ctx["failure_traceback"] = traceback_summary()
                raise
            settings: Settings = ctx["settings"]
            delay_s = backoff_s(
                job_try,
                base_s=settings.worker_retry_delay_s,
                cap_s=settings.worker_retry_max_delay_s,
            )
            logger.warning(
                "%s try %d/%d failed (%r); retrying in %.2f s",
                ctx["job_id"], job_try, max_tries, exc, delay_s,
            )  # fmt: skip
            outcome = "retried"
            raise Retry(defer=delay_s) from exc
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            await count_try(ctx, function.__name__, outcome, time.monotonic() - started)

    return run


def traceback_summary(limit: int = 4_000) -> str:
    """The exception being handled, formatted, its last `limit` characters (the innermost
    frames): enough to see where a task failed, small enough to keep."""
    return traceback.format_exc()[-limit:]


async def count_try(ctx: dict[str, Any], task: str, outcome: str, duration_s: float) -> None:
    """Record the try for /metrics; a metrics failure never changes the task's outcome."""
    try:
        await record_try(ctx["redis"], task, outcome, duration_s)
    except UNAVAILABLE_ERRORS:
        logger.warning("could not record the metrics of %s", ctx["job_id"])


async def job_started(ctx: dict[str, Any]) -> None:
    """Take a short lease on the task, and tell its followers it started; losing that event
    never fails the task."""
    leases: Leases = ctx["leases"]
    try:
        await leases.take(ctx["job_id"])
        await task_started(ctx)
    except UNAVAILABLE_ERRORS:
        logger.warning("could not publish the start of %s", ctx["job_id"])


async def job_finishing(ctx: dict[str, Any]) -> None:
    """The try is over: stop renewing its lease (arq then deletes or keeps the claim)."""
    leases: Leases = ctx["leases"]
    leases.drop(ctx["job_id"])


async def job_ended(ctx: dict[str, Any]) -> None:
    """Tell the task's followers how the try ended, once arq has stored the outcome."""
    try:
        await task_ended(ctx)
    except UNAVAILABLE_ERRORS:
        logger.warning("could not publish the end of %s", ctx["job_id"])


class Leases:
    """Short claims on the tasks this worker runs, renewed while they run.

    arq claims a task with an in-progress key that lives job_timeout + 10 s, so a task whose
    worker was killed waits that long (over 5 minutes by default) before another worker may
    run it. Here the key lives WORKER_LEASE_S and is renewed every third of that while the task
    runs: after a crash, the task runs again within WORKER_LEASE_S plus one poll.
    """

    def __init__(self, redis: Redis, lease_s: float) -> None:
        self._redis = redis
        self._lease_ms = int(lease_s * 1000)
        self._renew_every_s = lease_s / 3
        self._running: dict[str, asyncio.Task[Any]] = {}

    async def take(self, job_id: str) -> None:
        """Shorten arq's claim of the task now starting (in this asyncio task) to a lease."""
        task = asyncio.current_task()
        assert task is not None
        self._running[job_id] = task
        await self._redis.pexpire(in_progress_key_prefix + job_id, self._lease_ms)

    def drop(self, job_id: str) -> None:
        self._running.pop(job_id, None)

    async def keep(self) -> None:
        """Renew the leases of running tasks until cancelled; a Redis error skips one round."""
        while True:
            await asyncio.sleep(self._renew_every_s)
            for job_id, task in list(self._running.items()):
                if task.done():
                    self.drop(job_id)
            if not self._running:
                continue
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for job_id in self._running:
                        pipe.pexpire(in_progress_key_prefix + job_id, self._lease_ms)
                    await pipe.execute()
            except UNAVAILABLE_ERRORS as exc:
                logger.warning("could not renew the leases of running tasks: %r", exc)


def as_worker_function(spec: TaskSpec, settings: Settings) -> Function:
    max_tries = spec.max_tries or settings.worker_max_tries
    return func(
        cast(WorkerCoroutine, with_retries(spec.function, max_tries=max_tries)),
        name=spec.name,
        timeout=spec.timeout_s,
        max_tries=max_tries,
    )


def as_cron_job(spec: CronSpec) -> CronJob:
    """`unique=True`: the job id is the name and the scheduled time, so when several workers
    enqueue the same run, only the first enqueue counts and it runs once."""
    return cron(
        cast(WorkerCoroutine, spec.function),
        name=spec.name,
        hour=set(spec.hour) if spec.hour else None,
        minute=set(spec.minute) if spec.minute else None,
        weekday=set(spec.weekday) if spec.weekday else None,
        unique=True,
    )


def on_startup(settings: Settings) -> Callable[[dict[str, Any]], Awaitable[None]]:
    async def startup(ctx: dict[str, Any]) -> None:
        """Create the clients every task shares, once per worker process, into `ctx`."""
        ctx["settings"] = settings
        ctx["cache_redis"] = create_redis(settings)
        ctx["cache"] = Cache(
            ctx["cache_redis"],
            prefix=settings.cache_key_prefix,
            default_ttl_s=settings.cache_default_ttl_s,
        )
        ctx["tasks"] = TaskQueue(ctx["redis"], settings)
        ctx["leases"] = leases = Leases(ctx["redis"], settings.worker_lease_s)
        ctx["lease_keeper"] = asyncio.create_task(leases.keep(), name="lease-keeper")

    return startup


async def shutdown(ctx: dict[str, Any]) -> None:
    ctx["lease_keeper"].cancel()
    await close_redis(ctx["cache_redis"])
    await close_sentinels(ctx["redis"])  # arq closes its pool, not the sentinel clients behind it


def worker_settings(settings: Settings, *, queue: str, with_cron: bool) -> dict[str, Any]:
    """The options of one arq worker. Values differing from arq's defaults are deliberate."""
    return {
        "functions": [as_worker_function(spec, settings) for spec in TASKS],
        "cron_jobs": [as_cron_job(spec) for spec in CRONS] if with_cron else [],
        "queue_name": queue,
        # Through an outage the worker waits for the server and goes on when it is back,
        # instead of exiting (arq's own pool gives up after five tries).
        "redis_pool": open_queue_pool(settings, patient=True),
        # What `arq --check` connects with.
        "redis_settings": queue_redis_settings(settings),
        "on_startup": on_startup(settings),
        "on_shutdown": shutdown,
        "on_job_start": job_started,
        "on_job_end": job_finishing,
        "after_job_end": job_ended,
        "job_serializer": serialize,
        "job_deserializer": deserialize,
        # Tasks one worker runs at once; scale out with more workers for more.
        "max_jobs": settings.worker_max_jobs,
        # A task still running after this many seconds is cancelled (per task: TaskSpec).
        "job_timeout": settings.worker_job_timeout_s,
        # How long a result (and its task id) stays readable.
        "keep_result": settings.worker_keep_result_s,
        # Seconds between queue polls: arq's 0.5 s default delays every task ~250 ms.
        "poll_delay": settings.worker_poll_delay_s,
        # Tries per task, the first included (arq's default is 5).
        "max_tries": settings.worker_max_tries,
        # Heartbeat period: `arq --check` only sees a worker within it (arq's default: 1 h).
        "health_check_interval": settings.worker_health_check_interval_s,
        # DELETE /api/v1/tasks/{task_id} cancels running tasks.
        "allow_abort_jobs": True,
        # On SIGTERM, running tasks get this long to finish; no new ones start.
        "job_completion_wait": round(settings.worker_job_completion_wait_s),
    }


_settings = get_settings()
WorkerSettings = worker_settings(_settings, queue=_settings.task_queue, with_cron=True)
SlowWorkerSettings = worker_settings(_settings, queue=_settings.slow_task_queue, with_cron=False)
