"""Helpers of the tests that start worker processes, redis-servers and sentinels, and wait
for a service to ride out a fault."""

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from {{ cookiecutter.__package_name }}.devtools.embedded_redis import (
    free_port,
    locate_binaries,
)

# An upper bound for a loaded machine on what a fault test waits for, not a timing claim.
FAULT_DEADLINE_S = 60.0
WORKER = [sys.executable, "-m", "{{ cookiecutter.__package_name }}.worker"]
SENTINEL_MASTER = "service-master"


def start_worker(folder: Path, **settings: str) -> subprocess.Popen[bytes]:
    """`python -m ....worker`, as deployed, with `settings` (REDIS_URL, ...) over the tests'
    environment; its output appended to worker.log in `folder`."""
    env = {**os.environ, "WORKER_POLL_DELAY_S": "0.05", **settings}
    with (folder / "worker.log").open("ab") as log:
        return subprocess.Popen(WORKER, env=env, cwd=folder, stdout=log, stderr=log)


async def eventually(probe: Callable[[], Awaitable[bool]]) -> None:
    """Until `probe()` is true, for at most FAULT_DEADLINE_S."""
    async with asyncio.timeout(FAULT_DEADLINE_S):
        while not await probe():  # noqa: ASYNC110 - polling a service from outside
            await asyncio.sleep(0.1)


@contextmanager
def sentinel_watching(master_port: int, folder: Path) -> Iterator[str]:
    """A real sentinel watching the redis-server on 127.0.0.1:`master_port` as
    SENTINEL_MASTER, quick to fail over; its host:port, until the block ends."""
    port = free_port()
    config = folder / f"sentinel-{port}.conf"  # the sentinel rewrites it as it learns
    config.write_text(
        f"port {port}\n"
        "bind 127.0.0.1\n"
        f"dir {folder}\n"
        f"sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {master_port} 1\n"
        f"sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n"
        f"sentinel failover-timeout {SENTINEL_MASTER} 10000\n"
    )
    server, _ = locate_binaries()
    process = subprocess.Popen(
        [server, str(config), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + FAULT_DEADLINE_S
        with Redis(port=port, socket_connect_timeout=0.5) as client:
            # The port is this sentinel's once it names this master.
            while sentinel_master_port(client) != master_port:
                assert process.poll() is None, "the sentinel exited"
                assert time.monotonic() < deadline, "the sentinel did not start"
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(FAULT_DEADLINE_S)


def sentinel_master_port(client: Redis) -> int | None:
    """The port of the master a sentinel names, or None while it names none."""
    try:
        address = client.sentinel_get_master_addr_by_name(SENTINEL_MASTER)
    except RedisError:
        return None
    return int(address[1]) if isinstance(address, tuple) else None
