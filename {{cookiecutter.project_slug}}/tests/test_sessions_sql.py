"""Sessions in the database, and the cron job that deletes the expired ones."""

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from {{ cookiecutter.__package_name }}.infrastructure.database import session_factory
from {{ cookiecutter.__package_name }}.infrastructure.models import User, UserSession
from {{ cookiecutter.__package_name }}.infrastructure.queue import TaskQueue
from {{ cookiecutter.__package_name }}.infrastructure.sessions import (
    SessionStore,
    token_digest,
)
from {{ cookiecutter.__package_name }}.infrastructure.tasks import on_startup, shutdown
from {{ cookiecutter.__package_name }}.infrastructure.worker_loop import RUN_BY_OUR_WORKER
from {{ cookiecutter.__package_name }}.settings import Settings
from {{ cookiecutter.__package_name }}.tasks.maintenance import cleanup_expired_sessions


async def add_user(database: AsyncEngine, email: str) -> User:
    async with session_factory(database)() as session, session.begin():
        user = User(email=email, name=email.split("@")[0])
        session.add(user)
    return user


async def expire(database: AsyncEngine, token: str) -> None:
    async with session_factory(database)() as session, session.begin():
        await session.execute(
            update(UserSession)
            .where(UserSession.token_sha256 == token_digest(token))
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )


async def count_sessions(database: AsyncEngine) -> int:
    async with session_factory(database)() as session:
        return int(await session.scalar(select(func.count()).select_from(UserSession)) or 0)


async def test_sessions_start_read_and_end(database: AsyncEngine) -> None:
    """Each session gets an unguessable token that maps to its user until it ends or expires;
    the database holds only the token's digest."""
    ada = await add_user(database, "ada@example.com")
    store = SessionStore(session_factory(database), ttl_s=60)
    token = await store.create(ada.id)
    assert len(token) >= 40
    assert await store.user_id(token) == ada.id
    async with session_factory(database)() as session:
        stored = await session.scalars(select(UserSession.token_sha256))
        assert stored.all() == [token_digest(token)]
    await store.end(token)
    assert await store.user_id(token) is None
    expiring = await store.create(ada.id)
    await expire(database, expiring)
    assert await store.user_id(expiring) is None


async def test_the_cron_job_deletes_only_expired_sessions(
    settings: Settings, database: AsyncEngine, task_queue: TaskQueue
) -> None:
    """`cleanup_expired_sessions`, run with the worker's own `ctx`, deletes the expired rows
    and keeps the others."""
    store = SessionStore(session_factory(database), ttl_s=60)
    ada = await add_user(database, "ada@example.com")
    grace = await add_user(database, "grace@example.com")
    old = await store.create(ada.id)
    fresh = await store.create(grace.id)
    await expire(database, old)
    ctx: dict[str, Any] = {"redis": task_queue.pool, RUN_BY_OUR_WORKER: True}
    await on_startup(settings)(ctx)
    try:
        assert await cleanup_expired_sessions(ctx) == 1
        assert await cleanup_expired_sessions(ctx) == 0
    finally:
        await shutdown(ctx)
    assert await count_sessions(database) == 1
    assert await store.user_id(fresh) == grace.id
