"""The worker that `python -m {{ cookiecutter.__package_name }}.worker` runs.

`Worker` runs `WorkerSettings` (the default queue and the cron jobs) or, with `--queue slow`,
`SlowWorkerSettings` (the slow queue). arq's own CLI (`arq ...tasks.WorkerSettings`) would run
them in arq's plain worker, without crash leases, wake-ups or dead letters for the tasks arq
fails itself: such a worker refuses to start and names the command to use. `arq --check` on
these settings works as usual.

Every arq option we rely on is set here explicitly, from the settings; docs/background-tasks.md
explains each value. Tasks are plain `async def task(ctx, ...)` functions listed in
`tasks/registry.py`; this module wraps them with retries and result checks.
"""

import asyncio
import functools
import logging
import logging.config
import os
import random
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any, NoReturn, cast

import arq.worker
from arq import Retry
from arq.constants import in_progress_key_prefix, retry_key_prefix
from arq.cron import CronJob, cron
from arq.logs import default_log_config
from arq.typing import WorkerCoroutine
from arq.worker import Function, func
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from ..settings import Settings, get_settings
from ..tasks.registry import CRONS, TASKS, CronSpec, TaskSpec
from .cache import Cache
from .events import events_channel
from .queue import (
    NonRetryableError,
    TaskQueue,
    open_queue_pool,
    queue_redis_settings,
    task_ended,
    wake_channel,
)
from .redis import UNAVAILABLE_ERRORS, close_redis, close_sentinels, create_redis
from .serialization import deserialize, serialize
from .task_metrics import TryOutcome
from .task_state import PROGRESS_KEY_PREFIX

logger = logging.getLogger(__name__)
# Set in ctx by `Worker`: the settings below start no other worker class.
RUN_BY_OUR_WORKER = "run_by_our_worker"
PLAIN_ARQ_REFUSAL = (
    "arq's CLI runs arq's own worker, which lacks this service's crash leases, wake-ups and "
    "dead letters: start workers with `just worker` (or `python -m "
    "{{ cookiecutter.__package_name }}.worker [--queue slow]`). "
    "`arq --check` on these settings still works."
)
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
            ctx["task_result"] = result
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
            # Recorded with the end of the try (job_ended), in the same round trip.
            ctx["try_outcome"] = TryOutcome(function.__name__, outcome, time.monotonic() - started)

    return run


def traceback_summary(limit: int = 4_000) -> str:
    """The exception being handled, formatted, its last `limit` characters (the innermost
    frames): enough to see where a task failed, small enough to keep."""
    return traceback.format_exc()[-limit:]


async def job_ended(ctx: dict[str, Any]) -> None:
    """Once arq has stored the outcome: count the try for /metrics and tell the task's
    followers how it ended. Neither failing ever changes the task's outcome."""
    try:
        await task_ended(ctx, ctx.get("try_outcome"))
    except UNAVAILABLE_ERRORS:
        logger.warning("could not record or publish the end of %s", ctx["job_id"])


class Leases:
    """Short claims on the tasks this worker runs, renewed while they run.

    arq claims a task with an in-progress key that lives job_timeout + 10 s, so a task whose
    worker was killed waits that long (over 5 minutes by default) before another worker may
    run it. Here the key lives WORKER_LEASE_S and is renewed every third of that while the task
    runs: after a crash, the task runs again within WORKER_LEASE_S plus one poll.
    """

    def __init__(self, redis: Redis, lease_ms: int) -> None:
        self._redis = redis
        self.lease_ms = lease_ms
        self._renew_every_s = lease_ms / 3000
        self._running: dict[str, asyncio.Task[Any]] = {}

    def take(self, job_id: str, task: asyncio.Task[None]) -> None:
        """Renew the claim of `job_id` (made for `lease_ms`) while `task` runs it."""
        self._running[job_id] = task

    async def keep(self) -> None:
        """Renew the leases of running tasks until cancelled; a Redis error skips one round."""
        while True:
            await asyncio.sleep(self._renew_every_s)
            for job_id, task in list(self._running.items()):
                if task.done():
                    del self._running[job_id]
            if not self._running:
                continue
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for job_id in self._running:
                        pipe.pexpire(in_progress_key_prefix + job_id, self.lease_ms)
                    await pipe.execute()
            except UNAVAILABLE_ERRORS as exc:
                logger.warning("could not renew the leases of running tasks: %r", exc)


# A worker's claim on a task: only if no worker holds it and it is still on the queue and due,
# as arq checks. It holds for the lease (ARGV[3] ms), starts the task's progress over and tells
# its followers it started. Returns the task's score (when it was due), or 0.
CLAIM_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then
    return 0
end
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then
    return 0
end
redis.call('PSETEX', KEYS[1], ARGV[3], '1')
redis.call('DEL', KEYS[3])
local try = tonumber(redis.call('GET', KEYS[4]) or '0') + 1
redis.call('PUBLISH', ARGV[4], cjson.encode({
    task_id = ARGV[1], status = 'in_progress', progress = cjson.null, event = 'started',
    data = {try = try}, ts = tonumber(ARGV[2]) / 1000
}))
return score
"""


class Worker(arq.worker.Worker):
    """arq's worker, woken when there is work instead of polling for it.

    arq reads its queue every `poll_delay`, so a new task waits half of that on average before
    it starts. This worker runs arq's loop without a delay of its own; after a pass that
    started nothing, it waits until the first of:
    - a message on its queue's wake channel: `TaskQueue` publishes one for each task it
      enqueues and for each abort;
    - the end of one of its running tasks (a slot is free; a retry may be due);
    - the time the next deferred task is due;
    - `poll_delay` (WORKER_POLL_DELAY_S): the fallback for enqueues that publish nothing
      (arq's cron, plain arq clients) and for tasks freed by the lease of a crashed worker.
    A pass that started tasks is followed at once by the next one, so a backlog drains at full
    speed, and an idle worker reads its queue only a few times a second.

    It claims a task for `lease_s` only, and renews the claim while the task runs (`Leases`):
    arq's claim lasts job_timeout + 10 s, which a task whose worker died must wait out.
    """

    def __init__(self, *, lease_s: float, **options: Any) -> None:
        super().__init__(**options)
        self.ctx[RUN_BY_OUR_WORKER] = True
        self.max_wait_s = self.poll_delay_s
        self.poll_delay_s = 0.0  # the waiting happens in _poll_iteration, below
        self.lease_ms = int(lease_s * 1000)
        self._wake_up = asyncio.Event()
        self._claim: AsyncScript | None = None
        self._leases: Leases | None = None
        self._background: list[asyncio.Task[None]] = []
        self._started_some = False

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """Start the tasks of `job_ids` that no other worker holds, as slots free up. arq
        claims each in four round trips (WATCH, EXISTS, ZSCORE, MULTI); CLAIM_SCRIPT makes
        the same checks and the claim, and announces the start, atomically in one."""
        assert self._claim is not None  # set up by the first _poll_iteration
        assert self._leases is not None
        for raw_id in job_ids:
            await self.sem.acquire()
            if self.job_counter >= self.max_jobs:
                self.sem.release()
                return
            job_id = raw_id.decode()
            score = await self._claim(
                keys=[
                    in_progress_key_prefix + job_id,
                    self.queue_name,
                    PROGRESS_KEY_PREFIX + job_id,
                    retry_key_prefix + job_id,
                ],
                args=[job_id, int(time.time() * 1000), self.lease_ms, events_channel(job_id)],
                client=self.pool,
            )
            if not score:  # running elsewhere, finished, or deferred again meanwhile
                self.sem.release()
                continue
            self.job_counter += 1
            task = self.loop.create_task(self.run_job(job_id, int(float(score))))
            task.add_done_callback(self._slot_freed)
            self.tasks[job_id] = task
            self._leases.take(job_id, task)
            self._started_some = True

    async def finish_failed_job(self, job_id: str, result_data: bytes | None) -> None:
        """arq fails some tasks without running them, so without the hooks that end a try: a
        payload it cannot read, a name no function has (a task renamed while some were queued),
        tries used up by workers that died running it. They end as any failure does:
        dead-lettered, and announced to their followers."""
        await super().finish_failed_job(job_id, result_data)
        await job_ended({**self.ctx, "job_id": job_id})

    def _slot_freed(self, task: asyncio.Task[None]) -> None:
        self.job_counter -= 1
        self.sem.release()

    async def _poll_iteration(self) -> None:
        if self._leases is None:
            self._claim = self.pool.register_script(CLAIM_SCRIPT)
            self._leases = Leases(self.pool, self.lease_ms)
            self._background = [
                asyncio.create_task(self._listen(), name="wake-up listener"),
                asyncio.create_task(self._leases.keep(), name="lease keeper"),
            ]
        # Cleared before the queue is read: a task enqueued from now on sets it again.
        self._wake_up.clear()
        self._started_some = False
        await super()._poll_iteration()
        if not self._started_some:
            await self._wait_for_work()

    async def _wait_for_work(self) -> None:
        timeout_s = self.max_wait_s
        if self.job_counter < self.max_jobs:
            due_in_s = await self._next_due_in_s()
            if due_in_s is not None:
                timeout_s = min(timeout_s, due_in_s)
        woken = asyncio.create_task(self._wake_up.wait())
        try:
            await asyncio.wait(
                [woken, *self.tasks.values()],
                timeout=timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            woken.cancel()

    async def _next_due_in_s(self) -> float | None:
        """Seconds until the earliest deferred task of the queue is due; None without one."""
        now_ms = time.time() * 1000
        due: list[tuple[bytes, float]] = await self.pool.zrangebyscore(
            self.queue_name, f"({now_ms}", "+inf", start=0, num=1, withscores=True
        )
        return (due[0][1] - now_ms) / 1000 if due else None

    async def _listen(self) -> None:
        """Set the wake-up on every message of the queue's wake channel. Through an outage the
        patient client reconnects and subscribes again; the fallback poll covers messages
        published meanwhile."""
        async with self.pool.pubsub() as pubsub:
            await pubsub.subscribe(wake_channel(self.queue_name))
            async for message in pubsub.listen():
                if message["type"] == "message":
                    self._wake_up.set()

    async def close(self) -> None:
        for task in self._background:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        await super().close()


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
        if not ctx.get(RUN_BY_OUR_WORKER):
            refuse_to_start()
        ctx["settings"] = settings
        ctx["cache_redis"] = create_redis(settings)
        ctx["cache"] = Cache(
            ctx["cache_redis"],
            prefix=settings.cache_key_prefix,
            default_ttl_s=settings.cache_default_ttl_s,
        )
        ctx["tasks"] = TaskQueue(ctx["redis"], settings)

    return startup


def refuse_to_start() -> NoReturn:
    """Stop a plain arq worker before it takes any task. It exits at once, as arq's own
    shutdown would delete the queue's heartbeat, which the running workers share."""
    print(f"ERROR: {PLAIN_ARQ_REFUSAL}", file=sys.stderr, flush=True)
    os._exit(2)


async def shutdown(ctx: dict[str, Any]) -> None:
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
        # Claims last this long, renewed while the task runs (our Worker; not arq's option).
        "lease_s": settings.worker_lease_s,
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
SETTINGS_BY_QUEUE = {"default": WorkerSettings, "slow": SlowWorkerSettings}


def run_worker(queue: str, *, burst: bool = False, verbose: bool = False) -> None:
    """Run a worker of `queue` ("default" or "slow") until SIGINT or SIGTERM (with `burst`,
    until the queue is empty)."""
    logging.config.dictConfig(default_log_config(verbose))
    use_uvloop()
    Worker(**SETTINGS_BY_QUEUE[queue], burst=burst).run()


def use_uvloop() -> None:
    """Run the worker on uvloop, as uvicorn runs the API, where it is installed (it comes with
    uvicorn[standard], except on Windows): its event loop costs less per task."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop(uvloop.new_event_loop())


def check_worker(queue: str) -> int:
    """0 while a worker of `queue` sends heartbeats, else 1 (arq's health check)."""
    return arq.worker.check_health(SETTINGS_BY_QUEUE[queue])
