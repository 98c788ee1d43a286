{%- if cookiecutter.cache_backend != "none" -%}
"""Shared fixtures: one real server for the run, emptied before each test; the app over ASGI."""
{%- else -%}
"""Shared fixtures: settings, the in-process cache, and the app over ASGI."""
{%- endif %}

{%- if cookiecutter.cache_backend != "none" %}

import asyncio
{%- if cookiecutter.__database == "postgres" %}
import contextlib
{%- endif %}
import os
{%- if cookiecutter.__database == "postgres" %}
import tempfile
{%- endif %}
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
{%- if cookiecutter.__database == "postgres" %}
from alembic import command
{%- endif %}
from redis.asyncio import Redis
{%- if cookiecutter.__database == "postgres" %}
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
{%- endif %}

{% if cookiecutter.__database == "postgres" -%}
from {{ cookiecutter.__package_name }}.devtools.embedded_postgres import EmbeddedPostgres
{% endif -%}
from {{ cookiecutter.__package_name }}.devtools.embedded_redis import EmbeddedRedis
from {{ cookiecutter.__package_name }}.infrastructure.cache import Cache
{%- if cookiecutter.__database == "postgres" %}
from {{ cookiecutter.__package_name }}.infrastructure.database import Base, create_engine
{%- endif %}
from {{ cookiecutter.__package_name }}.infrastructure.queue import TaskQueue, open_task_queue
from {{ cookiecutter.__package_name }}.infrastructure.tasks import worker_settings
from {{ cookiecutter.__package_name }}.infrastructure.worker_loop import Worker
from {{ cookiecutter.__package_name }}.main import create_app
{%- if cookiecutter.__database == "postgres" %}
from {{ cookiecutter.__package_name }}.migrate import alembic_config
{%- endif %}
from {{ cookiecutter.__package_name }}.settings import Settings

from .support import TEST_API_KEY, serve


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """TEST_REDIS_URL when set (a CI service container), else an embedded server for the run."""
    external = os.environ.get("TEST_REDIS_URL")
    if external:
        yield external
        return
    with EmbeddedRedis() as server:
        yield server.url


{%- if cookiecutter.__database == "postgres" %}


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """TEST_DATABASE_URL when set (a CI service container), else an embedded PostgreSQL for
    the run; migrated to the newest revision either way."""
    external = os.environ.get("TEST_DATABASE_URL")
    with contextlib.ExitStack() as stack:
        url = external or stack.enter_context(EmbeddedPostgres()).url
        command.upgrade(alembic_config(url), "head")
        yield url


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A folder for a server's data outside pytest's temporary root. Run as root, the
    embedded PostgreSQL runs its server as a user of its own and opens the folders above its
    data to that user; a pytest session starting beside this one sets pytest's root back to
    0700, which would cut the server off from its data."""
    with tempfile.TemporaryDirectory(prefix="embedded-postgres-test-") as folder:
        yield Path(folder)


@pytest.fixture
async def database(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """An engine on the test database, every table emptied first. A connection that an earlier
    test left holding a lock fails this one within 30 s, not the whole run's deadline."""
    engine = create_engine(settings)
    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    async with engine.begin() as connection:
        await connection.execute(text("SET LOCAL lock_timeout = '30s'"))
        await connection.execute(text(f"TRUNCATE {tables}"))
    yield engine
    await engine.dispose()
{%- endif %}


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """A client on the cache database, every database emptied first (cache and queue)."""
    client = Redis.from_url(redis_url, decode_responses=True)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
{%- if cookiecutter.__database == "postgres" %}
def settings(redis_url: str, database_url: str) -> Settings:
    return Settings(
        redis_url=redis_url,
        database_url=database_url,
{%- else %}
def settings(redis_url: str) -> Settings:
    return Settings(
        redis_url=redis_url,
{%- endif %}
        environment="test",
        worker_poll_delay_s=0.01,
        worker_retry_delay_s=0.05,
        api_keys=[TEST_API_KEY],
        _env_file=None,
    )


@pytest.fixture
async def task_queue(settings: Settings, redis: Redis) -> AsyncIterator[TaskQueue]:
    """A queue client on the emptied queue database."""
    queue = open_task_queue(settings)
    yield queue
    await queue.close()


@pytest.fixture
async def make_worker(settings: Settings) -> AsyncIterator[Callable[..., Worker]]:
    """Build in-process arq workers with the service's options; closed after the test."""
    workers: list[Worker] = []

    def make(*, queue: str | None = None, **overrides: Any) -> Worker:
        options = worker_settings(settings, queue=queue or settings.task_queue, with_cron=False)
        worker = Worker(**{**options, "burst": True, "handle_signals": False, **overrides})
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        # Let tasks in flight end first: arq's close() cancels them, and a cancelled task makes
        # it stop before closing its connections.
        await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
        await worker.close()


{%- if cookiecutter.__database != "postgres" %}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder for a test's processes to work in."""
    return tmp_path
{%- endif %}


@pytest.fixture
def cache(redis: Redis, settings: Settings) -> Cache:
    prefix, ttl_s = settings.cache_key_prefix, settings.cache_default_ttl_s
    return Cache(redis, prefix=prefix, default_ttl_s=ttl_s)


@pytest.fixture
{%- if cookiecutter.__database == "postgres" %}
async def client(
    settings: Settings, redis: Redis, database: AsyncEngine
) -> AsyncIterator[httpx.AsyncClient]:
{%- else %}
async def client(settings: Settings, redis: Redis) -> AsyncIterator[httpx.AsyncClient]:
{%- endif %}
{%- else %}

from collections.abc import AsyncIterator

import httpx
import pytest

from {{ cookiecutter.__package_name }}.infrastructure.cache import Cache
from {{ cookiecutter.__package_name }}.main import create_app
from {{ cookiecutter.__package_name }}.settings import Settings

from .support import serve


@pytest.fixture
def settings() -> Settings:
    return Settings(environment="test", _env_file=None)


@pytest.fixture
def cache(settings: Settings) -> Cache:
    return Cache(default_ttl_s=settings.cache_default_ttl_s, max_entries=3)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
{%- endif %}
    """The app with its lifespan running, called in-process over ASGI."""
    async with serve(create_app(settings)) as client:
        yield client
