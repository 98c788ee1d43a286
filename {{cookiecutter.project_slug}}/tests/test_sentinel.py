"""Redis Sentinel: with REDIS_SENTINELS set, the API, the cache and the workers find the master
through real sentinel processes."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from {{ cookiecutter.__package_name }}.infrastructure.tasks import worker_settings
from {{ cookiecutter.__package_name }}.infrastructure.worker_loop import Worker
from {{ cookiecutter.__package_name }}.main import create_app
from {{ cookiecutter.__package_name }}.settings import Settings

from .faults import SENTINEL_MASTER, sentinel_watching
from .support import TEST_API_KEY, serve


@pytest.fixture
def sentinel(redis_url: str, tmp_path: Path) -> Iterator[str]:
    """A real sentinel watching the test server; yields its host:port."""
    master_port = Redis.from_url(redis_url).connection_pool.connection_kwargs["port"]
    with sentinel_watching(master_port, tmp_path) as address:
        yield address


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
        redis_sentinel_master=SENTINEL_MASTER,
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
