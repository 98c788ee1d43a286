"""POST /api/v1/users: the user and its welcome task, stored together or not at all."""

import asyncio

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from {{ cookiecutter.__package_name }}.access import create_key
from {{ cookiecutter.__package_name }}.infrastructure.database import session_factory
from {{ cookiecutter.__package_name }}.infrastructure.models import OutboxTask, User
from {{ cookiecutter.__package_name }}.infrastructure.outbox_relay import OutboxRelay
from {{ cookiecutter.__package_name }}.infrastructure.queue import TaskQueue
from {{ cookiecutter.__package_name }}.main import create_app
from {{ cookiecutter.__package_name }}.settings import Settings

from .support import bearer, serve

{% if cookiecutter.__examples == "yes" -%}
WELCOME_TASK = "send_single_email"
{%- else -%}
WELCOME_TASK = "example_task"
{%- endif %}


async def count(database: AsyncEngine, table: type[User] | type[OutboxTask]) -> int:
    async with session_factory(database)() as session:
        return int(await session.scalar(select(func.count()).select_from(table)) or 0)


async def test_a_new_user_s_welcome_task_is_enqueued_on_commit(
    client: httpx.AsyncClient, database: AsyncEngine, task_queue: TaskQueue
) -> None:
    """201 with the user and its welcome task's id, which the outbox holds until the relay
    puts it on the queue; then its submitter follows it like any task of its own."""
    response = await client.post("/api/v1/users", json={"email": "Ada@Example.com", "name": "Ada"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["email"] == "ada@example.com"
    assert body["name"] == "Ada"
    assert body["created_at"]
    task_id = body["welcome_task_id"]
    async with session_factory(database)() as session:
        row = await session.get(OutboxTask, task_id)
    assert row is not None
    assert row.name == WELCOME_TASK
    assert (await client.get(f"/api/v1/tasks/{task_id}")).status_code == 404  # not yet queued
    assert await OutboxRelay(database, task_queue, poll_interval_s=1).relay_once() == 1
    task = await client.get(f"/api/v1/tasks/{task_id}")
    assert task.status_code == 200, task.text
    assert task.json()["name"] == WELCOME_TASK
    assert task.json()["status"] == "queued"


async def test_a_taken_address_or_bad_input_changes_nothing(
    client: httpx.AsyncClient, database: AsyncEngine
) -> None:
    """409 for an address already taken (in any case), 422 for bad input: no user and no task
    is added by either."""
    user = {"email": "grace@example.com", "name": "Grace"}
    assert (await client.post("/api/v1/users", json=user)).status_code == 201
    again = await client.post("/api/v1/users", json={**user, "email": "GRACE@example.com"})
    assert again.status_code == 409
    assert "already exists" in again.json()["detail"]
    for bad in (
        {"email": "not-an-address", "name": "X"},
        {"email": "x@example.com", "name": ""},
        {"email": "x@example.com", "name": "X", "admin": True},
        {"email": "x\u0000y@example.com", "name": "X"},
        {"email": "x@example.com", "name": "nul \u0000 inside"},
    ):
        assert (await client.post("/api/v1/users", json=bad)).status_code == 422, bad
    # JSON may escape a lone surrogate, which no database text can hold.
    surrogate = b'{"email": "x@example.com", "name": "lone \\ud800 surrogate"}'
    headers = {"Content-Type": "application/json"}
    response = await client.post("/api/v1/users", content=surrogate, headers=headers)
    assert response.status_code == 422
    assert await count(database, User) == 1
    assert await count(database, OutboxTask) == 1


async def test_creating_users_needs_the_submit_scope(
    settings: Settings, database: AsyncEngine
) -> None:
    """It enqueues a task, so it takes what submitting one takes: 401 without a key, 403 with
    a key that may only read."""
    reader_key, reader = create_key("reader", ["tasks:read"])
    app = create_app(settings.model_copy(update={"api_keys": [*settings.api_keys, reader]}))
    user = {"email": "lin@example.com", "name": "Lin"}
    async with serve(app, key=None) as client:
        assert (await client.post("/api/v1/users", json=user)).status_code == 401
        denied = await client.post("/api/v1/users", json=user, headers=bearer(reader_key))
        assert denied.status_code == 403
    assert await count(database, User) == 0


async def test_a_thousand_concurrent_sign_ups_give_a_thousand_tasks(
    client: httpx.AsyncClient, database: AsyncEngine, task_queue: TaskQueue
) -> None:
    """1,000 requests at once, 100 in flight: 1,000 users, and after the relay exactly 1,000
    distinct welcome tasks on the queue, none left in the outbox."""
    total, in_flight = 1_000, asyncio.Semaphore(100)

    async def sign_up(n: int) -> str:
        async with in_flight:
            user = {"email": f"user{n}@example.com", "name": f"User {n}"}
            response = await client.post("/api/v1/users", json=user)
        assert response.status_code == 201, response.text
        return str(response.json()["welcome_task_id"])

    task_ids = await asyncio.gather(*(sign_up(n) for n in range(total)))
    assert len(set(task_ids)) == total
    assert await count(database, User) == total
    assert await OutboxRelay(database, task_queue, poll_interval_s=1).relay_once() == total
    assert await count(database, OutboxTask) == 0
    queue = task_queue.settings.{% if cookiecutter.__examples == "yes" %}slow_task_queue{% else %}task_queue{% endif %}
    queued = await task_queue.pool.zrange(queue, 0, -1)
    assert sorted(member.decode() for member in queued) == sorted(task_ids)
