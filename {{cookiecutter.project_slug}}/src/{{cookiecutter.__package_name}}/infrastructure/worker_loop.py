"""How a worker finds, claims and ends its tasks: `Worker`, arq's worker woken by enqueues
instead of polling, claiming the next due tasks in one round trip under fenced leases."""

import asyncio
import contextvars
import itertools
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, cast

import arq.worker
from arq.constants import abort_jobs_ss, job_key_prefix, result_key_prefix, retry_key_prefix
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from .lease_keeper import LeaseKeeper
from .queue import wake_channel
from .redis import UNAVAILABLE_ERRORS
from .task_context import task_log_context
from .task_history import RUNNING_KEY
from .task_keys import ENDED_TRY_PREFIX, LEASE_KEY_PREFIX, leases_key
from .task_metrics import PICKUPS_KEY, TaskMetricsStore, WorkerInfo
from .worker_scripts import CLAIM_SCRIPT, FINISH_SCRIPT

logger = logging.getLogger(__name__)
# Set in ctx by `Worker`: the task layer's start-up refuses to run under any other worker class.
RUN_BY_OUR_WORKER = "run_by_our_worker"
# At most this many lapsed leases (of crashed workers) go back to the queue per claim.
SWEEP_MAX = 100
# The longest wait before the next pass after Redis failed one.
MAX_BACKOFF_S = 2.0
AfterJobEnd = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Claim:
    """This worker's hold on one try: the task, the token its lease holds, when it was due."""

    job_id: str
    token: str
    score: int


# The try that runs in this asyncio task: its payload tells its timeout, its end its token.
CURRENT_TRY: contextvars.ContextVar[Claim | None] = contextvars.ContextVar(
    "current_try", default=None
)


class Worker(arq.worker.Worker):
    """arq's worker, woken when there is work instead of polling for it, with fenced leases.

    After a pass that started nothing it waits until the first of: a message on its queue's
    wake channel (`TaskQueue` publishes one for each enqueue and each abort); the end of one
    of its running tasks; the time the next deferred task is due; `poll_delay`
    (WORKER_POLL_DELAY_S), the fallback for enqueues that publish nothing (arq's cron, plain
    arq clients) and for the tasks of crashed workers. A pass that started tasks is followed
    at once by the next one, so a backlog drains at full speed.

    A pass claims as many due tasks as it has free slots in one script (CLAIM_SCRIPT), which
    moves them from the queue to its lease set: the queue holds only waiting tasks, so free
    slots always find the next one, however many run across the fleet. Each try's lease holds
    a token; the lease keeper (its own thread) renews it while the try runs, and the end of
    the try (FINISH_SCRIPT) writes nothing unless its token still holds the lease. A task whose
    worker died runs again once its lease (WORKER_LEASE_S) has run out. What a worker keeps of
    a try is keyed by its token: a worker whose own lease lapsed (its renewals starved) may
    claim the same task again, and that new try starts once the old one has stopped.
    """

    def __init__(
        self,
        *,
        lease_s: float,
        history_keep_s: float,
        lease_redis: Callable[[], Redis],
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.ctx[RUN_BY_OUR_WORKER] = True
        self.ctx["queue_name"] = self.queue_name
        self.history_keep_ms = int(history_keep_s * 1000)
        self.started_at = time.time()
        self.max_wait_s = self.poll_delay_s
        self.poll_delay_s = 0.0  # the waiting happens in _poll_iteration, below
        self.lease_s = lease_s
        self.lease_ms = int(lease_s * 1000)
        self.leases_key = leases_key(self.queue_name)
        self._wake_up = asyncio.Event()
        self._claim: AsyncScript | None = None
        self._finish: AsyncScript | None = None
        self._background: list[asyncio.Task[None]] = []
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.worker_id = f"{self.host}:{self.pid}:{os.urandom(4).hex()}"
        self._claim_numbers = itertools.count()
        # The newest try of each task this worker runs, and the tokens of tries fenced out.
        self._claims: dict[str, Claim] = {}
        self._fenced_out: set[str] = set()
        self._metrics: TaskMetricsStore | None = None
        self._keeper = LeaseKeeper(lease_redis, lease_ms=self.lease_ms, on_lost=self._lost)
        self._own_loop: asyncio.AbstractEventLoop | None = None
        self._read_payload = self.job_deserializer
        self.job_deserializer = self._read_job
        self._after_end = cast(AfterJobEnd | None, self.after_job_end)
        self.after_job_end = self._after_try

    async def _poll_iteration(self) -> None:
        if self._claim is None:
            self._start()
        # Cleared before the queue is read: a task enqueued from now on sets it again.
        self._wake_up.clear()
        started = 0
        try:
            if self.allow_pick_jobs and self.job_counter < self.max_jobs:
                started = await self._claim_due(self.max_jobs - self.job_counter)
            if self.allow_abort_jobs:
                await self._cancel_aborted_jobs()
            await self.heart_beat()
        except RedisError as exc:
            # The patient pool waits out an outage; this is what it does not: a replica that
            # answers READONLY after a failover, a script refused. Go on after a pause.
            logger.warning("a pass over the queue failed (%r); trying again", exc)
            await asyncio.sleep(min(self.max_wait_s, MAX_BACKOFF_S))
        for job_id, task in list(self.tasks.items()):
            if task.done():
                del self.tasks[job_id]
                task.result()  # an error of run_job itself stops the worker, as in arq
        if not started:
            await self._wait_for_work()
        if self.burst:
            await self._let_running_tasks_end()

    def _start(self) -> None:
        self._own_loop = asyncio.get_running_loop()
        self._claim = self.pool.register_script(CLAIM_SCRIPT)
        self._finish = self.pool.register_script(FINISH_SCRIPT)
        self._metrics = TaskMetricsStore(self.pool)
        self._keeper.start()
        self._background = [asyncio.create_task(self._listen(), name="wake-up listener")]

    async def _claim_due(self, free_slots: int) -> int:
        """Claim up to `free_slots` due tasks and start them; return how many."""
        assert self._claim is not None
        token = f"{self.worker_id}:{next(self._claim_numbers)}"
        reply = await self._claim(
            keys=[self.queue_name, self.leases_key, PICKUPS_KEY, RUNNING_KEY],
            args=[free_slots, self.lease_ms, self.history_keep_ms, token, SWEEP_MAX],
            client=self.pool,
        )
        for i in range(0, len(reply), 4):
            job_id, score = reply[i].decode(), int(float(reply[i + 1]))
            job_try, token = int(reply[i + 2]), reply[i + 3].decode()
            await self.sem.acquire()  # free: no more than the free slots are claimed
            self.job_counter += 1
            claim = Claim(job_id, token, score)
            earlier = self._claims.get(job_id)
            if earlier is not None:
                self._stop(earlier, "its lease ran out while it ran here, and it was claimed again")
            self._claims[job_id] = claim
            self._keeper.hold(job_id, token, self.leases_key, for_s=self.job_timeout_s)
            task = self.loop.create_task(
                self._run_try(claim, self.tasks.get(job_id) if earlier else None),
                context=task_log_context(job_id, self.queue_name, job_try),
            )
            task.add_done_callback(self._slot_freed)
            self.tasks[job_id] = task
        return len(reply) // 4

    async def _run_try(self, claim: Claim, earlier: asyncio.Task[None] | None) -> None:
        """Run one try; after `earlier` (a stopped try of the same task here) has ended."""
        CURRENT_TRY.set(claim)
        try:
            if earlier is not None:
                await asyncio.wait([earlier])
            if claim.token not in self._fenced_out:
                await self.run_job(claim.job_id, claim.score)
        finally:
            self._keeper.release(claim.job_id, claim.token)
            if self._claims.get(claim.job_id) is claim:
                del self._claims[claim.job_id]
            self._fenced_out.discard(claim.token)

    def _read_job(self, payload: bytes) -> dict[str, Any]:
        """Read a payload (in its try's task) and renew the lease until the task's own
        timeout, plus one lease, has passed."""
        assert self._read_payload is not None
        job: dict[str, Any] = self._read_payload(payload)
        claim = CURRENT_TRY.get()
        function = self.functions.get(str(job.get("f"))) if isinstance(job, dict) else None
        if claim is not None and function is not None:
            timeout_s = function.timeout_s or self.job_timeout_s
            self._keeper.extend(claim.job_id, for_s=timeout_s + self.lease_s)
        return job

    def _slot_freed(self, task: asyncio.Task[None]) -> None:
        self.job_counter -= 1
        self.sem.release()

    def _lost(self, job_id: str, token: str) -> None:
        """Called by the lease keeper's thread: another try holds the lease of `job_id`."""
        if self._own_loop is not None:
            self._own_loop.call_soon_threadsafe(self._stop_fenced_out, job_id, token)

    def _stop_fenced_out(self, job_id: str, token: str) -> None:
        claim = self._claims.get(job_id)
        if claim is None or claim.token != token:
            return  # the try ended meanwhile, or was stopped when claimed again here
        self._stop(
            claim,
            "its event loop was blocked past WORKER_LEASE_S, or Redis lost the lease: "
            "another worker may run it now",
        )

    def _stop(self, claim: Claim, why: str) -> None:
        """Stop a try whose lease another try holds: its end changes nothing."""
        if claim.token in self._fenced_out:
            return
        self._fenced_out.add(claim.token)
        logger.error("%s lost its lease (%s), so this try is stopped", claim.job_id, why)
        task = self.job_tasks.get(claim.job_id)
        if task is not None:
            task.cancel()

    async def finish_job(
        self,
        job_id: str,
        finish: bool,
        result_data: bytes | None,
        result_timeout_s: float | None,
        keep_result_forever: bool,
        incr_score: int | None,
        keep_in_progress: float | None,
    ) -> None:
        """End a try as arq would, in one script that changes nothing unless this try still
        holds the task's lease. A retry goes back on the queue `incr_score` ms after the
        task's due time (arq's reckoning)."""
        claim = CURRENT_TRY.get()
        next_score = claim.score + incr_score if claim and incr_score and not finish else ""
        forever = keep_result_forever or result_timeout_s is None
        await self._end_try(
            job_id,
            finish=finish,
            result_data=result_data,
            result_ms=0 if forever else round((result_timeout_s or 0) * 1000),
            next_score=next_score,
            keep_lease_ms=round(keep_in_progress * 1000) if keep_in_progress else 0,
        )

    async def finish_failed_job(self, job_id: str, result_data: bytes | None) -> None:
        """arq fails some tasks without running them, so without the hooks that end a try: a
        payload it cannot read, a name no function has (a task renamed while some were queued),
        tries used up by workers that died running it. They end as any failure does:
        dead-lettered, and announced to their followers."""
        keep = self.keep_result_forever or self.keep_result_s > 0
        await self._end_try(
            job_id,
            finish=True,
            result_data=result_data if keep else None,
            result_ms=0 if self.keep_result_forever else round(self.keep_result_s * 1000),
            next_score="",
            keep_lease_ms=0,
        )
        await self._after_try({**self.ctx, "job_id": job_id})

    async def _end_try(
        self,
        job_id: str,
        *,
        finish: bool,
        result_data: bytes | None,
        result_ms: int,
        next_score: int | str,
        keep_lease_ms: int,
    ) -> None:
        assert self._finish is not None
        claim = CURRENT_TRY.get()
        if claim is None or claim.job_id != job_id or claim.token in self._fenced_out:
            return
        ended = await self._finish(
            keys=[
                LEASE_KEY_PREFIX + job_id,
                self.queue_name,
                self.leases_key,
                result_key_prefix + job_id,
                retry_key_prefix + job_id,
                job_key_prefix + job_id,
                abort_jobs_ss,
                ENDED_TRY_PREFIX + claim.token,
            ],
            args=[
                claim.token,
                job_id,
                "1" if finish else "0",
                result_data or b"",
                result_ms,
                next_score,
                keep_lease_ms,
            ],
            client=self.pool,
        )
        if not ended:
            self._fenced_out.add(claim.token)
            logger.error(
                "%s: another try holds its lease, so the end of this one changes nothing",
                job_id,
            )

    async def _after_try(self, ctx: dict[str, Any]) -> None:
        """The service's end of a try (records, events), unless the try lost its lease."""
        claim = CURRENT_TRY.get()
        fenced_out = claim is None or claim.token in self._fenced_out
        if not fenced_out and self._after_end is not None:
            await self._after_end(ctx)

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

    async def _let_running_tasks_end(self) -> None:
        """In burst mode, wait while tasks run and none waits: a try that fails goes back on
        the queue when it ends, and arq's loop stops once the queue is empty."""
        while await self.pool.zcard(self.queue_name) == 0:
            running = [task for task in self.tasks.values() if not task.done()]
            if not running:
                return
            await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)

    async def _next_due_in_s(self) -> float | None:
        """Seconds until the earliest deferred task of the queue is due; None without one."""
        now_ms = time.time() * 1000
        due: list[tuple[bytes, float]] = await self.pool.zrangebyscore(
            self.queue_name, f"({now_ms}", "+inf", start=0, num=1, withscores=True
        )
        return (due[0][1] - now_ms) / 1000 if due else None

    async def _listen(self) -> None:
        """Set the wake-up on every message of the queue's wake channel, subscribing again
        after any error (the fallback poll covers what is published meanwhile)."""
        delay_s = 0.05
        while True:
            try:
                async with self.pool.pubsub() as pubsub:
                    await pubsub.subscribe(wake_channel(self.queue_name))
                    delay_s = 0.05
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            self._wake_up.set()
            except (RedisError, OSError) as exc:
                logger.warning("the wake-up listener lost its subscription (%r)", exc)
                await asyncio.sleep(delay_s)
                delay_s = min(2 * delay_s, MAX_BACKOFF_S)

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
        """Stop, letting running tasks end (arq's close waits for them) before the lease
        keeper stops: a task never runs on without its lease."""
        if self._metrics is not None:
            with suppress(*UNAVAILABLE_ERRORS):
                await self._metrics.worker_gone(self.queue_name, self.worker_id)
            self._metrics = None
        for task in self._background:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        try:
            await super().close()
        finally:
            await asyncio.to_thread(self._keeper.stop)
