"""How a worker finds, claims and ends its tasks: `Worker`, arq's worker woken by enqueues
instead of polling, claiming the next due tasks in one round trip under fenced leases."""

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any, cast

import arq.worker
from redis.asyncio import Redis
from redis.exceptions import RedisError

from .redis import UNAVAILABLE_ERRORS, describe
from .task_context import task_log_context
from .task_metrics import TaskMetricsStore, WorkerInfo
from .worker_tries import CURRENT_TRY, Claim, Tries
from .worker_wake import WakeUp

logger = logging.getLogger(__name__)
# Set in ctx by `Worker`: the task layer's start-up refuses to run under any other worker class.
RUN_BY_OUR_WORKER = "run_by_our_worker"
# The longest wait before the next pass after Redis failed one.
MAX_BACKOFF_S = 2.0
AfterJobEnd = Callable[[dict[str, Any]], Awaitable[None]]


class Worker(arq.worker.Worker):
    """arq's worker, woken when there is work instead of polling for it, with fenced leases.

    After a pass that started nothing it waits (`WakeUp`) for an enqueue, the end of a try,
    the next due time or the fallback poll; a pass that started tasks is followed at once by
    the next one, so a backlog drains at full speed.

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
        redis_timeout_s: float,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.ctx[RUN_BY_OUR_WORKER] = True
        self.ctx["queue_name"] = self.queue_name
        self.history_keep_ms = int(history_keep_s * 1000)
        self.started_at = time.time()
        self.max_wait_s = self.poll_delay_s
        self.poll_delay_s = 0.0  # the waiting is WakeUp's, in _poll_iteration
        self.lease_s = lease_s
        self._lease_redis = lease_redis
        self.redis_timeout_s = redis_timeout_s
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.worker_id = f"{self.host}:{self.pid}:{os.urandom(4).hex()}"
        # Made once the worker's loop runs (arq opens its pool in main()).
        self._tries: Tries | None = None
        self._wake: WakeUp | None = None
        self._metrics: TaskMetricsStore | None = None
        self._read_payload = self.job_deserializer
        self.job_deserializer = self._read_job
        self._after_end = cast(AfterJobEnd | None, self.after_job_end)
        self.after_job_end = self._after_try

    async def _poll_iteration(self) -> None:
        if self._tries is None or self._wake is None:
            self._tries, self._wake = self._start()
        self._wake.clear()
        started = 0
        try:
            async with asyncio.timeout(self.redis_timeout_s):
                if self.allow_pick_jobs and self.job_counter < self.max_jobs:
                    free_slots = self.max_jobs - self.job_counter
                    started = await self._claim_due(self._tries, free_slots)
                if self.allow_abort_jobs:
                    await self._cancel_aborted_jobs()
                await self.heart_beat()
        except (RedisError, TimeoutError) as exc:
            # The patient pool waits out an outage; this is what it does not: a replica that
            # answers READONLY after a failover, a script refused, a server that stopped
            # answering (tasks claimed by a pass cut short run again once their lease lapses).
            # Go on after a pause.
            logger.warning("a pass over the queue failed (%s); trying again", describe(exc))
            await asyncio.sleep(min(self.max_wait_s, MAX_BACKOFF_S))
        for job_id, task in list(self.tasks.items()):
            if task.done():
                del self.tasks[job_id]
                task.result()  # an error of run_job itself stops the worker, as in arq
        if not started:
            await self._wake.wait(
                list(self.tasks.values()), has_free_slots=self.job_counter < self.max_jobs
            )
        if self.burst:
            await self._wake.until_queue_has_work(list(self.tasks.values()))

    def _start(self) -> tuple[Tries, WakeUp]:
        tries = Tries(
            self.pool,
            self.queue_name,
            worker_id=self.worker_id,
            lease_ms=int(self.lease_s * 1000),
            history_keep_ms=self.history_keep_ms,
            lease_redis=self._lease_redis,
            redis_timeout_s=self.redis_timeout_s,
            cancel=self._cancel_function,
        )
        self._metrics = TaskMetricsStore(self.pool)
        wake = WakeUp(self.pool, self.queue_name, max_wait_s=self.max_wait_s)
        wake.start()
        return tries, wake

    async def _claim_due(self, tries: Tries, free_slots: int) -> int:
        """Claim up to `free_slots` due tasks and start them; return how many."""
        claims = await tries.claim(free_slots, hold_for_s=self.job_timeout_s)
        for claim, earlier_runs_here in claims:
            await self.sem.acquire()  # free: no more than the free slots are claimed
            self.job_counter += 1
            earlier = self.tasks.get(claim.job_id) if earlier_runs_here else None
            task = self.loop.create_task(
                self._run_try(tries, claim, earlier),
                context=task_log_context(claim.job_id, self.queue_name, claim.job_try),
            )
            task.add_done_callback(self._slot_freed)
            self.tasks[claim.job_id] = task
        return len(claims)

    async def _run_try(
        self, tries: Tries, claim: Claim, earlier: asyncio.Task[None] | None
    ) -> None:
        """Run one try; after `earlier` (a stopped try of the same task here) has ended."""
        CURRENT_TRY.set(claim)
        try:
            if earlier is not None:
                await asyncio.wait([earlier])
            if not tries.fenced_out(claim):
                await self.run_job(claim.job_id, claim.score)
        finally:
            tries.forget(claim)

    def _read_job(self, payload: bytes) -> dict[str, Any]:
        """Read a payload (in its try's task) and renew the lease until the task's own
        timeout, plus one lease, has passed."""
        assert self._read_payload is not None
        job: dict[str, Any] = self._read_payload(payload)
        claim = CURRENT_TRY.get()
        function = self.functions.get(str(job.get("f"))) if isinstance(job, dict) else None
        if self._tries is not None and claim is not None and function is not None:
            timeout_s = function.timeout_s or self.job_timeout_s
            self._tries.extend(claim, for_s=timeout_s + self.lease_s)
        return job

    def _slot_freed(self, task: asyncio.Task[None]) -> None:
        self.job_counter -= 1
        self.sem.release()

    def _cancel_function(self, job_id: str) -> None:
        task = self.job_tasks.get(job_id)
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
        if self._tries is None or claim is None or claim.job_id != job_id:
            return
        forever = keep_result_forever or result_timeout_s is None
        await self._tries.end(
            claim,
            finish=finish,
            result_data=result_data,
            result_ms=0 if forever else round((result_timeout_s or 0) * 1000),
            next_score=claim.score + incr_score if incr_score and not finish else "",
            keep_lease_ms=round(keep_in_progress * 1000) if keep_in_progress else 0,
        )

    async def finish_failed_job(self, job_id: str, result_data: bytes | None) -> None:
        """arq fails some tasks without running them, so without the hooks that end a try: a
        payload it cannot read, a name no function has (a task renamed while some were queued),
        tries used up by workers that died running it. They end as any failure does:
        dead-lettered, and announced to their followers."""
        claim = CURRENT_TRY.get()
        if self._tries is None or claim is None or claim.job_id != job_id:
            return
        keep = self.keep_result_forever or self.keep_result_s > 0
        await self._tries.end(
            claim,
            finish=True,
            result_data=result_data if keep else None,
            result_ms=0 if self.keep_result_forever else round(self.keep_result_s * 1000),
            next_score="",
            keep_lease_ms=0,
        )
        await self._after_try({**self.ctx, "job_id": job_id})

    async def _after_try(self, ctx: dict[str, Any]) -> None:
        """The service's end of a try (records, events), unless the try lost its lease."""
        fenced_out = self._tries is None or self._tries.fenced_out(CURRENT_TRY.get())
        if not fenced_out and self._after_end is not None:
            await self._after_end(ctx)

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
        if self._wake is not None:
            await self._wake.stop()
        try:
            await super().close()
        finally:
            if self._tries is not None:
                await self._tries.close()
