"""Redis Sentinel: with REDIS_SENTINELS set, the API, the cache and the workers find the master
through real sentinel processes."""

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from redis.exceptions import RedisError

from {{ cookiecutter.__package_name }}.devtools.embedded_redis import (
    free_port,
    locate_binaries,
)
from {{ cookiecutter.__package_name }}.infrastructure.tasks import worker_settings
from {{ cookiecutter.__package_name }}.infrastructure.worker_loop import Worker
from {{ cookiecutter.__package_name }}.main import create_app
from {{ cookiecutter.__package_name }}.settings import Settings

from .support import TEST_API_KEY, serve

MASTER = "service-master"
START_TIMEOUT_S = 60.0


@pytest.fixture
def sentinel(redis_url: str, tmp_path: Path) -> Iterator[str]:
    """A real sentinel watching the test server as MASTER; yields its host:port."""
    master_port = Redis.from_url(redis_url).connection_pool.connection_kwargs["port"]
    port = free_port()
    config = tmp_path / "sentinel.conf"
    config.write_text(
        f"port {port}\n"
        "bind 127.0.0.1\n"
        f"dir {tmp_path}\n"
        f"sentinel monitor {MASTER} 127.0.0.1 {master_port} 1\n"
    )
    server, _ = locate_binaries()
    command = [server, str(config), "--sentinel"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        with Redis(port=port, socket_connect_timeout=0.5) as client:
            while not sentinel_knows_master(client):
                assert process.poll() is None, "the sentinel exited"
                assert time.monotonic() < deadline, "the sentinel did not start"
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def sentinel_knows_master(client: Redis) -> bool:
    try:
        return bool(client.sentinel_master(MASTER))  # type: ignore[no-untyped-call]
    except RedisError:
        return False


def test_sentinels_parse_from_a_comma_separated_list() -> None:
    """It reads REDIS_SENTINELS as host:port pairs and refuses anything else."""
    settings = Settings(redis_sentinels="10.0.0.1:26379, sentinel-2:26380", _env_file=None)
    assert settings.redis_sentinel_hosts == [("10.0.0.1", 26379), ("sentinel-2", 26380)]
    with pytest.raises(ValueError, match="host:port"):
        Settings(redis_sentinels="no-port", _env_file=None)


async def test_tasks_run_through_the_sentinels_master(
    redis_url: str, sentinel: str, redis: object
) -> None:
    """It enqueues through the master the sentinel names, and a worker finds it the same way."""
    settings = Settings(
        redis_url="redis://ignored.invalid:6379/0",
        redis_sentinels=sentinel,
        redis_sentinel_master=MASTER,
        worker_poll_delay_s=0.01,
        environment="test",
        api_keys=[TEST_API_KEY],
        _env_file=None,
    )
    app = create_app(settings)
    async with serve(app) as client:
        assert (await client.get("/health/ready")).json()["checks"]["redis"] == "ok"
        body = {"name": "example_task", "args": {"message": "ha", "steps": 1, "delay_s": 0}}
        url = (await client.post("/api/v1/tasks", json=body)).headers["Location"]
        options = worker_settings(settings, queue=settings.task_queue, with_cron=False)
        worker = Worker(**{**options, "burst": True, "handle_signals": False})
        try:
            await worker.main()
        finally:
            await worker.close()
        state = (await client.get(url)).json()
    assert state["status"] == "complete"
    assert state["result"]["message"] == "ha"
