"""`just bench`, the fleet line: several worker processes of FLEET_SLOTS slots each and ten
long tasks more than all their slots; how many of them run at once, for the service's workers
and for arq's.

arq leaves a running job on its queue and each poll reads only the first 100 due ids
(queue_read_limit), so past about 100 running jobs a fleet's free slots see only running ids;
the service's claim takes the next waiting task inside its script, so every slot fills. The
tasks are deferred by START_S, long enough for the processes to start, so that every worker
sees them due at the same moment.
"""

import asyncio
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from arq.connections import ArqRedis
from arq.constants import result_key_prefix
from arq.jobs import Deserializer, deserialize_result

from .bench_http import processes
from .bench_workers import GENERATED, Queues, worker_command

FLEET_SLOTS = 20
HOLD_S = 3.0
START_S = 10.0
BASELINE = "arq, poll_delay 0.01"


@dataclass(frozen=True)
class Fleet:
    processes: int
    tasks: int
    most_at_once: dict[str, int]  # by kind of worker: GENERATED, BASELINE


async def measure_fleet(env: dict[str, str], queue: Queues, worker_processes: int) -> Fleet:
    tasks = worker_processes * FLEET_SLOTS + 10
    fleet_env = {**env, "WORKER_MAX_JOBS": str(FLEET_SLOTS)}
    most: dict[str, int] = {}
    for kind in (GENERATED, BASELINE):
        print(f"fleet ({kind}): {tasks} tasks, {worker_processes} workers...", file=sys.stderr)
        task_ids = [
            await queue.enqueue(kind, "sleep", seconds=HOLD_S, _defer_by=START_S)
            for _ in range(tasks)
        ]
        commands = [worker_command(kind, burst=True) for _ in range(worker_processes)]
        with processes(commands, fleet_env) as workers:
            for worker in workers:
                await asyncio.to_thread(worker.wait)
        most[kind] = await most_at_once(queue.pool(kind), task_ids, queue.deserializer(kind))
        await queue.flush()
    return Fleet(worker_processes, tasks, most)


async def most_at_once(
    pool: ArqRedis, task_ids: list[str], deserializer: Deserializer | None
) -> int:
    """The most tasks that ran to their end at the same moment, from the starts and finishes
    their results record."""
    raws = await pool.mget([result_key_prefix + task_id for task_id in task_ids])
    results = [
        deserialize_result(cast(bytes, raw), deserializer=deserializer) for raw in raws if raw
    ]
    results = [result for result in results if result.success]
    # At equal times a finish comes before a start (-1 sorts before +1).
    moments: list[tuple[datetime, int]] = [(result.start_time, 1) for result in results]
    moments += [(result.finish_time, -1) for result in results]
    running = most = 0
    for _, change in sorted(moments):
        running += change
        most = max(most, running)
    return most
