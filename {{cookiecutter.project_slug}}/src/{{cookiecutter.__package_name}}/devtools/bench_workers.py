"""The worker side of `just bench`: the benchmark's tasks, the workers that run them (the
service's and bare arq's, each in its own process), and what is measured through them:
throughput, pickup latency and recovery after a SIGKILL. `just bench` starts each worker with
`python -m` on this module, naming its kind (see `--help`).
"""

import argparse
import asyncio
import os
import random
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, cast

from arq.connections import ArqRedis, RedisSettings
from arq.constants import default_queue_name, result_key_prefix
from arq.jobs import Deserializer, deserialize_result
from arq.worker import Worker as ArqWorker
from arq.worker import func

{% if cookiecutter.__database == "postgres" -%}
from ..infrastructure.database import create_engine, session_factory
from ..infrastructure.queue import (
    HEALTH_CHECK_SUFFIX,
    TaskQueue,
    enqueue_task,
    report_progress,
    wake_channel,
)
{%- else -%}
from ..infrastructure.queue import HEALTH_CHECK_SUFFIX, TaskQueue, report_progress, wake_channel
{%- endif %}
from ..infrastructure.serialization import deserialize
from ..infrastructure.task_state import PROGRESS_KEY_PREFIX, TaskState
{%- if cookiecutter.__database == "postgres" %}
from ..infrastructure.tasks import as_worker_function, on_startup, use_uvloop, worker_settings
{%- else %}
from ..infrastructure.tasks import as_worker_function, use_uvloop, worker_settings
{%- endif %}
from ..infrastructure.worker_loop import Worker
from ..settings import Settings
from ..tasks.registry import TaskSpec
from .bench_http import SERVER_START_S, Latencies, processes

GENERATED = "generated"
# The baselines: arq's own worker with its defaults (poll every 0.5 s), and polling every 10 ms.
ARQ_WORKERS = {"arq defaults": 0.5, "arq, poll_delay 0.01": 0.01}
POLL_LIMIT_S = 120.0


# The tasks the benchmark's workers run.
async def noop(ctx: dict[str, Any]) -> None:
    return None


async def pickup(ctx: dict[str, Any], sent_at: float) -> float:
    """Seconds from just before the enqueue to the start of the task."""
    return time.time() - sent_at


async def hold(ctx: dict[str, Any], seconds: float) -> int:
    """Tell which process runs it, then keep it busy."""
    await report_progress(ctx, 0, data={"pid": os.getpid()})
    await asyncio.sleep(seconds)
    return int(ctx["job_try"])


async def sleep(ctx: dict[str, Any], seconds: float) -> None:
    await asyncio.sleep(seconds)


BENCH_TASKS = (noop, pickup, hold, sleep)


def run_bench_worker(kind: str, *, burst: bool) -> None:
    """A worker of the benchmark's tasks: the service's (`generated`) or arq's own."""
    if kind == GENERATED:
        settings = Settings()
        options = worker_settings(settings, queue=settings.task_queue, with_cron=False)
        functions = [as_worker_function(TaskSpec(task), settings) for task in BENCH_TASKS]
{%- if cookiecutter.__database == "postgres" %}
        # It relays the outbox, as the default queue's workers do.
        options["on_startup"] = on_startup(settings, relay_outbox=True)
{%- endif %}
        use_uvloop()
        Worker(**{**options, "functions": functions}, burst=burst).run()
        return
    ArqWorker(
        functions=[func(task) for task in BENCH_TASKS],
        redis_settings=RedisSettings.from_dsn(os.environ["REDIS_URL"]),
        poll_delay=ARQ_WORKERS[kind],
        max_jobs=Settings().worker_max_jobs,  # the slots of the service's workers
        burst=burst,
    ).run()


def worker_command(kind: str, *, burst: bool = False) -> list[str]:
    return [sys.executable, "-m", __name__, kind, *(["--burst"] if burst else [])]


async def poll(probe: Callable[[], Awaitable[Any]], interval_s: float) -> Any:
    """Await `probe()` every `interval_s` until it returns something; give up after
    POLL_LIMIT_S, so that the benchmark always ends."""
    async with asyncio.timeout(POLL_LIMIT_S):
        while True:
            value = await probe()
            if value is not None:
                return value
            await asyncio.sleep(interval_s)


async def second_try(tasks: TaskQueue, task_id: str) -> TaskState | None:
    state = await tasks.state(task_id)
    return state if state is not None and state.tries >= 2 else None


class Queues:
    """Enqueueing for the service's workers (its TaskQueue, JSON) and arq's (pickle)."""

    def __init__(self, ours: TaskQueue, bare: ArqRedis, settings: Settings) -> None:
        self.ours = ours
        self.bare = bare
        self.settings = settings

    def pool(self, kind: str) -> ArqRedis:
        return self.ours.pool if kind == GENERATED else self.bare

    def deserializer(self, kind: str) -> Deserializer | None:
        return deserialize if kind == GENERATED else None

    async def enqueue(self, kind: str, name: str, **kwargs: Any) -> str:
        if kind == GENERATED:
            task_id = await self.ours.enqueue(name, **kwargs)
        else:
            job = await self.bare.enqueue_job(name, **kwargs)
            task_id = job.job_id if job else None
        assert task_id is not None
        return task_id

    async def wait_for_worker(self, kind: str) -> None:
        """Until a worker has polled once (its heartbeat) and, for ours, listens for wake-ups."""
        queue = self.settings.task_queue if kind == GENERATED else default_queue_name
        pool = self.pool(kind)
        deadline = time.monotonic() + SERVER_START_S
        while not await pool.exists(queue + HEALTH_CHECK_SUFFIX) or (
            kind == GENERATED and (await pool.pubsub_numsub(wake_channel(queue)))[0][1] == 0
        ):
            assert time.monotonic() < deadline, f"no {kind} worker after {SERVER_START_S} s"
            await asyncio.sleep(0.05)

    async def flush(self) -> None:
        await self.ours.pool.flushdb()
        await self.bare.flushdb()


async def task_times(
    pool: ArqRedis, task_ids: list[str], deserializer: Deserializer | None
) -> Latencies:
    """Tasks per second from the first start to the last finish, as the results record."""
    raws = await pool.mget([result_key_prefix + task_id for task_id in task_ids])
    results = [
        deserialize_result(cast(bytes, raw), deserializer=deserializer) for raw in raws if raw
    ]
    first = min(result.start_time for result in results)
    last = max(result.finish_time for result in results)
    failed = len(task_ids) - sum(result.success for result in results)
    return Latencies([0.0] * len(results), (last - first).total_seconds(), failed)


async def drain(kind: str, env: dict[str, str], tasks: int, queue: Queues) -> Latencies:
    """Enqueue `tasks` no-op tasks, then let one worker process run them all."""
    task_ids = [await queue.enqueue(kind, "noop") for _ in range(tasks)]
    with processes([worker_command(kind, burst=True)], env) as [worker]:
        await asyncio.to_thread(worker.wait)
    return await task_times(queue.pool(kind), task_ids, queue.deserializer(kind))


async def measure_pickups(kind: str, env: dict[str, str], count: int, queue: Queues) -> Latencies:
    """One task at a time to an idle worker, at random moments: enqueue to start."""
    pool = queue.pool(kind)
    samples: list[float] = []
    started = time.perf_counter()
    with processes([worker_command(kind)], env):
        await queue.wait_for_worker(kind)
        for _ in range(count):
            await asyncio.sleep(random.uniform(0.005, 0.025))  # noqa: S311 - not a secret
            task_id = await queue.enqueue(kind, "pickup", sent_at=time.time())
            raw = await poll(partial(pool.get, result_key_prefix + task_id), 0.001)
            result = deserialize_result(raw, deserializer=queue.deserializer(kind))
            samples.append(float(result.result))
    return Latencies(samples, time.perf_counter() - started)


{%- if cookiecutter.__database == "postgres" %}


async def measure_commit_pickups(env: dict[str, str], count: int, queue: Queues) -> Latencies:
    """As `measure_pickups` for the service's worker, each task enqueued on commit: from just
    before its transaction to the start of the task, through the outbox and its relay."""
    engine = create_engine(queue.settings)
    sessions = session_factory(engine)
    pool = queue.ours.pool
    samples: list[float] = []
    started = time.perf_counter()
    try:
        with processes([worker_command(GENERATED)], env):
            await queue.wait_for_worker(GENERATED)
            for number in range(count + 1):  # the first waits for the relay to start: not kept
                await asyncio.sleep(random.uniform(0.005, 0.025))  # noqa: S311 - not a secret
                sent_at = time.time()
                async with sessions() as session, session.begin():
                    task_id = await enqueue_task("pickup", sent_at=sent_at, session=session)
                raw = await poll(partial(pool.get, result_key_prefix + str(task_id)), 0.001)
                if number:
                    samples.append(float(deserialize_result(raw, deserializer=deserialize).result))
    finally:
        await engine.dispose()
    return Latencies(samples, time.perf_counter() - started)
{%- endif %}


async def measure_recovery(env: dict[str, str], queue: Queues) -> float:
    """Two workers; SIGKILL the one running a task; seconds until the other starts it."""
    tasks = queue.ours
    with processes([worker_command(GENERATED), worker_command(GENERATED)], env) as workers:
        await queue.wait_for_worker(GENERATED)
        task_id = await queue.enqueue(GENERATED, "hold", seconds=600)
        raw = await poll(lambda: tasks.pool.get(PROGRESS_KEY_PREFIX + task_id), 0.01)
        pid = deserialize(raw)["data"]["pid"]
        assert pid in {worker.pid for worker in workers}
        os.kill(pid, signal.SIGKILL)
        killed = time.perf_counter()
        await poll(lambda: second_try(tasks, task_id), 0.01)
        recovered_s = time.perf_counter() - killed
        await tasks.abort(task_id)
    await tasks.pool.flushdb()
    return recovered_s


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="One worker of the benchmark's tasks.")
    parser.add_argument("kind", choices=[GENERATED, *ARQ_WORKERS])
    parser.add_argument("--burst", action="store_true", help="stop once the queue is empty")
    args = parser.parse_args(argv)
    run_bench_worker(args.kind, burst=args.burst)


if __name__ == "__main__":
    main()
