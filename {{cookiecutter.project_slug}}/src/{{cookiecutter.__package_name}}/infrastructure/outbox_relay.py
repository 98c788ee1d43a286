"""The outbox relay: moves committed outbox rows to the queue, in the workers, one at a time.

Each default-queue worker runs one; a PostgreSQL advisory lock lets only one of them relay,
and another takes over within OUTBOX_POLL_INTERVAL_S when that worker stops or dies (its
connection, and so its lock, goes). The relay wakes on the notification a commit of outbox
rows sends, else every OUTBOX_POLL_INTERVAL_S. Each row is enqueued under its own id, then
deleted: a relay killed between the two leaves the row, and the next enqueue of that id finds
the task already there (at least once, never twice on the queue).
"""

import asyncio
import logging
from typing import Any

from asyncpg import Connection, InterfaceError, PostgresError
from redis.exceptions import RedisError
from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from .database import Sessions, session_factory
from .models import OutboxTask
from .outbox import OUTBOX_CHANNEL
from .queue import TaskQueue
from .redis import UNAVAILABLE_ERRORS, describe

logger = logging.getLogger(__name__)
# What interrupts the relay until the database or Redis is back.
INTERRUPTIONS: tuple[type[Exception], ...] = (
    OSError,
    InterfaceError,
    PostgresError,
    SQLAlchemyError,
    *UNAVAILABLE_ERRORS,
    # A failover's READONLY, a script refused: the relay waits and goes on all the same.
    RedisError,
)
# The advisory lock the relaying worker holds (any 64-bit number no other code uses).
RELAY_LOCK_ID = 0x7461736B6F7574  # "taskout"
BATCH_SIZE = 200
RETRY_AFTER_ERROR_S = 1.0


class OutboxRelay:
    """`await relay.run()` until cancelled; `relay_once()` moves what is committed now."""

    def __init__(self, engine: AsyncEngine, tasks: TaskQueue, *, poll_interval_s: float) -> None:
        self._engine = engine
        self._sessions: Sessions = session_factory(engine)
        self._tasks = tasks
        self._poll_interval_s = poll_interval_s
        self.relaying = asyncio.Event()  # set while this one holds the lock

    async def relay_once(self) -> int:
        """Enqueue every committed row, a batch per transaction; returns how many."""
        moved = 0
        while True:
            count = await self._relay_batch()
            moved += count
            if count < BATCH_SIZE:
                return moved

    async def run(self) -> None:
        """Wait for the lock, then relay on every notification and poll, until cancelled.
        A lost database or Redis is waited out: the relay goes on when they are back."""
        while True:
            try:
                await self._hold_lock_and_relay()
            except INTERRUPTIONS as exc:
                logger.warning("outbox relay interrupted (%s); resuming", describe(exc))
            finally:
                self.relaying.clear()
            await asyncio.sleep(RETRY_AFTER_ERROR_S)

    async def _hold_lock_and_relay(self) -> None:
        async with self._engine.connect() as connection:
            raw = await connection.get_raw_connection()
            listener: Connection = raw.driver_connection
            while True:
                if await listener.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_ID):
                    break
                await asyncio.sleep(self._poll_interval_s)  # another worker relays now
            woken = asyncio.Event()

            def wake(*_: Any) -> None:
                woken.set()

            try:
                await listener.add_listener(OUTBOX_CHANNEL, wake)
                self.relaying.set()
                while True:
                    woken.clear()
                    moved = await self.relay_once()
                    if moved:
                        logger.debug("relayed %d tasks from the outbox", moved)
                    try:
                        await asyncio.wait_for(woken.wait(), self._poll_interval_s)
                    except TimeoutError:
                        await listener.fetchval("SELECT 1")  # is the lock's connection alive?
            finally:
                # Closed, not returned to the pool: closing ends the lock and the listening.
                await connection.invalidate()

    async def _relay_batch(self) -> int:
        async with self._sessions() as session, session.begin():
            rows = (
                await session.scalars(
                    select(OutboxTask)
                    .order_by(OutboxTask.created_at)
                    .limit(BATCH_SIZE)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            for row in rows:
                await self._tasks.enqueue(
                    row.name,
                    *row.args,
                    _job_id=row.task_id,
                    _queue_name=row.queue,
                    _defer_until=row.defer_until,
                    _meta=row.meta,
                    **row.kwargs,
                )
            if rows:
                ids = [row.task_id for row in rows]
                await session.execute(delete(OutboxTask).where(OutboxTask.task_id.in_(ids)))
            return len(rows)
