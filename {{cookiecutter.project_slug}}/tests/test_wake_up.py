"""Workers start work when it arrives, not at their next poll.

Each worker here polls once a minute, so anything done within the deadline was done because
the worker was woken: by the enqueue's message, by its own task ending, or by a due time.
"""

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from {{ cookiecutter.__package_name }}.infrastructure.queue import TaskQueue, wake_channel
from {{ cookiecutter.__package_name }}.infrastructure.tasks import as_worker_function
from {{ cookiecutter.__package_name }}.infrastructure.worker_loop import Worker
from {{ cookiecutter.__package_name }}.settings import Settings
from {{ cookiecutter.__package_name }}.tasks.registry import TaskSpec

POLL_S = 60.0
DEADLINE_S = 15.0


async def fails_once(ctx: dict[str, Any]) -> int:
    if ctx["job_try"] == 1:
        raise ConnectionError("upstream down")
    return int(ctx["job_try"])


async def sleeps(ctx: dict[str, Any], seconds: float) -> None:
    await asyncio.sleep(seconds)


async def noop(ctx: dict[str, Any]) -> None:
    return None


async def eventually(probe: Callable[[], Awaitable[object]], wanted: object) -> None:
    start = time.monotonic()
    while (value := await probe()) != wanted:
        assert time.monotonic() - start < DEADLINE_S, f"still {value!r} after {DEADLINE_S} s"
        await asyncio.sleep(0.02)


@pytest.fixture
async def idle_worker(
    settings: Settings, redis: Redis, make_worker: Callable[..., Worker]
) -> AsyncIterator[Worker]:
    """A worker polling once a minute, running, subscribed to its wake channel."""
    specs = [TaskSpec(fails_once), TaskSpec(sleeps), TaskSpec(noop)]
    worker = make_worker(
        functions=[as_worker_function(spec, settings) for spec in specs],
        poll_delay=POLL_S,
        burst=False,
    )
    running = asyncio.create_task(worker.main())

    async def subscribers() -> int:
        [(_, count)] = await redis.pubsub_numsub(wake_channel(settings.task_queue))
        return int(count)

    await eventually(subscribers, 1)
    yield worker
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)


async def status(task_queue: TaskQueue, task_id: str) -> str | None:
    state = await task_queue.state(task_id)
    return None if state is None else state.status


async def test_an_enqueued_task_wakes_an_idle_worker(
    idle_worker: Worker, task_queue: TaskQueue
) -> None:
    """It starts a task enqueued while it waits, long before its next poll."""
    task_id = await task_queue.enqueue("noop")
    assert task_id is not None
    await eventually(lambda: status(task_queue, task_id), "complete")


async def test_a_deferred_task_starts_when_it_is_due(
    idle_worker: Worker, task_queue: TaskQueue
) -> None:
    """It waits exactly for the deferred task's time, neither earlier nor a poll later."""
    task_id = await task_queue.enqueue("noop", _defer_by=1.0)
    assert task_id is not None
    await eventually(lambda: status(task_queue, task_id), "complete")
    state = await task_queue.state(task_id)
    assert state is not None
    assert state.enqueued_at is not None
    assert state.started_at is not None
    assert (state.started_at - state.enqueued_at).total_seconds() >= 1.0


async def test_a_retry_runs_after_its_backoff(idle_worker: Worker, task_queue: TaskQueue) -> None:
    """It runs the second try once its backoff has passed: its own task's end woke it."""
    task_id = await task_queue.enqueue("fails_once")
    assert task_id is not None
    await eventually(lambda: status(task_queue, task_id), "complete")
    state = await task_queue.state(task_id)
    assert state is not None
    assert (state.result, state.tries) == (2, 2)


async def test_an_abort_reaches_a_running_task_at_once(
    idle_worker: Worker, task_queue: TaskQueue
) -> None:
    """It cancels a running task when the abort is published, not at its next poll."""
    task_id = await task_queue.enqueue("sleeps", seconds=POLL_S)
    assert task_id is not None
    await eventually(lambda: status(task_queue, task_id), "in_progress")
    assert await task_queue.abort(task_id) == "aborting"
    await eventually(lambda: status(task_queue, task_id), "aborted")


async def test_an_idle_worker_barely_reads_its_queue(
    settings: Settings, redis: Redis, make_worker: Callable[..., Worker]
) -> None:
    """Waiting for work costs the server a few commands a second, not a busy poll."""
    worker = make_worker(poll_delay=0.5, burst=False)
    running = asyncio.create_task(worker.main())
    await asyncio.sleep(0.5)  # past its start-up
    before = await commands_served(redis)
    await asyncio.sleep(3.0)
    served = await commands_served(redis) - before
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    # About six commands per wait (read, abort check, next due time, heartbeat): at 0.5 s,
    # some 40 in 3 s. A worker polling every 10 ms would send over a thousand.
    assert served < 100, served


async def commands_served(redis: Redis) -> int:
    stats: dict[str, dict[str, Any]] = await redis.info("commandstats")
    return sum(int(stat["calls"]) for stat in stats.values())
