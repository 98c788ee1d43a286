"""Enqueue on commit: the outbox, its relay, and what a crash between commit and relay does."""

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from arq.constants import job_key_prefix, result_key_prefix
from redis.exceptions import ReadOnlyError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from {{ cookiecutter.__package_name }}.infrastructure.database import session_factory
from {{ cookiecutter.__package_name }}.infrastructure.models import OutboxTask
from {{ cookiecutter.__package_name }}.infrastructure.outbox_relay import (
    BATCH_SIZE,
    OutboxRelay,
)
from {{ cookiecutter.__package_name }}.infrastructure.queue import TaskQueue, enqueue_task
from {{ cookiecutter.__package_name }}.infrastructure.redis import texts
from {{ cookiecutter.__package_name }}.settings import Settings

from .faults import WORKER

DEADLINE_S = 30.0


class RolledBackError(Exception):
    """Raised inside a transaction to roll it back."""


async def enqueue_then_roll_back(database: AsyncEngine) -> None:
    async with session_factory(database)() as session, session.begin():
        await enqueue_task("example_task", message="never", session=session)
        raise RolledBackError


async def outbox_size(database: AsyncEngine) -> int:
    async with session_factory(database)() as session:
        return int(await session.scalar(select(func.count()).select_from(OutboxTask)) or 0)


async def commit_tasks(database: AsyncEngine, count: int, **options: Any) -> list[str]:
    """Enqueue `count` example tasks on commit, in one transaction; their ids."""
    async with session_factory(database)() as session, session.begin():
        ids = [
            # example_task(message, steps, delay_s), positional as the relay must pass them
            await enqueue_task("example_task", str(n), 1, 0, session=session, **options)
            for n in range(count)
        ]
    return [str(task_id) for task_id in ids]


@contextlib.asynccontextmanager
async def running(relay: OutboxRelay) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(relay.run())
    try:
        yield task
    finally:
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=DEADLINE_S)
        assert done, f"the relay did not stop within {DEADLINE_S} s of its cancel"
        await asyncio.gather(task, return_exceptions=True)


async def wait_for(probe: Any, timeout_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not await probe():
        assert time.monotonic() < deadline, f"not within {timeout_s} s"
        await asyncio.sleep(0.01)


async def test_a_rolled_back_transaction_enqueues_nothing(
    database: AsyncEngine, task_queue: TaskQueue
) -> None:
    """The task and the work it belongs to go together: a rollback takes the task with it."""
    relay = OutboxRelay(database, task_queue, poll_interval_s=1)
    with pytest.raises(RolledBackError):
        await enqueue_then_roll_back(database)
    assert await outbox_size(database) == 0
    assert await relay.relay_once() == 0
    assert await task_queue.pool.zcard(task_queue.queues[0]) == 0


async def test_a_committed_task_is_relayed_once_under_its_row_s_id(
    database: AsyncEngine, task_queue: TaskQueue
) -> None:
    """After commit the relay enqueues each row with its id, deferral and queue, and deletes it;
    more rows than a batch all go."""
    relay = OutboxRelay(database, task_queue, poll_interval_s=1)
    ids = await commit_tasks(database, BATCH_SIZE + 5)
    slow_queue = task_queue.settings.slow_task_queue
    [later] = await commit_tasks(database, 1, _defer_by=3600, _queue_name=slow_queue)
    assert await relay.relay_once() == BATCH_SIZE + 6
    assert await relay.relay_once() == 0
    assert await outbox_size(database) == 0
    queued = await task_queue.pool.zrange(task_queue.queues[0], 0, -1)
    assert sorted(texts(queued)) == sorted(ids)
    score = await task_queue.pool.zscore(slow_queue, later)
    assert score is not None
    assert score > (time.time() + 3500) * 1000
    state = await task_queue.state(ids[0])
    assert state is not None
    assert (state.name, state.status) == ("example_task", "queued")


async def test_options_other_than_id_queue_and_deferral_are_refused(
    database: AsyncEngine,
) -> None:
    """Nothing is written for an option an enqueue on commit cannot honour, or arguments
    that are not JSON."""
    async with session_factory(database)() as session, session.begin():
        with pytest.raises(TypeError, match="_expires"):
            await enqueue_task("example_task", message="x", _expires=5, session=session)
        with pytest.raises(TypeError, match="not a JSON value"):
            await enqueue_task("example_task", message={1, 2}, session=session)
    assert await outbox_size(database) == 0


async def test_the_relay_wakes_on_commit(database: AsyncEngine, task_queue: TaskQueue) -> None:
    """With an hour between polls, only the commit's notification can bring the task."""
    relay = OutboxRelay(database, task_queue, poll_interval_s=3600)
    async with running(relay):
        await asyncio.wait_for(relay.relaying.wait(), DEADLINE_S)
        [task_id] = await commit_tasks(database, 1)

        async def queued() -> bool:
            return await task_queue.pool.zscore(task_queue.queues[0], task_id) is not None

        await wait_for(queued)


async def test_one_relay_at_a_time_and_another_takes_over(
    database: AsyncEngine, task_queue: TaskQueue
) -> None:
    """Relays of several workers: one holds the lock; when it stops, another relays."""
    first = OutboxRelay(database, task_queue, poll_interval_s=0.05)
    second = OutboxRelay(database, task_queue, poll_interval_s=0.05)
    async with running(first):
        await asyncio.wait_for(first.relaying.wait(), DEADLINE_S)
        async with running(second):
            await asyncio.sleep(0.3)  # many of the second's tries at the lock
            assert not second.relaying.is_set()
            await commit_tasks(database, 3)
            await wait_for(lambda: has_size(database, 0))
        assert first.relaying.is_set()
    takeover = OutboxRelay(database, task_queue, poll_interval_s=0.05)
    async with running(takeover):
        await asyncio.wait_for(takeover.relaying.wait(), DEADLINE_S)


async def has_size(database: AsyncEngine, size: int) -> bool:
    return await outbox_size(database) == size


async def test_a_relay_that_fails_half_way_leaves_the_rest_for_the_next(
    database: AsyncEngine, task_queue: TaskQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis lost after some of a batch is enqueued: no row is deleted, and the next relay
    enqueues the rest; those already queued are not queued again."""
    ids = await commit_tasks(database, 10)
    enqueue = task_queue.enqueue
    calls = 0

    async def fails_after_four(*args: Any, **kwargs: Any) -> str | None:
        nonlocal calls
        calls += 1
        if calls > 4:
            raise ConnectionError("Redis went away")
        return await enqueue(*args, **kwargs)

    monkeypatch.setattr(task_queue, "enqueue", fails_after_four)
    with pytest.raises(ConnectionError):
        await OutboxRelay(database, task_queue, poll_interval_s=1).relay_once()
    assert await outbox_size(database) == 10
    assert await task_queue.pool.zcard(task_queue.queues[0]) == 4
    monkeypatch.setattr(task_queue, "enqueue", enqueue)
    assert await OutboxRelay(database, task_queue, poll_interval_s=1).relay_once() == 10
    queued = await task_queue.pool.zrange(task_queue.queues[0], 0, -1)
    assert sorted(texts(queued)) == sorted(ids)


async def test_the_relay_waits_out_a_queue_that_refuses_writes(
    database: AsyncEngine,
    task_queue: TaskQueue,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Right after a failover the old master answers READONLY: the running relay logs it,
    waits, and relays the outbox once the queue takes writes again."""
    ids = await commit_tasks(database, 3)
    enqueue = task_queue.enqueue
    refusals = 0

    async def read_only_twice(*args: Any, **kwargs: Any) -> str | None:
        nonlocal refusals
        if refusals < 2:
            refusals += 1
            raise ReadOnlyError("You can't write against a read only replica.")
        return await enqueue(*args, **kwargs)

    monkeypatch.setattr(task_queue, "enqueue", read_only_twice)
    relay = OutboxRelay(database, task_queue, poll_interval_s=0.2)
    async with running(relay) as relaying:
        await wait_for(lambda: has_size(database, 0))
        assert not relaying.done()
    assert refusals == 2
    assert caplog.text.count("outbox relay interrupted (ReadOnlyError") == 2
    queued = await task_queue.pool.zrange(task_queue.queues[0], 0, -1)
    assert sorted(texts(queued)) == sorted(ids)


@pytest.mark.slow
async def test_sigkill_of_the_relaying_worker_loses_and_duplicates_nothing(
    settings: Settings,
    database: AsyncEngine,
    task_queue: TaskQueue,
    tmp_path: Path,
) -> None:
    """Real worker processes: the one relaying is killed while its first batch is half on the
    queue and still in the outbox. The next worker relays what is left; every task runs, and
    runs once (the workers count each completed try)."""
    count = 2_000
    await commit_tasks(database, count)
    env = {
        **os.environ,
        "REDIS_URL": str(settings.redis_url),
        "DATABASE_URL": settings.database_url.get_secret_value(),
        "WORKER_POLL_DELAY_S": "0.01",
        "OUTBOX_POLL_INTERVAL_S": "0.2",
        "WORKER_LEASE_S": "1",  # what the killed worker was running runs again soon
        "API_KEYS": "",
    }
    queue = task_queue.queues[0]

    def start(name: str) -> subprocess.Popen[bytes]:
        with (tmp_path / f"{name}.log").open("ab") as log:
            return subprocess.Popen(WORKER, env=env, cwd=tmp_path, stdout=log, stderr=log)

    first = start("first")
    try:
        deadline = time.monotonic() + DEADLINE_S
        while await task_queue.pool.zcard(queue) == 0 and first.poll() is None:
            assert time.monotonic() < deadline, (tmp_path / "first.log").read_text()
            await asyncio.sleep(0.001)
        first.send_signal(signal.SIGKILL)
    finally:
        first.wait()
    # Killed between enqueue and delete: tasks on the queue (or run) still in the outbox.
    async with session_factory(database)() as session:
        left = (await session.scalars(select(OutboxTask.task_id))).all()
    assert left
    keys = [prefix + task_id for task_id in left for prefix in (job_key_prefix, result_key_prefix)]
    assert await task_queue.pool.exists(*keys) > 0
    second = start("second")
    try:

        async def all_done() -> bool:
            metrics = await task_queue.metrics()
            return metrics.outcomes.get(("example_task", "complete"), 0) >= count

        await wait_for(all_done, 180)  # about 16 s on an idle machine
        await asyncio.sleep(0.5)  # room for a duplicate to show
        assert await outbox_size(database) == 0
        metrics = await task_queue.metrics()
        assert metrics.outcomes.get(("example_task", "complete")) == count
        assert await task_queue.pool.zcard(queue) == 0
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
