"""Leases under the faults of a real fleet: a task that blocks its event loop past the lease,
a worker that has lost its lease, more running tasks than arq's poll reads, and a lease
keeper whose renewals fail."""

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import pytest

from {{ cookiecutter.__package_name }}.infrastructure.lease_keeper import LeaseKeeper
from {{ cookiecutter.__package_name }}.infrastructure.queue import TaskQueue
from {{ cookiecutter.__package_name }}.infrastructure.redis import create_redis
from {{ cookiecutter.__package_name }}.infrastructure.task_keys import (
    LEASE_KEY_PREFIX,
    leases_key,
)
from {{ cookiecutter.__package_name }}.infrastructure.tasks import (
    as_worker_function,
    worker_settings,
)
from {{ cookiecutter.__package_name }}.infrastructure.worker_loop import Worker
from {{ cookiecutter.__package_name }}.settings import Settings
from {{ cookiecutter.__package_name }}.tasks.registry import TaskSpec

# Starts processes or waits out faults for seconds: `just test -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow
DEADLINE_S = 60.0
runs: list[str] = []
release = asyncio.Event()


async def blocks_its_loop(ctx: dict[str, Any], seconds: float) -> str:
    """What a synchronous HTTP call or CPU work in async code does to the worker's loop."""
    runs.append(ctx["job_id"])
    time.sleep(seconds)  # noqa: ASYNC251 - the fault under test
    return "done"


async def sleeps(ctx: dict[str, Any], seconds: float) -> str:
    runs.append(ctx["job_id"])
    await asyncio.sleep(seconds)
    return "woke up"


async def waits_for_release(ctx: dict[str, Any]) -> str:
    runs.append(ctx["job_id"])
    await release.wait()
    return "released"


async def stalls_on_its_first_try(ctx: dict[str, Any]) -> str:
    runs.append(ctx["job_id"])
    if ctx["job_try"] == 1:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            runs.append("first try stopped")
            raise
    return "second try"


@pytest.fixture(autouse=True)
def forget_runs() -> None:
    runs.clear()
    release.clear()


def leased(settings: Settings, lease_s: float = 1.0) -> Settings:
    """Settings with a short lease, so that a lost one shows within seconds."""
    return settings.model_copy(update={"worker_lease_s": lease_s})


def options(settings: Settings, *specs: TaskSpec, **overrides: Any) -> dict[str, Any]:
    return {
        **worker_settings(settings, queue=settings.task_queue, with_cron=False),
        "functions": [as_worker_function(spec, settings) for spec in specs],
        "handle_signals": False,
        **overrides,
    }


async def eventually(probe: Callable[[], Any], timeout_s: float = DEADLINE_S) -> None:
    """Await `probe()` until it is true; fail after `timeout_s` (an upper bound, not a speed)."""
    start = time.monotonic()
    while not await probe():
        assert time.monotonic() - start < timeout_s, f"not within {timeout_s} s"
        await asyncio.sleep(0.05)


def worker_in_its_own_thread(worker_options: dict[str, Any], stop: threading.Event) -> Any:
    """A second worker with an event loop of its own, as a second process would have."""

    async def serve() -> None:
        worker = Worker(**worker_options)
        running = asyncio.create_task(worker.main())
        await asyncio.to_thread(stop.wait)
        running.cancel()
        with suppress(asyncio.CancelledError):
            await running
        await worker.close()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), name="second worker")
    thread.start()
    return thread


async def test_a_task_that_blocks_its_event_loop_past_the_lease_runs_once(
    settings: Settings, task_queue: TaskQueue, make_worker: Callable[..., Worker]
) -> None:
    """Two workers, each with its own loop, poll the queue; the one that claims the task is
    stuck for three leases, yet its lease holds (the keeper renews it from a thread of its own,
    every third of a lease: 2 s of slack for a loaded machine), so the other, free all along,
    never starts it."""
    settings = leased(settings, lease_s=3.0)
    spec = TaskSpec(blocks_its_loop, timeout_s=30)
    stop = threading.Event()
    second = worker_in_its_own_thread(options(settings, spec, burst=False), stop)
    first = make_worker(**options(settings, spec, burst=False))
    serving = asyncio.create_task(first.main())
    try:
        task_id = await task_queue.enqueue("blocks_its_loop", seconds=9)
        assert task_id
        await eventually(lambda: finished(task_queue, task_id))
        await asyncio.sleep(2)  # a second run, had it started, would show by now
        state = await task_queue.state(task_id)
        assert state is not None
        assert (state.status, state.tries, state.result) == ("complete", 1, "done")
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        stop.set()
        await asyncio.to_thread(second.join)
    assert runs == [task_id]


async def finished(task_queue: TaskQueue, task_id: str) -> bool:
    state = await task_queue.state(task_id)
    return state is not None and state.finished


async def test_a_worker_that_lost_its_lease_stops_the_task_and_changes_nothing(
    settings: Settings,
    task_queue: TaskQueue,
    make_worker: Callable[..., Worker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Another try holds the lease now (here written by the test): the keeper's next renewal
    finds it, the task is cancelled long before its 30 s, and neither its result nor a retry
    is written: the lease still holds the other try's token."""
    redis = task_queue.pool
    settings = leased(settings)
    task_id = await task_queue.enqueue("sleeps", seconds=30)
    assert task_id
    worker = make_worker(**options(settings, TaskSpec(sleeps, timeout_s=60), burst=True))
    running = asyncio.create_task(worker.main())
    await eventually(lambda: redis.exists(LEASE_KEY_PREFIX + task_id))
    await eventually(lambda: asyncio.sleep(0, result=bool(runs)))
    await redis.set(LEASE_KEY_PREFIX + task_id, "another-worker:7:1", px=20_000)
    started = time.monotonic()
    with caplog.at_level(logging.ERROR):
        await asyncio.wait_for(running, DEADLINE_S)
    assert time.monotonic() - started < 25  # stopped, not run to its end
    assert "lost its lease" in caplog.text
    assert await redis.get(LEASE_KEY_PREFIX + task_id) == b"another-worker:7:1"
    state = await task_queue.state(task_id)
    assert state is not None
    assert (state.status, state.result) == ("in_progress", None)
    assert await redis.zscore(settings.task_queue, task_id) is None  # not queued again
    assert runs == [task_id]


async def test_a_worker_that_claims_its_own_lapsed_task_again_runs_one_try_at_a_time(
    settings: Settings,
    task_queue: TaskQueue,
    make_worker: Callable[..., Worker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The keeper is starved (here: its renewals do nothing), so the lease of a running try
    runs out and the worker's own next pass claims the task again. The first try is stopped
    before the second starts, the second's end is the task's end, and the try is counted once."""

    async def starved(*args: Any) -> None:
        return None

    monkeypatch.setattr(LeaseKeeper, "_renew", starved)
    settings = leased(settings)
    task_id = await task_queue.enqueue("stalls_on_its_first_try")
    assert task_id
    spec = TaskSpec(stalls_on_its_first_try, timeout_s=120)
    worker = make_worker(**options(settings, spec, burst=False, poll_delay=0.1))
    serving = asyncio.create_task(worker.main())
    try:
        await eventually(lambda: finished(task_queue, task_id))
        await eventually(lambda: asyncio.sleep(0, result=not worker.tasks))
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
    assert runs == [task_id, "first try stopped", task_id]
    state = await task_queue.state(task_id)
    assert state is not None
    assert (state.status, state.tries, state.result) == ("complete", 2, "second try")
    outcomes = (await task_queue.metrics()).outcomes
    assert outcomes.get(("stalls_on_its_first_try", "complete")) == 1


async def test_free_slots_find_waiting_tasks_however_many_run(
    settings: Settings, task_queue: TaskQueue, make_worker: Callable[..., Worker]
) -> None:
    """Six workers of 20 slots: 120 tasks run at once and 10 wait, although arq's poll reads
    only the first 100 due ids (its queue_read_limit) and running tasks stayed on its queue."""
    redis = task_queue.pool
    spec = TaskSpec(waits_for_release, timeout_s=120)
    ids = [await task_queue.enqueue("waits_for_release") for _ in range(130)]
    workers = [make_worker(**options(settings, spec, burst=True, max_jobs=20)) for _ in range(6)]
    assert workers[0].queue_read_limit == 100
    serving = [asyncio.create_task(worker.main()) for worker in workers]
    leases = leases_key(settings.task_queue)

    async def all_slots_full() -> bool:
        return bool(await redis.zcard(leases) == 120)

    await eventually(all_slots_full)
    assert await redis.zcard(settings.task_queue) == 10
    assert (await task_queue.metrics()).in_progress == 120
    release.set()
    await asyncio.wait_for(asyncio.gather(*serving), DEADLINE_S)
    states = [await task_queue.state(str(task_id)) for task_id in ids]
    assert {(state.status, state.tries) for state in states if state} == {("complete", 1)}
    assert sorted(runs) == sorted(str(task_id) for task_id in ids)


async def test_the_lease_keeper_outlives_failing_renewals(
    settings: Settings, task_queue: TaskQueue, caplog: pytest.LogCaptureFixture
) -> None:
    """A renewal that Redis refuses (here: its lease set is not a sorted set) is logged once
    and tried again with backoff; once Redis takes it, the lease is renewed again."""
    redis = task_queue.pool
    lost: list[str] = []
    keeper = LeaseKeeper(
        lambda: create_redis(settings, queue=True),
        lease_ms=3_000,
        timeout_s=5.0,
        on_lost=lambda job_id, token: lost.append(job_id),
    )
    await redis.set(LEASE_KEY_PREFIX + "t1", "token-1", px=3_000)
    await redis.set("not-a-lease-set", "a string")
    keeper.hold("t1", "token-1", "not-a-lease-set", for_s=60)
    with caplog.at_level(logging.INFO):
        keeper.start()
        try:
            await eventually(lambda: asyncio.sleep(0, result="could not renew" in caplog.text))
            await redis.delete("not-a-lease-set")
            await eventually(lambda: asyncio.sleep(0, result="renewing" in caplog.text))
            await asyncio.sleep(4.0)  # past the 3 s lease: renewed, so still there
            assert await redis.get(LEASE_KEY_PREFIX + "t1") == b"token-1"
        finally:
            await asyncio.to_thread(keeper.stop)
    assert caplog.text.count("could not renew") == 1
    assert lost == []
