"""`just bench`: how fast the service is, side by side with bare arq, in one run.

Starts an embedded server, the API (one uvicorn process), a bare FastAPI app whose one
endpoint calls arq's `enqueue_job`, and workers in their own processes, all on 127.0.0.1,
then prints one Markdown table; docs/benchmarks.md explains each line. The load generator is
an asyncio HTTP/1.1 client in this process: one keep-alive connection per concurrent client.

    just bench [--requests N] [--tasks N] [--pickups N] [--recoveries N] [--scaling 1,2,4]
               [--console-tasks N] [--console-dead-letters N]

(`python -m {{ cookiecutter.__package_name }}.devtools.bench` without just.)

This is the one module besides the task layer that imports arq: bare arq is its baseline.
"""

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Self

{% if cookiecutter.__database == "postgres" -%}
from alembic import command
{% endif -%}
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import default_queue_name, result_key_prefix
from arq.jobs import Deserializer, deserialize_result
from arq.worker import Worker as ArqWorker
from arq.worker import func
from fastapi import FastAPI, Request

from ..access import SUBMIT, create_key
{%- if cookiecutter.__database == "postgres" %}
from ..infrastructure.database import create_engine, session_factory
{%- endif %}
from ..infrastructure.queue import (
    HEALTH_CHECK_SUFFIX,
    TaskQueue,
{%- if cookiecutter.__database == "postgres" %}
    enqueue_task,
{%- endif %}
    open_task_queue,
    report_progress,
    wake_channel,
)
from ..infrastructure.serialization import deserialize
from ..infrastructure.task_state import PROGRESS_KEY_PREFIX, TaskState
{%- if cookiecutter.__database == "postgres" %}
from ..infrastructure.tasks import as_worker_function, on_startup, use_uvloop, worker_settings
from ..infrastructure.worker_loop import Worker
from ..migrate import alembic_config
{%- else %}
from ..infrastructure.tasks import as_worker_function, use_uvloop, worker_settings
from ..infrastructure.worker_loop import Worker
{%- endif %}
from ..settings import Settings
from ..tasks.registry import TaskSpec
from .bench_console import console_table, measure_console
from .bench_scaling import WORKER_COUNTS, Scaling, measure_scaling
{%- if cookiecutter.__database == "postgres" %}
from .embedded_postgres import EmbeddedPostgres
{%- endif %}
from .embedded_redis import EmbeddedRedis, free_port

SERVICE = "{{ cookiecutter.__package_name }}"
MODULE = f"{SERVICE}.devtools.bench"
CONCURRENCY = (1, 4, 50)
# Each concurrency runs in rounds, the two apps taking turns: a machine whose speed drifts
# during the run (other work, CPU clocks) weighs on both alike.
ROUNDS = 5
GENERATED = "generated"
# The baselines: arq's own worker with its defaults (poll every 0.5 s), and polling every 10 ms.
ARQ_WORKERS = {"arq defaults": 0.5, "arq, poll_delay 0.01": 0.01}
BODY = json.dumps({"name": "example_task", "args": {"message": "bench"}}).encode()
SERVER_START_S = 30.0
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


BENCH_TASKS = (noop, pickup, hold)


def bare_app() -> FastAPI:
    """The floor: one endpoint that reads the JSON body and calls `enqueue_job`, no more."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await create_pool(RedisSettings.from_dsn(os.environ["REDIS_URL"]))
        yield
        await app.state.pool.aclose()

    app = FastAPI(lifespan=lifespan)

    @app.post("/enqueue")
    async def enqueue(request: Request) -> dict[str, str | None]:
        body = await request.json()
        job = await request.app.state.pool.enqueue_job(body["name"], **body["args"])
        return {"task_id": job.job_id if job else None}

    return app


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
        burst=burst,
    ).run()


@dataclass
class Latencies:
    """Request or pickup latencies in seconds, and how long they took in all."""

    samples: list[float]
    elapsed_s: float
    errors: int = 0

    def percentile_ms(self, percent: int) -> float:
        if len(self.samples) < 2:
            return self.samples[0] * 1000
        return statistics.quantiles(self.samples, n=100, method="inclusive")[percent - 1] * 1000

    @property
    def per_s(self) -> float:
        return len(self.samples) / self.elapsed_s

    @classmethod
    def pooled(cls, runs: list[Self]) -> Self:
        return cls(
            [sample for run in runs for sample in run.samples],
            sum(run.elapsed_s for run in runs),
            sum(run.errors for run in runs),
        )


async def read_status(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *headers = head.split(b"\r\n")
    length = 0
    for header in headers:
        name, _, value = header.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(status_line.split()[1])


async def load(port: int, path: str, key: str, *, clients: int, requests: int) -> Latencies:
    """POST `BODY` with API key `key` `requests` times over `clients` keep-alive connections,
    each sending its next request when the previous answer is in."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
    )
    request = head.encode() + BODY
    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(clients)]
    samples: list[float] = []
    errors = 0
    remaining = requests

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal remaining, errors
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter()
            writer.write(request)
            status = await read_status(reader)
            samples.append(time.perf_counter() - start)
            errors += status >= 300

    started = time.perf_counter()
    await asyncio.gather(*(client(reader, writer) for reader, writer in connections))
    elapsed_s = time.perf_counter() - started
    for _, writer in connections:
        writer.close()
    return Latencies(samples, elapsed_s, errors)


@contextmanager
def processes(
    commands: list[list[str]], env: dict[str, str]
) -> Iterator[list[subprocess.Popen[bytes]]]:
    started = [subprocess.Popen(command, env=env) for command in commands]  # noqa: S603
    try:
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
            process.wait()


def uvicorn_command(target: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", target, "--factory", "--host", "127.0.0.1",
        "--port", str(port), "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip


def worker_command(kind: str, *, burst: bool = False) -> list[str]:
    return [sys.executable, "-m", MODULE, "--worker", kind, *(["--burst"] if burst else [])]


async def wait_for_port(port: int) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
        else:
            writer.close()
            return


async def bench_enqueue(
    env: dict[str, str], requests: int
) -> dict[int, tuple[Latencies, Latencies]]:
    """Ours (with access control on: an API key with tasks:submit) and the bare endpoint (which
    gets the same header) at each concurrency, alternating, after a warm-up."""
    key, api_key = create_key("bench", [SUBMIT])
    # A rate limit no run reaches: its count is still kept on every submission.
    limits = {"TASK_SUBMIT_RATE_LIMIT": "1000000000", "AUTH_DISABLED": "false"}
    env = {**env, **limits, "API_KEYS": api_key.entry}
    ours, bare = free_port(), free_port()
    commands = [
        uvicorn_command(f"{SERVICE}.main:create_app", ours),
        uvicorn_command(f"{MODULE}:bare_app", bare),
    ]
    results: dict[int, tuple[Latencies, Latencies]] = {}
    with processes(commands, env):
        await wait_for_port(ours)
        await wait_for_port(bare)
        for port, path in ((ours, "/api/v1/tasks"), (bare, "/enqueue")):
            await load(port, path, key, clients=4, requests=max(50, requests // 5))
        for clients in CONCURRENCY:
            ours_runs: list[Latencies] = []
            bare_runs: list[Latencies] = []
            for share in split(requests, ROUNDS):
                bare_runs.append(await load(bare, "/enqueue", key, clients=clients, requests=share))
                ours_runs.append(
                    await load(ours, "/api/v1/tasks", key, clients=clients, requests=share)
                )
            results[clients] = (Latencies.pooled(ours_runs), Latencies.pooled(bare_runs))
    return results


def split(total: int, parts: int) -> list[int]:
    """`total` in at most `parts` shares, none empty, that add up to it."""
    shares = [total // parts + (index < total % parts) for index in range(parts)]
    return [share for share in shares if share]


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
    results = [deserialize_result(raw, deserializer=deserializer) for raw in raws if raw]
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


@dataclass
class Results:
    enqueue: dict[int, tuple[Latencies, Latencies]]
    throughput: dict[str, Latencies]
    pickups: dict[str, Latencies]
    recoveries: list[float]
    scaling: list[Scaling]
{%- if cookiecutter.__database == "postgres" %}
    commit_pickups: Latencies | None = None
{%- endif %}


{% if cookiecutter.__database == "postgres" -%}
async def run(redis_url: str, database_url: str, args: argparse.Namespace) -> Results:
    env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": database_url}
    settings = Settings(redis_url=redis_url, database_url=database_url)
{%- else -%}
async def run(redis_url: str, args: argparse.Namespace) -> Results:
    env = {**os.environ, "REDIS_URL": redis_url}
    settings = Settings(redis_url=redis_url)
{%- endif %}
    queue = Queues(
        open_task_queue(settings), await create_pool(RedisSettings.from_dsn(redis_url)), settings
    )
    try:
        print(f"enqueue over HTTP: {args.requests} requests per run...", file=sys.stderr)
        enqueue = await bench_enqueue(env, args.requests)
        await queue.flush()
        throughput: dict[str, Latencies] = {}
        for kind in (GENERATED, *ARQ_WORKERS):
            print(f"worker throughput ({kind}): {args.tasks} tasks...", file=sys.stderr)
            throughput[kind] = await drain(kind, env, args.tasks, queue)
            await queue.flush()
        pickups: dict[str, Latencies] = {}
        for kind in (GENERATED, *ARQ_WORKERS):
            count = args.pickups if ARQ_WORKERS.get(kind, 0) < 0.1 else max(3, args.pickups // 5)
            print(f"pickup latency ({kind}): {count} tasks...", file=sys.stderr)
            pickups[kind] = await measure_pickups(kind, env, count, queue)
            await queue.flush()
{%- if cookiecutter.__database == "postgres" %}
        print(f"pickup latency, enqueue on commit: {args.pickups} tasks...", file=sys.stderr)
        commit_pickups = await measure_commit_pickups(env, args.pickups, queue)
        await queue.flush()
{%- endif %}
        recoveries = []
        for _ in range(args.recoveries):
            print("recovery after SIGKILL...", file=sys.stderr)
            recoveries.append(await measure_recovery(env, queue))
{%- if cookiecutter.__database == "postgres" %}
        scaling = await measure_scaling(env, queue.ours, args.tasks, args.scaling)
        return Results(enqueue, throughput, pickups, recoveries, scaling, commit_pickups)
{%- else %}
        scaling = await measure_scaling(env, queue.ours, args.tasks, args.scaling)
        return Results(enqueue, throughput, pickups, recoveries, scaling)
{%- endif %}
    finally:
        await queue.ours.close()
        await queue.bare.aclose()


def ratio(ours: float, baseline: float) -> str:
    return f"{ours / baseline:.2f}x"


def table(results: Results, settings: Settings) -> str:
    rows = [
        "| measure | generated service | bare arq | ratio |",
        "|---|---|---|---|",
    ]
    for clients, (ours, bare) in results.enqueue.items():
        label = f"`POST` enqueue, {clients} client{'s' if clients > 1 else ''}"
        rows.append(
            f"| {label}: requests/s | {ours.per_s:,.0f} | {bare.per_s:,.0f} "
            f"| {ratio(ours.per_s, bare.per_s)} |"
        )
        for percent in (50, 99):
            mine, theirs = ours.percentile_ms(percent), bare.percentile_ms(percent)
            rows.append(
                f"| {label}: p{percent} ms | {mine:.2f} | {theirs:.2f} | {ratio(mine, theirs)} |"
            )
        if ours.errors or bare.errors:
            rows.append(f"| {label}: errors | {ours.errors} | {bare.errors} | |")
    ours_tput = results.throughput[GENERATED]
    for kind in ARQ_WORKERS:
        theirs_tput = results.throughput[kind]
        rows.append(
            f"| worker, no-op tasks/s (vs {kind}) | {ours_tput.per_s:,.0f} "
            f"| {theirs_tput.per_s:,.0f} | {ratio(ours_tput.per_s, theirs_tput.per_s)} |"
        )
    ours_pick = results.pickups[GENERATED]
    for kind in ARQ_WORKERS:
        theirs_pick = results.pickups[kind]
        for percent in (50, 99):
            mine, theirs = ours_pick.percentile_ms(percent), theirs_pick.percentile_ms(percent)
            rows.append(
                f"| pickup p{percent} ms, idle worker (vs {kind}) | {mine:.2f} | {theirs:.2f} "
                f"| {ratio(mine, theirs)} |"
            )
{%- if cookiecutter.__database == "postgres" %}
    if results.commit_pickups is not None:
        for percent in (50, 99):
            mine = results.commit_pickups.percentile_ms(percent)
            direct = ours_pick.percentile_ms(percent)
            rows.append(
                f"| pickup p{percent} ms, enqueue on commit (vs the service's direct enqueue) "
                f"| {mine:.2f} | {direct:.2f} | {ratio(mine, direct)} |"
            )
{%- endif %}
    one = results.scaling[0]
    for scaled in results.scaling[1:]:
        label = f"{scaled.workers} worker processes (vs {one.workers})"
        rows.append(
            f"| worker scaling: no-op tasks/s, {label} | {scaled.per_s:,.0f} | {one.per_s:,.0f} "
            f"| {ratio(scaled.per_s, one.per_s)} |"
        )
    for scaled in results.scaling:
        rows.append(
            f"| worker scaling: Redis CPU ms per 1,000 tasks, {scaled.workers} worker "
            f"process{'es' if scaled.workers > 1 else ''} | {scaled.redis_cpu_ms_per_1k:.0f} | | |"
        )
    if results.recoveries:
        arq_s = settings.worker_job_timeout_s + 10
        measured = ", ".join(f"{seconds:.1f}" for seconds in results.recoveries)
        rows.append(
            f"| recovery after SIGKILL mid-task, s | {measured} | {arq_s:.0f} (computed) "
            f"| {ratio(max(results.recoveries), arq_s)} |"
        )
    failed = {kind: tput.errors for kind, tput in results.throughput.items() if tput.errors}
    failed |= {f"{s.workers} workers": s.failed for s in results.scaling if s.failed}
    if failed:
        rows.append(f"| tasks that failed | {failed} | | |")
    return "\n".join(rows)


def worker_counts(text: str) -> tuple[int, ...]:
    counts = tuple(int(count) for count in text.split(","))
    if len(counts) < 2 or min(counts) < 1:
        raise argparse.ArgumentTypeError("give two counts or more, each at least 1: 1,2,4")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=20_000, help="per concurrency and app")
    parser.add_argument("--tasks", type=int, default=5_000, help="no-op tasks per worker")
    parser.add_argument("--pickups", type=int, default=200, help="tasks timed one at a time")
    parser.add_argument("--recoveries", type=int, default=3, help="workers killed mid-task")
    parser.add_argument(
        "--console-tasks", type=int, default=50_000, help="finished tasks the console lists"
    )
    parser.add_argument("--console-dead-letters", type=int, default=10_000, help="and dead letters")
    parser.add_argument(
        "--scaling",
        type=worker_counts,
        default=WORKER_COUNTS,
        help="worker processes to compare, comma-separated (default: 1,2,4)",
    )
    parser.add_argument("--worker", choices=[GENERATED, *ARQ_WORKERS], help=argparse.SUPPRESS)
    parser.add_argument("--burst", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_bench_worker(args.worker, burst=args.burst)
        return 0
    for name in ("requests", "tasks", "pickups", "console_tasks", "console_dead_letters"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
{%- if cookiecutter.__database == "postgres" %}
    with EmbeddedRedis(port=free_port()) as server, EmbeddedPostgres() as database:
        command.upgrade(alembic_config(database.url), "head")
        results = asyncio.run(run(server.url, database.url, args))
        env = {**os.environ, "REDIS_URL": server.url, "DATABASE_URL": database.url}
        console = measure_console(env, args.console_tasks, args.console_dead_letters)
{%- else %}
    with EmbeddedRedis(port=free_port()) as server:
        results = asyncio.run(run(server.url, args))
        env = {**os.environ, "REDIS_URL": server.url}
        console = measure_console(env, args.console_tasks, args.console_dead_letters)
{%- endif %}
    settings = Settings(redis_url=server.url)
    print(
        f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}, "
        f"one uvicorn process per app, worker max_jobs {settings.worker_max_jobs}; load: asyncio "
        f"HTTP/1.1 client, keep-alive; {args.requests} requests per run, {args.tasks} tasks, "
        f"{args.pickups} pickups.\n"
    )
    print(table(results, settings))
    print()
    print(console_table(console))
    return 0


if __name__ == "__main__":
    sys.exit(main())
