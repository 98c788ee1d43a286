"""The worker as users run it: `python -m <package>.worker` in its own process, and its
`--check` telling whether a worker is alive."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from {{ cookiecutter.__package_name }}.devtools.embedded_redis import free_port
from {{ cookiecutter.__package_name }}.infrastructure.queue import TaskQueue
from {{ cookiecutter.__package_name }}.infrastructure.task_metrics import WORKERS_KEY_PREFIX

from .faults import WORKER

# Starts processes or waits out faults for seconds: `just test -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow
DEADLINE_S = 60.0  # an upper bound for a loaded machine, not a timing claim
StartWorker = Callable[[str], subprocess.Popen[bytes]]


@pytest.fixture
def arq_env(redis_url: str) -> dict[str, str]:
    return {**os.environ, "REDIS_URL": redis_url, "WORKER_POLL_DELAY_S": "0.01"}


@pytest.fixture
def start_worker(arq_env: dict[str, str], tmp_path: Path) -> Iterator[StartWorker]:
    """Start worker processes of a queue; each is killed after the test."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(queue: str) -> subprocess.Popen[bytes]:
        with (tmp_path / f"{queue}.log").open("ab") as log:
            process = subprocess.Popen(
                [*WORKER, "--queue", queue], env=arq_env, cwd=tmp_path, stdout=log, stderr=log
            )
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.kill()
        process.wait()


async def worker_check(arq_env: dict[str, str], queue: str, check: str = "--check") -> int:
    """`--check`: 0 while a worker of the queue sends heartbeats (`--check-self`: of this host)."""
    process = await asyncio.create_subprocess_exec(
        *WORKER, "--queue", queue, check, env=arq_env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    return await process.wait()


async def eventually(
    probe: Callable[[], Any], wanted: object, timeout_s: float = DEADLINE_S
) -> float:
    """Await `probe()` until it returns `wanted`; return the seconds it took."""
    start = time.monotonic()
    while (value := await probe()) != wanted:
        assert time.monotonic() - start < timeout_s, f"still {value!r} after {timeout_s} s"
        await asyncio.sleep(0.1)
    return time.monotonic() - start


async def test_cli_worker_runs_tasks_and_its_health_check_follows_it(
    client: httpx.AsyncClient, start_worker: StartWorker, arq_env: dict[str, str]
) -> None:
    """It runs a task submitted over HTTP; `--check` passes while the worker lives and
    fails within the heartbeat window once it is killed."""
    assert await worker_check(arq_env, "default") != 0
    worker = start_worker("default")
    body = {"name": "example_task", "args": {"message": "via cli", "steps": 2, "delay_s": 0.01}}
    url = (await client.post("/api/v1/tasks", json=body)).headers["Location"]

    async def status() -> str:
        return str((await client.get(url)).json()["status"])

    await eventually(status, "complete")
    await eventually(lambda: worker_check(arq_env, "default"), 0)
    ready = (await client.get("/health/ready")).json()
    assert "alive" in ready["workers"].values()
    worker.kill()
    worker.wait()
    await eventually(lambda: worker_check(arq_env, "default"), 1)


async def test_stopping_one_worker_never_makes_its_queue_look_dead(
    client: httpx.AsyncClient,
    start_worker: StartWorker,
    arq_env: dict[str, str],
    task_queue: TaskQueue,
) -> None:
    """Liveness comes from each worker's own heartbeat: with two workers of a queue, one
    stopped (SIGTERM, as a rolling deploy does) leaves `--check` and /health/ready passing at
    once; once both are gone, `--check` fails."""
    queue = task_queue.settings.task_queue
    first, second = start_worker("default"), start_worker("default")

    async def beating() -> int:
        return int(await task_queue.pool.zcard(WORKERS_KEY_PREFIX + queue))

    await eventually(beating, 2)
    first.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(first.wait, DEADLINE_S) == 0
    assert await beating() == 1
    assert await worker_check(arq_env, "default") == 0
    assert (await client.get("/health/ready")).json()["workers"][queue] == "alive"
    second.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(second.wait, DEADLINE_S) == 0
    assert await worker_check(arq_env, "default") == 1


async def test_check_self_follows_the_worker_of_this_host_only(
    task_queue: TaskQueue, start_worker: StartWorker, arq_env: dict[str, str]
) -> None:
    """`--check-self`, the containers' liveness check: another host's live worker of the queue
    does not keep it passing once this host's worker is gone; Redis out of reach passes."""
    arq_env["WORKER_HEALTH_CHECK_INTERVAL_S"] = "1"  # heartbeats older than 3 s are stale
    heartbeats = WORKERS_KEY_PREFIX + task_queue.settings.task_queue

    async def checked_while_another_host_beats() -> int:
        await task_queue.pool.zadd(heartbeats, {"elsewhere:7:0a0b0c0d": time.time() * 1000})
        return await worker_check(arq_env, "default", "--check-self")

    assert await checked_while_another_host_beats() == 1
    worker = start_worker("default")
    await eventually(checked_while_another_host_beats, 0)
    worker.kill()
    worker.wait()
    await eventually(checked_while_another_host_beats, 1)
    unreachable = {**arq_env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    assert await worker_check(unreachable, "default", "--check-self") == 0


async def test_slow_queue_has_its_own_worker(
    task_queue: TaskQueue, start_worker: StartWorker, arq_env: dict[str, str]
) -> None:
    """A worker of the slow queue serves it; the default worker leaves it alone."""
    start_worker("default")
    slow_queue = task_queue.settings.slow_task_queue
    task_id = await task_queue.enqueue(
        "example_task", message="slow", steps=1, delay_s=0, _queue_name=slow_queue
    )
    assert task_id

    async def status() -> str:
        state = await task_queue.state(task_id)
        return state.status if state else "missing"

    await eventually(lambda: worker_check(arq_env, "default"), 0)
    await asyncio.sleep(0.5)
    assert await status() == "queued"
    start_worker("slow")
    await eventually(status, "complete")


async def submit(client: httpx.AsyncClient, steps: int, delay_s: float) -> Callable[[], Any]:
    """Submit example_task; returns a probe of its status."""
    body = {"name": "example_task", "args": {"message": "m", "steps": steps, "delay_s": delay_s}}
    url = (await client.post("/api/v1/tasks", json=body)).headers["Location"]

    async def status() -> str:
        return str((await client.get(url)).json()["status"])

    return status


async def test_a_task_of_a_killed_worker_runs_again_within_the_lease(
    client: httpx.AsyncClient, start_worker: StartWorker, task_queue: TaskQueue
) -> None:
    """SIGKILL mid-task loses nothing: once the lease (WORKER_LEASE_S, 10 s) of the dead
    worker lapses, another worker runs the task again; arq alone would wait 310 s."""
    first = start_worker("default")
    status = await submit(client, steps=40, delay_s=0.1)
    await eventually(status, "in_progress")
    [claim] = [key async for key in task_queue.pool.scan_iter(match="arq:in-progress:*")]
    assert 0 < await task_queue.pool.pttl(claim) <= 10_000  # a lease, not job_timeout + 10 s
    first.kill()
    first.wait()
    killed = time.monotonic()
    start_worker("default")
    await eventually(status, "complete", timeout_s=30)
    assert time.monotonic() - killed < 30
    task_id = claim.decode().removeprefix("arq:in-progress:")
    state = await task_queue.state(task_id)
    assert state is not None
    assert state.tries == 2


async def test_sigterm_lets_running_tasks_finish_and_starts_no_new_ones(
    client: httpx.AsyncClient, start_worker: StartWorker, tmp_path: Path
) -> None:
    worker = start_worker("default")
    running = await submit(client, steps=10, delay_s=0.2)
    await eventually(running, "in_progress")
    worker.send_signal(signal.SIGTERM)
    log = tmp_path / "default.log"

    async def stopped_picking() -> bool:
        return "allow_pick_jobs to `False`" in log.read_text()

    await eventually(stopped_picking, True)
    waiting = await submit(client, steps=1, delay_s=0)
    assert await asyncio.to_thread(worker.wait, DEADLINE_S) == 0
    assert await running() == "complete"  # finished within WORKER_JOB_COMPLETION_WAIT_S
    assert await waiting() == "queued"  # left for the next worker


async def test_three_workers_run_each_of_300_tasks_exactly_once(
    client: httpx.AsyncClient, start_worker: StartWorker, task_queue: TaskQueue
) -> None:
    """Three worker processes compete for 300 tasks; each task runs once, none is retried."""
    for _ in range(3):
        start_worker("default")

    await eventually(lambda: task_queue.worker_alive(task_queue.settings.task_queue), True)
    ids = [
        await task_queue.enqueue("example_task", message=str(n), steps=1, delay_s=0)
        for n in range(300)
    ]

    async def finished() -> int:
        states = await asyncio.gather(*(task_queue.state(str(task_id)) for task_id in ids))
        return sum(1 for state in states if state and state.status == "complete")

    await eventually(finished, 300, timeout_s=150)
    states = await asyncio.gather(*(task_queue.state(str(task_id)) for task_id in ids))
    assert {state.tries for state in states if state} == {1}
    assert [state.result["message"] for state in states if state] == [str(n) for n in range(300)]
    metrics = await task_queue.metrics()
    assert metrics.outcomes == {("example_task", "complete"): 300}


async def test_arq_s_own_cli_refuses_to_start_and_names_just_worker(
    task_queue: TaskQueue, start_worker: StartWorker, arq_env: dict[str, str]
) -> None:
    """`arq <package>.infrastructure.tasks.WorkerSettings`, the command arq's docs teach, would
    run a worker without leases, wake-ups or dead letters: it exits at once, saying so, takes
    no task and leaves the running workers' heartbeat alone; `arq --check` still works."""
    settings = "{{ cookiecutter.__package_name }}.infrastructure.tasks.WorkerSettings"
    arq_cli = [sys.executable, "-m", "arq", settings]

    def run_arq(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*arq_cli, *extra], env=arq_env, capture_output=True, text=True, timeout=DEADLINE_S
        )

    task_id = await task_queue.enqueue("example_task", message="m", steps=1, delay_s=0)
    assert task_id
    refused = await asyncio.to_thread(run_arq)
    assert refused.returncode == 2
    assert "just worker" in refused.stderr
    state = await task_queue.state(task_id)
    assert state is not None
    assert (state.status, state.tries) == ("queued", 0)
    assert (await asyncio.to_thread(run_arq, "--check")).returncode == 1

    start_worker("default")

    async def status() -> str:
        state = await task_queue.state(task_id)
        return state.status if state else "missing"

    await eventually(status, "complete")
    await eventually(lambda: worker_check(arq_env, "default"), 0)
    assert (await asyncio.to_thread(run_arq)).returncode == 2
    assert await task_queue.worker_alive(task_queue.settings.task_queue)
    assert (await asyncio.to_thread(run_arq, "--check")).returncode == 0
