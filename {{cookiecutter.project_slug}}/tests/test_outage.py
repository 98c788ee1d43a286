"""A real outage: a redis-server with AOF persistence stopped under a running API and worker,
then restarted on its files. The API answers 503 meanwhile and recovers; the worker waits and
goes on; nothing queued before the outage is lost."""

import asyncio
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import RedisDsn

from {{ cookiecutter.__package_name }}.devtools.embedded_redis import start_server
from {{ cookiecutter.__package_name }}.main import create_app
from {{ cookiecutter.__package_name }}.settings import Settings

from .faults import FAULT_DEADLINE_S, eventually
from .faults import start_worker as worker_process
from .support import serve

# Starts processes or waits out faults for seconds: `just test -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow


class AofServer:
    """redis-server on a port and folder of its own, with the compose file's persistence (AOF);
    started again, it keeps its port."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port: int | None = None
        self.url = ""
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process, self.port = start_server(self.folder, "--appendonly", "yes", port=self.port)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        """SIGTERM, as `docker compose restart cache` sends: the server flushes its AOF."""
        if self.process is not None:
            process, self.process = self.process, None
            process.terminate()
            try:
                process.wait(FAULT_DEADLINE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise


@pytest.fixture
def server(tmp_path: Path) -> Iterator[AofServer]:
    """The server, its files on a memory file system where there is one (/dev/shm): its AOF
    fsyncs then wait for no disk, which a busy CI machine's can hold for tens of seconds."""
    memory = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=memory if memory.is_dir() else tmp_path) as folder:
        aof = AofServer(Path(folder))
        aof.start()
        try:
            yield aof
        finally:
            aof.stop()


@pytest.fixture
def start_worker(
    server: AofServer, tmp_path: Path
) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """`python -m ....worker` on that server, as deployed, with more settings if given;
    its output in worker.log."""
    started: list[subprocess.Popen[bytes]] = []

    def start(**settings: str) -> subprocess.Popen[bytes]:
        process = worker_process(tmp_path, REDIS_URL=server.url, **settings)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


@pytest.fixture
def worker(start_worker: Callable[..., subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    return start_worker()


async def test_the_service_rides_out_an_outage_and_loses_no_queued_task(
    settings: Settings, server: AofServer, worker: subprocess.Popen[bytes]
) -> None:
    own = settings.model_copy(update={"redis_url": RedisDsn(server.url)})
    async with serve(create_app(own)) as client:

        async def workers_alive() -> bool:
            reply = await client.get("/health/ready")
            return reply.status_code == 200 and "alive" in reply.json()["workers"].values()

        await eventually(workers_alive)
        body = {"name": "example_task", "args": {"message": "m", "steps": 1}, "defer_by": 3}
        urls = [(await client.post("/api/v1/tasks", json=body)).headers["Location"] for _ in "abc"]

        server.stop()
        for reply in (await client.get(urls[0]), await client.post("/api/v1/tasks", json=body)):
            assert reply.status_code == 503, reply.text
            assert reply.json()["detail"].startswith("The task queue is unreachable")
            assert reply.headers["Retry-After"] == "5"
        ready = await client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["redis"] != "ok"
        assert (await client.get("/health/live")).status_code == 200
        await asyncio.sleep(1)
        assert worker.poll() is None, "the worker exited during the outage"

        server.start()

        async def all_complete() -> bool:
            replies = [await client.get(url) for url in urls]
            return all(r.status_code == 200 and r.json()["status"] == "complete" for r in replies)

        await eventually(all_complete)
        assert worker.poll() is None
        assert await workers_alive()


async def test_a_server_that_stops_answering_is_an_error_in_the_worker_not_a_hang(
    settings: Settings,
    server: AofServer,
    start_worker: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    """SIGSTOP: the server's sockets stay open and no reply comes back, as with a host that
    vanished while a request was out. The worker's pass over its queue fails after
    REDIS_SOCKET_TIMEOUT_S, and says so, again and again; once the server answers again the
    worker runs tasks as before."""
    worker = start_worker(REDIS_SOCKET_TIMEOUT_S="1")
    log = tmp_path / "worker.log"
    own = settings.model_copy(update={"redis_url": RedisDsn(server.url)})
    assert server.process is not None
    async with serve(create_app(own)) as client:

        async def workers_alive() -> bool:
            reply = await client.get("/health/ready")
            return reply.status_code == 200 and "alive" in reply.json()["workers"].values()

        async def stall_logged() -> bool:
            return "a pass over the queue failed (TimeoutError" in log.read_text()

        await eventually(workers_alive)
        server.process.send_signal(signal.SIGSTOP)
        try:
            await eventually(stall_logged)
        finally:
            server.process.send_signal(signal.SIGCONT)
        assert worker.poll() is None
        body = {"name": "example_task", "args": {"message": "m", "steps": 1}}
        url = (await client.post("/api/v1/tasks", json=body)).headers["Location"]

        async def complete() -> bool:
            reply = await client.get(url)
            return reply.status_code == 200 and reply.json()["status"] == "complete"

        await eventually(complete)
