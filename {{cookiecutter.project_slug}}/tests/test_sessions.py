import time
from typing import Any

from redis.asyncio import Redis

from {{ cookiecutter.__package_name }}.infrastructure.queue import TaskQueue
from {{ cookiecutter.__package_name }}.infrastructure.sessions import SessionStore
from {{ cookiecutter.__package_name }}.infrastructure.tasks import on_startup, shutdown
from {{ cookiecutter.__package_name }}.infrastructure.worker_loop import RUN_BY_OUR_WORKER
from {{ cookiecutter.__package_name }}.settings import Settings
from {{ cookiecutter.__package_name }}.tasks.maintenance import cleanup_expired_sessions


async def test_sessions_start_read_and_end(redis: Redis) -> None:
    """It gives each session an unguessable token that maps to its user until it ends."""
    store = SessionStore(redis, prefix="test:session:", ttl_s=60)
    token = await store.create("ada")
    assert len(token) >= 40
    assert await store.user_id(token) == "ada"
    assert 0 < await redis.ttl("test:session:" + token) <= 60
    await store.end(token)
    assert await store.user_id(token) is None


async def test_cleanup_prunes_only_expired_sessions(redis: Redis) -> None:
    """It removes sessions whose expiry has passed from the index, and keeps the others."""
    store = SessionStore(redis, prefix="test:session:", ttl_s=60)
    old = await store.create("ada")
    fresh = await store.create("grace")
    assert await store.cleanup_expired(now=time.time()) == 0
    await redis.zadd("test:session:index", {old: time.time() - 1})
    assert await store.cleanup_expired() == 1
    assert await redis.zrange("test:session:index", 0, -1) == [fresh]
    assert await store.user_id(old) is None
    assert await store.user_id(fresh) == "grace"


async def test_the_cron_job_prunes_the_store_the_service_uses(
    settings: Settings, redis: Redis, task_queue: TaskQueue
) -> None:
    """`cleanup_expired_sessions`, run with the worker's own `ctx`, prunes expired sessions."""
    ctx: dict[str, Any] = {"redis": task_queue.pool, RUN_BY_OUR_WORKER: True}
    await on_startup(settings)(ctx)
    try:
        prefix = settings.cache_key_prefix + "session:"
        store = SessionStore(redis, prefix=prefix, ttl_s=settings.session_ttl_s)
        expired = await store.create("ada")
        await redis.zadd(prefix + "index", {expired: time.time() - 10})
        await store.create("grace")
        assert await cleanup_expired_sessions(ctx) == 1
    finally:
        await shutdown(ctx)
