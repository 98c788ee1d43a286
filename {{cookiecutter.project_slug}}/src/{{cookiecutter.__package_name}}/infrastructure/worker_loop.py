"""How a worker finds, claims and keeps its tasks: `Worker`, arq's worker woken by enqueues
instead of polling, claiming each task in one round trip for a short lease that it renews while
the task runs."""

import asyncio
import logging
import os
import socket
import time
from contextlib import suppress
from typing import Any
from uuid import uuid4

import arq.worker
from arq.constants import in_progress_key_prefix, retry_key_prefix
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from .events import events_channel
from .queue import wake_channel
from .redis import UNAVAILABLE_ERRORS
from .task_context import task_log_context
from .task_history import RUNNING_KEY, TIMELINE_MAX, TIMELINE_PREFIX
from .task_metrics import PICKUPS_KEY, TaskMetricsStore, WorkerInfo, pickup_lua
from .task_state import PROGRESS_KEY_PREFIX

logger = logging.getLogger(__name__)
# Set in ctx by `Worker`: the task layer's start-up refuses to run under any other worker class.
RUN_BY_OUR_WORKER = "run_by_our_worker"


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
# as arq checks. It holds for the lease (ARGV[3] ms), starts the task's progress over, tells
# its followers it started, lists it as running (KEYS[6]) and notes the start in its timeline
# (KEYS[7], kept ARGV[5] ms), and counts how long it waited after it was due (KEYS[5]).
# Returns the task's score (when it was due) and its try, or 0.
CLAIM_SCRIPT = (
    f"local TIMELINE_MAX = {TIMELINE_MAX}\n"
    + """
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
local started = cjson.encode({
    task_id = ARGV[1], status = 'in_progress', progress = cjson.null, event = 'started',
    data = {try = try}, ts = tonumber(ARGV[2]) / 1000
})
redis.call('PUBLISH', ARGV[4], started)
redis.call('ZADD', KEYS[6], ARGV[2], ARGV[1])
redis.call('RPUSH', KEYS[7], started)
redis.call('LTRIM', KEYS[7], -TIMELINE_MAX, -1)
redis.call('PEXPIRE', KEYS[7], ARGV[5])
local queue, pickups_key, waited_ms = KEYS[2], KEYS[5], tonumber(ARGV[2]) - tonumber(score)
"""
    + pickup_lua()
    + """
return {score, try}
"""
)


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

    def __init__(self, *, lease_s: float, history_keep_s: float, **options: Any) -> None:
        super().__init__(**options)
        self.ctx[RUN_BY_OUR_WORKER] = True
        self.ctx["queue_name"] = self.queue_name
        self.history_keep_ms = int(history_keep_s * 1000)
        self.started_at = time.time()
        self.max_wait_s = self.poll_delay_s
        self.poll_delay_s = 0.0  # the waiting happens in _poll_iteration, below
        self.lease_ms = int(lease_s * 1000)
        self._wake_up = asyncio.Event()
        self._claim: AsyncScript | None = None
        self._leases: Leases | None = None
        self._background: list[asyncio.Task[None]] = []
        self._started_some = False
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.worker_id = f"{self.host}:{self.pid}:{uuid4().hex[:8]}"
        self._metrics: TaskMetricsStore | None = None

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
            claimed = await self._claim(
                keys=[
                    in_progress_key_prefix + job_id,
                    self.queue_name,
                    PROGRESS_KEY_PREFIX + job_id,
                    retry_key_prefix + job_id,
                    PICKUPS_KEY,
                    RUNNING_KEY,
                    TIMELINE_PREFIX + job_id,
                ],
                args=[
                    job_id,
                    int(time.time() * 1000),
                    self.lease_ms,
                    events_channel(job_id),
                    self.history_keep_ms,
                ],
                client=self.pool,
            )
            if not claimed:  # running elsewhere, finished, or deferred again meanwhile
                self.sem.release()
                continue
            score, job_try = claimed
            self.job_counter += 1
            task = self.loop.create_task(
                self.run_job(job_id, int(float(score))),
                context=task_log_context(job_id, self.queue_name, job_try),
            )
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
        if self.after_job_end is not None:
            await self.after_job_end({**self.ctx, "job_id": job_id})

    def _slot_freed(self, task: asyncio.Task[None]) -> None:
        self.job_counter -= 1
        self.sem.release()

    async def _poll_iteration(self) -> None:
        if self._leases is None:
            self._claim = self.pool.register_script(CLAIM_SCRIPT)
            self._leases = Leases(self.pool, self.lease_ms)
            self._metrics = TaskMetricsStore(self.pool)
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

    async def record_health(self) -> None:
        """arq's heartbeat of the queue (what `--check` reads), and this worker's own, which
        /metrics counts as a live worker of the queue."""
        last = self._last_health_check
        await super().record_health()
        if self._metrics is not None and self._last_health_check != last:
            worker = WorkerInfo(
                worker_id=self.worker_id,
                queue=self.queue_name,
                host=self.host,
                pid=self.pid,
                started_at=self.started_at,
                beat_at=time.time(),
                running=len(self.tasks),
                done=self.jobs_complete + self.jobs_failed,
            )
            await self._metrics.worker_beat(
                self.queue_name, worker, forget_after_s=10 * self.health_check_interval
            )

    async def close(self) -> None:
        if self._metrics is not None:
            with suppress(*UNAVAILABLE_ERRORS):
                await self._metrics.worker_gone(self.queue_name, self.worker_id)
            self._metrics = None
        for task in self._background:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        await super().close()
