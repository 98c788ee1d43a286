"""`just bench`, the operator console's part: each page's answer time with a full history.

It fills the queue database with finished tasks (as the workers record them), dead letters and
waiting tasks, starts the API (one uvicorn process), signs in with an operator key, and asks
each page in turn; it also reports the Redis memory the finished tasks take.
"""

import asyncio
import re
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx

from ..access import OPERATOR, create_key
from ..infrastructure.queue import TaskQueue, open_task_queue
from ..infrastructure.serialization import serialize
from ..infrastructure.task_history import HistoryRecord
from ..services.task_lists import PAGE_SIZE
from ..settings import Settings
from .embedded_redis import free_port

NAMES = ("resize_image", "send_receipt", "sync_account", "export_report", "noop")
BATCH = 1_000
ROUNDS = 20
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
SERVER_START_S = 30.0


@dataclass(frozen=True)
class ConsoleResults:
    finished: int
    dead_letters: int
    waiting: int
    bytes_per_10k: float
    pages: dict[str, list[float]]  # seconds per answer


async def fill(queue: TaskQueue, *, finished: int, dead: int, waiting: int) -> float:
    """Fill Redis; the memory taken per 10,000 finished tasks, in bytes."""
    settings = queue.settings
    before: int = (await queue.pool.info("memory"))["used_memory"]
    now = datetime.now(UTC)
    for start in range(0, finished, BATCH):
        batch = []
        for i in range(start, min(finished, start + BATCH)):
            ended = now - timedelta(seconds=(finished - i) / 20)
            failed = i % 10 == 0
            record = HistoryRecord(
                task_id=f"{i:016x}.{i:032x}",
                name=NAMES[i % len(NAMES)],
                queue=settings.slow_task_queue if i % 4 == 0 else settings.task_queue,
                status="failed" if failed else "complete",
                tries=3 if failed else 1,
                enqueued_at=ended - timedelta(seconds=2),
                started_at=ended - timedelta(seconds=1),
                finished_at=ended,
                args=serialize({"order": f"A-{i}", "cents": 1299}).decode(),
                result=None if failed else serialize({"ok": True, "order": f"A-{i}"}).decode(),
                error="ConnectionError: upstream timed out" if failed else None,
                traceback=None,
            )
            started = {
                "task_id": record.task_id,
                "status": "in_progress",
                "progress": None,
                "event": "started",
                "data": {"try": record.tries},
                "ts": ended.timestamp() - 1,
            }
            outcome = {"result": record.result, "error": record.error, "tries": record.tries}
            end = {**started, "status": record.status, "event": record.status, "data": outcome}
            batch.append((record, [serialize(started), serialize(end)]))
        await queue.history.remember(batch)
    taken: int = (await queue.pool.info("memory"))["used_memory"] - before
    for i in range(dead):
        failed_at = now - timedelta(seconds=(dead - i) / 10)
        await queue.dead_letter_store.add(
            {
                "task_id": f"dead.{i:032x}",
                "name": NAMES[i % len(NAMES)],
                "args": {"order": f"D-{i}"},
                "positional_args": [],
                "error": "ConnectionError: upstream timed out",
                "traceback": "Traceback (most recent call last):\n  ...\nConnectionError",
                "tries": 3,
                "queue": settings.task_queue,
                "enqueued_at": (failed_at - timedelta(seconds=30)).isoformat(),
                "failed_at": failed_at.isoformat(),
            }
        )
    for i in range(waiting):
        await queue.enqueue(NAMES[i % len(NAMES)], order=f"W-{i}", _job_id=f"waiting.{i:032x}")
    return taken * 10_000 / max(1, finished)


def pages(settings: Settings, finished: int) -> dict[str, str]:
    """The pages to time, by what the table calls them."""
    complete = finished - (finished + 9) // 10  # one task in ten failed
    deep = max(1, -(-complete // PAGE_SIZE))  # the last page of the complete ones
    queue = settings.task_queue
    return {
        "overview": "/console",
        "complete, page 1": "/console/tasks?status=complete",
        f"complete, page {deep} (the last)": f"/console/tasks?status=complete&page={deep}",
        "failed, one task name and queue": f"/console/tasks?status=failed&name=noop&queue={queue}",
        "queued, page 1": "/console/tasks?status=queued",
        "queued, one task name": "/console/tasks?status=queued&name=noop",
        "a task": f"/console/tasks/{1:016x}.{1:032x}",
        "dead letters, page 1": "/console/dead-letters",
        "dead letters, page 200": "/console/dead-letters?page=200",
        "dead letters of one task name": "/console/dead-letters?name=noop",
    }


async def time_pages(
    base: str, key: str, settings: Settings, finished: int
) -> dict[str, list[float]]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        form = await client.get("/console/sign-in")
        csrf = CSRF.search(form.text)
        assert csrf is not None, form.text
        signed_in = await client.post(
            "/console/sign-in", data={"key": key, "csrf": csrf.group(1), "next": "/console"}
        )
        assert signed_in.status_code == 303, signed_in.text
        timings: dict[str, list[float]] = {}
        for label, path in pages(settings, finished).items():
            samples = []
            for round_ in range(ROUNDS + 2):  # two to warm up
                started = time.perf_counter()
                reply = await client.get(path)
                elapsed = time.perf_counter() - started
                assert reply.status_code == 200, (path, reply.status_code)
                if round_ >= 2:
                    samples.append(elapsed)
            timings[label] = samples
        return timings


def measure_console(env: dict[str, str], finished: int, dead: int) -> ConsoleResults:
    """Fill the Redis of env's REDIS_URL (its queue database is emptied before and after),
    start the API on it, and time each page."""
    return asyncio.run(bench_console(env, finished, dead))


async def bench_console(env: dict[str, str], finished: int, dead: int) -> ConsoleResults:
    settings = Settings(redis_url=env["REDIS_URL"])
    queue = open_task_queue(settings)
    try:
        return await _bench_console(env, settings, queue, finished, dead)
    finally:
        await queue.close()


async def _bench_console(
    env: dict[str, str], settings: Settings, queue: TaskQueue, finished: int, dead: int
) -> ConsoleResults:
    waiting = dead
    print(f"console: {finished} finished tasks, {dead} dead letters...", file=sys.stderr)
    await queue.pool.flushdb()
    per_10k = await fill(queue, finished=finished, dead=dead, waiting=waiting)
    key, entry = create_key("bench-operator", [OPERATOR])
    port = free_port()
    api_env = {**env, "API_KEYS": entry.entry, "ENVIRONMENT": "development", "LOG_LEVEL": "WARNING"}
    command = [
        sys.executable, "-m", "uvicorn", f"{__package__.rpartition('.')[0]}.main:create_app",
        "--factory", "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
    ]  # fmt: skip
    api = await asyncio.create_subprocess_exec(
        *command, env=api_env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        await wait_until_up(f"http://127.0.0.1:{port}")
        timings = await time_pages(f"http://127.0.0.1:{port}", key, settings, finished)
    finally:
        api.terminate()
        await api.wait()
    await queue.pool.flushdb()
    return ConsoleResults(finished, dead, waiting, per_10k, timings)


async def wait_until_up(base: str) -> None:
    deadline = time.monotonic() + SERVER_START_S
    async with httpx.AsyncClient(base_url=base) as client:
        while True:
            try:
                if (await client.get("/health/live")).status_code == 200:
                    return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.1)


def console_table(results: ConsoleResults) -> str:
    rows = [
        f"Operator console: {results.finished:,} finished tasks, {results.dead_letters:,} dead "
        f"letters, {results.waiting:,} waiting; {ROUNDS} answers per page, one at a time. "
        f"Redis memory per 10,000 finished tasks: {results.bytes_per_10k / 1e6:.1f} MB.\n",
        "| console page | p50 ms | p95 ms | max ms |",
        "|---|---|---|---|",
    ]
    for label, samples in results.pages.items():
        ordered = sorted(samples)
        p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        rows.append(
            f"| {label} | {statistics.median(ordered) * 1000:.1f} | {p95 * 1000:.1f} "
            f"| {ordered[-1] * 1000:.1f} |"
        )
    return "\n".join(rows)
