"""A failover on two real redis-servers: the replica promoted, the old master made its replica,
and the address the service uses moved to the new master (as a managed Redis moves its DNS
name). Connections opened before it still reach the old master, which answers READONLY: they
are dropped and opened again, and the API and the worker go on, losing nothing queued before."""

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from pydantic import RedisDsn
from redis import Redis

from {{ cookiecutter.__package_name }}.devtools.embedded_redis import free_port, start_server
from {{ cookiecutter.__package_name }}.main import create_app
from {{ cookiecutter.__package_name }}.settings import Settings

from .support import serve

# Starts processes or waits out faults for seconds: `just test -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow
DEADLINE_S = 60.0  # an upper bound for a loaded machine, not a timing claim


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


def start_worker(redis_url: str, folder: Path) -> subprocess.Popen[bytes]:
    """`python -m ....worker`, as deployed, its output in worker.log."""
    env = {**os.environ, "REDIS_URL": redis_url, "WORKER_POLL_DELAY_S": "0.05"}
    with (folder / "worker.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "{{ cookiecutter.__package_name }}.worker"],
            env=env, cwd=folder, stdout=log, stderr=log,
        )  # fmt: skip


async def eventually(probe: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(DEADLINE_S):
        while not await probe():  # noqa: ASYNC110 - polling a service from outside
            await asyncio.sleep(0.1)


async def test_a_failover_is_ridden_out_by_the_api_and_the_worker(
    settings: Settings, servers: tuple[int, int], tmp_path: Path
) -> None:
    master, replica = servers
    address = MovingAddress(master)
    url = f"redis://127.0.0.1:{address.port}/0"
    own = settings.model_copy(update={"redis_url": RedisDsn(url)})
    async with address.open(), serve(create_app(own)) as client:
        worker = start_worker(url, tmp_path)
        try:

            async def workers_alive() -> bool:
                reply = await client.get("/health/ready")
                return reply.status_code == 200 and "alive" in reply.json()["workers"].values()

            await eventually(workers_alive)
            body = {"name": "example_task", "args": {"message": "m", "steps": 1}, "defer_by": 2}
            urls = [(await client.post("/api/v1/tasks", json=body)).headers["Location"]]
            with Redis(port=master) as old, Redis(port=replica) as new:
                assert old.wait(1, 10_000) == 1  # the replica holds the queued task
                new.replicaof("NO", "ONE")
                old.replicaof("127.0.0.1", str(replica))
            address.move_to(replica)

            async def enqueued() -> bool:
                reply = await client.post("/api/v1/tasks", json=body)
                assert reply.status_code in (202, 503), reply.text
                if reply.status_code == 202:
                    urls.append(reply.headers["Location"])
                return reply.status_code == 202

            await eventually(enqueued)

            async def all_complete() -> bool:
                replies = [await client.get(url) for url in urls]
                return all(
                    r.status_code == 200 and r.json()["status"] == "complete" for r in replies
                )

            await eventually(all_complete)
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
        finally:
            worker.kill()
            worker.wait()
