"""Cron jobs: what they do, and that each scheduled run happens once across several workers."""

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from arq.worker import Worker
from redis.asyncio import Redis

from {{ cookiecutter.__package_name }}.infrastructure.queue import TaskQueue
from {{ cookiecutter.__package_name }}.infrastructure.tasks import (
    on_startup,
    shutdown,
    worker_settings,
)
from {{ cookiecutter.__package_name }}.infrastructure.worker_loop import RUN_BY_OUR_WORKER
from {{ cookiecutter.__package_name }}.settings import Settings
from {{ cookiecutter.__package_name }}.tasks.maintenance import (
    log_queue_depths,
    report_stale_tasks,
)

WORKERS = 3
RUN_FOR_S = 2.5


def test_the_schedule() -> None:
    """It schedules the three housekeeping jobs, each unique across workers."""
    settings = Settings(_env_file=None)
    scheduled = worker_settings(settings, queue="q", with_cron=True)["cron_jobs"]
    jobs = {job.name: job for job in scheduled}
    daily, half_hourly, weekdays = (
        jobs["cleanup_expired_sessions"],
        jobs["log_queue_depths"],
        jobs["report_stale_tasks"],
    )
    assert (daily.hour, daily.minute, daily.weekday) == ({3}, {0}, None)
    assert (half_hourly.hour, half_hourly.minute) == (None, {0, 30})
    assert (weekdays.weekday, weekdays.hour, weekdays.minute) == ({0, 1, 2, 3, 4}, {9}, {0})
    assert all(job.unique for job in jobs.values())
    assert worker_settings(settings, queue="q", with_cron=False)["cron_jobs"] == []


async def test_each_run_fires_once_with_three_workers(
    settings: Settings, redis: Redis, make_worker: Callable[..., Worker]
) -> None:
    """It runs every scheduled instant exactly once, though three workers all schedule it."""
    runs: Counter[str] = Counter()

    async def count(ctx: dict[str, Any]) -> None:
        runs[ctx["job_id"]] += 1

    options = worker_settings(settings, queue=settings.task_queue, with_cron=True)
    every_second = [
        dataclasses.replace(job, coroutine=count, hour=None, minute=None, weekday=None, second=None)
        for job in options["cron_jobs"]
        if job.name == "log_queue_depths"
    ]
    workers = [make_worker(cron_jobs=every_second, burst=False) for _ in range(WORKERS)]
    running = [asyncio.create_task(worker.main()) for worker in workers]
    await asyncio.sleep(RUN_FOR_S)
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)
    assert len(runs) >= 2, runs
    assert set(runs.values()) == {1}, runs


async def started_ctx(settings: Settings, task_queue: TaskQueue) -> dict[str, Any]:
    ctx: dict[str, Any] = {"redis": task_queue.pool, RUN_BY_OUR_WORKER: True}  # as Worker sets
    await on_startup(settings)(ctx)
    return ctx


async def test_queue_reports(settings: Settings, task_queue: TaskQueue) -> None:
    """It counts waiting tasks per queue, and those waiting for over an hour."""
    ctx = await started_ctx(settings, task_queue)
    try:
        await task_queue.enqueue("example_task", message="now")
        await task_queue.pool.zadd(settings.task_queue, {"old-task": (time.time() - 7200) * 1000})
        depths = await log_queue_depths(ctx)
        assert depths == {settings.task_queue: 2, settings.slow_task_queue: 0}
        stale = await report_stale_tasks(ctx)
        assert stale == {settings.task_queue: 1, settings.slow_task_queue: 0}
    finally:
        await shutdown(ctx)
