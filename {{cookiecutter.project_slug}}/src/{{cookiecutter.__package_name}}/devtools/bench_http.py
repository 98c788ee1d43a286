"""The HTTP side of `just bench`: the load generator, the bare endpoint it measures the API
against, and the enqueue comparison.

The load generator is an asyncio HTTP/1.1 client: one keep-alive connection per concurrent
client, each sending its next request when the previous answer is in.
"""

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from typing import Self

from arq.connections import RedisSettings, create_pool
from fastapi import FastAPI, Request

from ..access import SUBMIT, create_key
from .embedded_redis import free_port

SERVICE = "{{ cookiecutter.__package_name }}"
CONCURRENCY = (1, 4, 50)
# The second line: both apps under uvicorn --workers 2, at the highest concurrency.
API_PROCESSES = 2
# Each concurrency runs in rounds, the two apps taking turns: a machine whose speed drifts
# during the run (other work, CPU clocks) weighs on both alike.
ROUNDS = 5
BODY = json.dumps({"name": "example_task", "args": {"message": "bench"}}).encode()
SERVER_START_S = 30.0


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
    """Run `commands`, each in a process group of its own, killed whole at the end: with
    --workers, uvicorn's processes are its children."""
    started = [
        subprocess.Popen(command, env=env, start_new_session=True)  # noqa: S603
        for command in commands
    ]
    try:
        yield started
    finally:
        for process in started:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def uvicorn_command(target: str, port: int, processes: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", target, "--factory", "--host", "127.0.0.1",
        "--port", str(port), "--workers", str(processes), "--no-access-log",
        "--log-level", "warning",
    ]  # fmt: skip


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


# Results by API processes and clients: the service's, then the bare endpoint's.
EnqueueResults = dict[tuple[int, int], tuple[Latencies, Latencies]]


async def bench_enqueue(env: dict[str, str], requests: int) -> EnqueueResults:
    """Ours (with access control on: an API key with tasks:submit) and the bare endpoint (which
    gets the same header): one process each at every concurrency, then API_PROCESSES each at
    the highest."""
    key, api_key = create_key("bench", [SUBMIT])
    # A rate limit no run reaches: its count is still kept on every submission.
    limits = {"TASK_SUBMIT_RATE_LIMIT": "1000000000", "AUTH_DISABLED": "false"}
    env = {**env, **limits, "API_KEYS": api_key.entry}
    one = await compare(env, key, requests, api_processes=1, concurrency=CONCURRENCY)
    more = await compare(
        env, key, requests, api_processes=API_PROCESSES, concurrency=CONCURRENCY[-1:]
    )
    return one | more


async def compare(
    env: dict[str, str],
    key: str,
    requests: int,
    *,
    api_processes: int,
    concurrency: tuple[int, ...],
) -> EnqueueResults:
    """Both apps on `api_processes` uvicorn processes each, at each of `concurrency`, taking turns
    after a warm-up."""
    ours, bare = free_port(), free_port()
    commands = [
        uvicorn_command(f"{SERVICE}.main:create_app", ours, api_processes),
        uvicorn_command(f"{SERVICE}.devtools.bench_http:bare_app", bare, api_processes),
    ]
    results: EnqueueResults = {}
    with processes(commands, env):
        await wait_for_port(ours)
        await wait_for_port(bare)
        for port, path in ((ours, "/api/v1/tasks"), (bare, "/enqueue")):
            await load(port, path, key, clients=4 * api_processes, requests=max(50, requests // 5))
        for clients in concurrency:
            ours_runs: list[Latencies] = []
            bare_runs: list[Latencies] = []
            for share in split(requests, ROUNDS):
                bare_runs.append(await load(bare, "/enqueue", key, clients=clients, requests=share))
                ours_runs.append(
                    await load(ours, "/api/v1/tasks", key, clients=clients, requests=share)
                )
            pooled = Latencies.pooled(ours_runs), Latencies.pooled(bare_runs)
            results[api_processes, clients] = pooled
    return results


def split(total: int, parts: int) -> list[int]:
    """`total` in at most `parts` shares, none empty, that add up to it."""
    shares = [total // parts + (index < total % parts) for index in range(parts)]
    return [share for share in shares if share]
