"""A failover on two real redis-servers: the replica promoted, the old master made its replica,
and the address the service uses moved to the new master (as a managed Redis moves its DNS
name). Connections opened before it still reach the old master, which answers READONLY: they
are dropped and opened again, and the API and the worker go on, losing nothing queued before.
The same when a sentinel fails the master over and the service finds the master through it."""

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import RedisDsn
from redis import Redis
from redis.exceptions import ResponseError

from {{ cookiecutter.__package_name }}.devtools.embedded_redis import free_port, start_server
from {{ cookiecutter.__package_name }}.main import create_app
from {{ cookiecutter.__package_name }}.settings import Settings

from .faults import (
    SENTINEL_MASTER,
    eventually,
    sentinel_master_port,
    sentinel_watching,
    start_worker,
)
from .support import serve

# Starts processes or waits out faults for seconds: `just test -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow


class MovingAddress:
    """127.0.0.1:`port` forwarded to a server that can change: connections opened after
    `move_to` reach the new one, those opened before stay on the old one."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None

    def move_to(self, target_port: int) -> None:
        self.target_port = target_port

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[None]:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", self.port)
        try:
            yield
        finally:
            self._server.close()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65_536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """A master and its replica, stopped after the test."""
    process, master = start_server(tmp_path, "--appendonly", "no")
    started = [process]
    try:
        process, replica = start_server(
            tmp_path, "--appendonly", "no", "--replicaof", "127.0.0.1", str(master)
        )
        started.append(process)
        yield master, replica
    finally:
        for process in started:
            process.kill()
            process.wait()


async def workers_alive(client: httpx.AsyncClient) -> bool:
    reply = await client.get("/health/ready")
    return reply.status_code == 200 and "alive" in reply.json()["workers"].values()


async def enqueued(client: httpx.AsyncClient, urls: list[str]) -> bool:
    """Whether the API took a task (added to `urls`); while Redis is out of reach, 503."""
    body = {"name": "example_task", "args": {"message": "m", "steps": 1}, "defer_by": 2}
    reply = await client.post("/api/v1/tasks", json=body)
    assert reply.status_code in (202, 503), reply.text
    if reply.status_code == 202:
        urls.append(reply.headers["Location"])
    return reply.status_code == 202


async def all_complete(client: httpx.AsyncClient, urls: list[str]) -> bool:
    replies = [await client.get(url) for url in urls]
    return all(r.status_code == 200 and r.json()["status"] == "complete" for r in replies)


def tail(log: Path) -> str:
    return log.read_text()[-3000:]


async def ride_out(
    client: httpx.AsyncClient,
    worker: subprocess.Popen[bytes],
    log: Path,
    fail_over: Callable[[], Awaitable[None]],
) -> None:
    """Once the worker is alive, queue a task, `fail_over()`, then queue another: both
    complete, and the worker is still up. Stops the worker."""
    try:
        await eventually(lambda: workers_alive(client))
        urls: list[str] = []
        assert await enqueued(client, urls)
        await fail_over()
        await eventually(lambda: enqueued(client, urls))
        await eventually(lambda: all_complete(client, urls))
        assert worker.poll() is None, tail(log)
    finally:
        worker.kill()
        worker.wait()


async def test_a_failover_is_ridden_out_by_the_api_and_the_worker(
    settings: Settings, servers: tuple[int, int], tmp_path: Path
) -> None:
    master, replica = servers
    address = MovingAddress(master)
    url = f"redis://127.0.0.1:{address.port}/0"
    own = settings.model_copy(update={"redis_url": RedisDsn(url)})

    async def fail_over() -> None:
        with Redis(port=master) as old, Redis(port=replica) as new:
            assert old.wait(1, 10_000) == 1  # the replica holds the queued task
            new.replicaof("NO", "ONE")
            old.replicaof("127.0.0.1", str(replica))
        address.move_to(replica)

    async with address.open(), serve(create_app(own)) as client:
        worker = start_worker(tmp_path, REDIS_URL=url)
        await ride_out(client, worker, tmp_path / "worker.log", fail_over)


async def test_a_sentinel_failover_is_ridden_out_by_the_api_and_the_worker(
    settings: Settings, servers: tuple[int, int], tmp_path: Path
) -> None:
    """A sentinel promotes the replica and makes the old master its replica, as it does when
    a master fails: the API and a worker process, both finding the master through it, go on,
    and tasks queued before and after the failover complete."""
    old, new = servers
    with sentinel_watching(old, tmp_path) as sentinel:
        found_by_sentinel = {
            "REDIS_URL": "redis://sentinel-names-the-master.invalid:6379/0",
            "REDIS_SENTINELS": sentinel,
            "REDIS_SENTINEL_MASTER": SENTINEL_MASTER,
        }
        own = settings.model_copy(
            update={
                "redis_url": RedisDsn(found_by_sentinel["REDIS_URL"]),
                "redis_sentinels": [sentinel],
                "redis_sentinel_master": SENTINEL_MASTER,
            }
        )
        host, port = sentinel.split(":")

        async def fail_over() -> None:
            with (
                Redis(port=old) as master,
                Redis(port=new) as replica,
                Redis(host=host, port=int(port)) as asked,
            ):
                assert master.wait(1, 10_000) == 1  # the replica holds the queued task

                async def failover_begun() -> bool:
                    # Refused until the sentinel has seen the replica (NOGOODSLAVE).
                    try:
                        return bool(asked.sentinel_failover(SENTINEL_MASTER))
                    except ResponseError:
                        return False

                async def failed_over() -> bool:
                    demoted = master.info("replication")["role"] == "slave"
                    return demoted and sentinel_master_port(asked) == new

                await eventually(failover_begun)
                await eventually(failed_over)
                assert replica.info("replication")["role"] == "master"

        async with serve(create_app(own)) as client:
            worker = start_worker(tmp_path, **found_by_sentinel)
            await ride_out(client, worker, tmp_path / "worker.log", fail_over)
