"""`just bench`, worker scaling: the no-op throughput of 1, 2 and 4 worker processes on one
Redis, and the CPU time Redis spends per 1,000 tasks: where one Redis saturates.

The tasks are queued first, held back (deferred by an hour); once every worker process has sent
its first heartbeat, they are all made due at once and the workers woken, so that no worker
starts ahead of the others. The rate runs from the first start to the last finish, as the
stored results record.
"""

import asyncio
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ..infrastructure.queue import TaskQueue, wake_channel

WORKER_COUNTS = (1, 2, 4)
START_S = 60.0
RELEASE_BATCH = 1_000


@dataclass(frozen=True)
class Scaling:
    workers: int
    per_s: float
    redis_cpu_ms_per_1k: float  # Redis's user and system CPU time per 1,000 tasks
    failed: int


async def measure_scaling(
    env: dict[str, str], queue: TaskQueue, tasks: int, worker_counts: tuple[int, ...]
) -> list[Scaling]:
    results = []
    for workers in worker_counts:
        print(f"worker scaling: {tasks} tasks, {workers} workers...", file=sys.stderr)
        results.append(await scale(env, queue, tasks, workers))
        await queue.pool.flushdb()
    return results


async def scale(env: dict[str, str], queue: TaskQueue, tasks: int, workers: int) -> Scaling:
    held = datetime.now(UTC) + timedelta(hours=1)
    task_ids = [await queue.enqueue("noop", _defer_until=held) for _ in range(tasks)]
    command = [sys.executable, "-m", f"{__package__}.bench_workers", "generated", "--burst"]
    started = [await asyncio.create_subprocess_exec(*command, env=env) for _ in range(workers)]
    try:
        await wait_for_workers(queue, workers)
        cpu_before_s = await redis_cpu_s(queue)
        await release(queue, [task_id for task_id in task_ids if task_id])
        for process in started:
            await process.wait()
        cpu_s = await redis_cpu_s(queue) - cpu_before_s
    finally:
        for process in started:
            if process.returncode is None:
                process.kill()
                await process.wait()
    states = []
    for start in range(0, len(task_ids), RELEASE_BATCH):
        batch = task_ids[start : start + RELEASE_BATCH]
        states += await asyncio.gather(*(queue.state(str(task_id)) for task_id in batch))
    done = [state for state in states if state and state.started_at and state.finished_at]
    first = min(state.started_at for state in done if state.started_at)
    last = max(state.finished_at for state in done if state.finished_at)
    elapsed_s = max((last - first).total_seconds(), 1e-6)
    failed = tasks - sum(state.status == "complete" for state in done)
    return Scaling(workers, len(done) / elapsed_s, cpu_s * 1e6 / tasks, failed)


async def wait_for_workers(queue: TaskQueue, workers: int) -> None:
    """Until `workers` worker processes of the default queue have sent a heartbeat."""
    deadline = time.monotonic() + START_S
    while len(await queue.metrics_store.workers([queue.queues[0]], alive_s=START_S)) < workers:
        assert time.monotonic() < deadline, f"fewer than {workers} workers after {START_S} s"
        await asyncio.sleep(0.05)


async def release(queue: TaskQueue, task_ids: list[str]) -> None:
    """Make the held tasks due now, and wake the workers."""
    now_ms = int(time.time() * 1000)
    async with queue.pool.pipeline(transaction=False) as pipe:
        for start in range(0, len(task_ids), RELEASE_BATCH):
            batch = task_ids[start : start + RELEASE_BATCH]
            pipe.zadd(queue.queues[0], dict.fromkeys(batch, now_ms), xx=True)
        pipe.publish(wake_channel(queue.queues[0]), b"")
        await pipe.execute()


async def redis_cpu_s(queue: TaskQueue) -> float:
    cpu = await queue.pool.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
