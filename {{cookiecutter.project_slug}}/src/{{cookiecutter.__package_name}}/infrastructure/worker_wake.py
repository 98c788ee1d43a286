"""When a worker looks at its queue again, after a pass that started nothing: woken by a
message on the queue's wake channel, by the end of one of its tries, at the time the next
deferred task is due, or after the fallback poll delay."""

import asyncio
import logging
import time
from collections.abc import Collection
from typing import cast

from redis.asyncio import Redis
from redis.exceptions import RedisError

from .queue import wake_channel
from .redis import describe

logger = logging.getLogger(__name__)
# The longest wait before subscribing again after the wake channel failed.
MAX_BACKOFF_S = 2.0


class WakeUp:
    """The wait between two passes of one worker over its queue.

    `TaskQueue` publishes on the queue's wake channel for each enqueue and each abort; arq's
    cron, plain arq clients and the tasks of crashed workers publish nothing, and are found
    by the fallback poll (`max_wait_s`, WORKER_POLL_DELAY_S)."""

    def __init__(self, pool: Redis, queue_name: str, *, max_wait_s: float) -> None:
        self._pool = pool
        self._queue_name = queue_name
        self.max_wait_s = max_wait_s
        self._woken = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._listener = asyncio.create_task(self._listen(), name="wake-up listener")

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None

    def clear(self) -> None:
        """Called before the queue is read: a task enqueued from now on wakes the next wait."""
        self._woken.clear()

    async def wait(self, running: Collection[asyncio.Task[None]], *, has_free_slots: bool) -> None:
        """Until woken, one of `running` ends, the next deferred task is due (when a slot is
        free to start it) or the fallback delay has passed."""
        timeout_s = self.max_wait_s
        if has_free_slots:
            due_in_s = await self._next_due_in_s()
            if due_in_s is not None:
                timeout_s = min(timeout_s, due_in_s)
        woken = asyncio.create_task(self._woken.wait())
        try:
            await asyncio.wait(
                [woken, *running], timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            woken.cancel()

    async def until_queue_has_work(self, running: Collection[asyncio.Task[None]]) -> None:
        """In burst mode, wait while tasks run and none waits: a try that fails goes back on
        the queue when it ends, and arq's loop stops once the queue is empty."""
        while await self._pool.zcard(self._queue_name) == 0:
            left = [task for task in running if not task.done()]
            if not left:
                return
            await asyncio.wait(left, return_when=asyncio.FIRST_COMPLETED)

    async def _next_due_in_s(self) -> float | None:
        """Seconds until the earliest deferred task of the queue is due; None without one."""
        now_ms = time.time() * 1000
        due = cast(
            list[tuple[bytes, float]],
            await self._pool.zrangebyscore(
                self._queue_name, f"({now_ms}", "+inf", start=0, num=1, withscores=True
            ),
        )
        return (due[0][1] - now_ms) / 1000 if due else None

    async def _listen(self) -> None:
        """Wake on every message of the queue's wake channel, subscribing again after any
        error (the fallback poll covers what is published meanwhile)."""
        delay_s = 0.05
        while True:
            try:
                async with self._pool.pubsub() as pubsub:
                    await pubsub.subscribe(wake_channel(self._queue_name))
                    delay_s = 0.05
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            self._woken.set()
            except (RedisError, OSError) as exc:
                logger.warning("the wake-up listener lost its subscription (%s)", describe(exc))
                await asyncio.sleep(delay_s)
                delay_s = min(2 * delay_s, MAX_BACKOFF_S)
